import { test, describe } from 'node:test';
import assert from 'node:assert/strict';

import { RepstreamClient } from '../repstream.js';
import { makeFakeWS, makeClock, flush, silentLogger, state, delta } from '../testdata/fakes.mjs';

function setup() {
  const { FakeWS, sockets } = makeFakeWS();
  const clock = makeClock();
  const statuses = [];
  const errors = [];
  const client = new RepstreamClient({
    url: 'ws://example.test/v1/stream', token: 'T0', WebSocket: FakeWS, random: () => 0.5,
    setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout, now: clock.now, logger: silentLogger,
    onStatus: (s) => statuses.push(s), onError: (e) => errors.push(e),
  });
  return { client, sockets, clock, statuses, errors, last: () => sockets[sockets.length - 1] };
}

const WELCOME = { type: 'welcome', epoch: 'E1', lsn: '0/100', heartbeat_ms: 15000, server: 'repstream/test' };

async function welcome(env) {
  await flush();
  const ws = env.last();
  ws.open();
  ws.recv(WELCOME);
  return ws;
}

const entry = (rank, subject, lsn, bayes) => ({ rank, ...state(subject, lsn, bayes) });

describe('leaderboard', () => {
  test('subscribes with top and order, keeps the entries and hands over the moves', async () => {
    const env = setup();
    const boards = [];
    const sub = env.client.subscribe({ prefix: 'seller:', top: 2, order: 'mean', onBoard: (b, s) => boards.push({ b, s }) });
    env.client.connect();
    const ws = await welcome(env);
    const req = ws.sentOf('subscribe')[0];
    assert.deepEqual(req, { type: 'subscribe', id: req.id, prefix: 'seller:', top: 2, order: 'mean' });
    ws.recv({ type: 'subscribed', id: req.id, lsn: '0/200', mode: 'board', reset: false });
    assert.equal(env.client.status, 'catching_up');
    ws.recv({ type: 'board', id: req.id, lsn: '0/200', order: 'mean',
      entries: [entry(1, 'seller:1', '0/150', 4), entry(2, 'seller:2', '0/160', 3)],
      moves: [{ subject: 'seller:1', from: null, to: 1 }, { subject: 'seller:2', from: null, to: 2 }] });
    assert.equal(env.client.status, 'live');
    assert.equal(boards.length, 1);
    assert.equal(boards[0].s, sub);
    assert.deepEqual(sub.entries.map((e) => [e.rank, e.subject]), [[1, 'seller:1'], [2, 'seller:2']]);
    assert.equal(sub.cursor, '0/200');
    // Deltas of the prefix (another subscription's) never touch the board.
    ws.recv(delta('seller:9', '0/210', 5));
    assert.equal(sub.states.size, 0);
    ws.recv({ type: 'board', id: req.id, lsn: '0/220', order: 'mean',
      entries: [entry(1, 'seller:3', '0/220', 5), entry(2, 'seller:1', '0/150', 4)],
      moves: [{ subject: 'seller:3', from: null, to: 1 }, { subject: 'seller:1', from: 1, to: 2 }, { subject: 'seller:2', from: 2, to: null }] });
    assert.equal(boards.length, 2);
    assert.deepEqual(boards[1].b.moves[2], { subject: 'seller:2', from: 2, to: null });
    assert.deepEqual(sub.entries.map((e) => e.subject), ['seller:3', 'seller:1']);
    assert.equal(sub.cursor, '0/220');
    env.client.close();
  });

  test('resubscribes with its cursor after a reconnect', async () => {
    const env = setup();
    const sub = env.client.subscribe({ prefix: 'seller:', top: 3 });
    env.client.connect();
    let ws = await welcome(env);
    const id = ws.sentOf('subscribe')[0].id;
    ws.recv({ type: 'subscribed', id, lsn: '0/300', mode: 'board' });
    ws.recv({ type: 'board', id, lsn: '0/300', order: 'bayes', entries: [entry(1, 'seller:1', '0/150', 4)], moves: [] });
    ws.serverClose(1006, '');
    env.clock.advance(60000);
    await flush();
    ws = await welcome(env);
    const again = ws.sentOf('subscribe')[0];
    assert.equal(again.since, '0/300');
    assert.equal(again.epoch, 'E1');
    assert.equal(again.top, 3);
    assert.equal(again.order, 'bayes');
    assert.equal(sub.entries.length, 1); // kept until the next board
    env.client.close();
  });

  test('a forbidden board fails with onError', async () => {
    const env = setup();
    const errs = [];
    const sub = env.client.subscribe({ prefix: 'seller:', top: 3, onError: (e) => errs.push(e) });
    env.client.connect();
    const ws = await welcome(env);
    const id = ws.sentOf('subscribe')[0].id;
    ws.recv({ type: 'subscribed', id, lsn: '0/300', mode: 'board' });
    ws.recv({ type: 'board', id, lsn: '0/300', order: 'bayes', entries: [], moves: [] });
    ws.recv({ type: 'error', id, code: 'forbidden', message: 'the refreshed token does not cover this subscription' });
    assert.equal(errs.length, 1);
    assert.equal(sub.error?.code, 'forbidden');
    env.client.close();
  });

  test('unsubscribes a board apart from a prefix subscription of the same prefix', async () => {
    const env = setup();
    const plain = env.client.subscribe({ prefix: 'seller:' });
    const board = env.client.subscribe({ prefix: 'seller:', top: 3, order: 'count' });
    env.client.connect();
    const ws = await welcome(env);
    board.unsubscribe();
    assert.deepEqual(ws.sentOf('unsubscribe').map(({ id, ...m }) => m), [{ type: 'unsubscribe', prefix: 'seller:', top: 3, order: 'count' }]);
    plain.unsubscribe();
    assert.deepEqual(ws.sentOf('unsubscribe').map(({ id, ...m }) => m)[1], { type: 'unsubscribe', prefix: 'seller:' });
    env.client.close();
  });

  test('rejects bad options', () => {
    const env = setup();
    assert.throws(() => env.client.subscribe({ subjects: ['a'], top: 3 }), TypeError);
    assert.throws(() => env.client.subscribe({ prefix: 'seller:', top: 0 }), RangeError);
    assert.throws(() => env.client.subscribe({ prefix: 'seller:', top: 1.5 }), RangeError);
    assert.throws(() => env.client.subscribe({ prefix: 'seller:', top: 3, order: 'updated_at' }), RangeError);
  });
});
