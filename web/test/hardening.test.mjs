// Issue 12: the client's cursor, timer and retry rules under outside clients' findings.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';

import { RepstreamClient } from '../repstream.js';
import { makeFakeWS, makeClock, flush, silentLogger, fakeJWT, state, delta } from '../testdata/fakes.mjs';

function setup(opts = {}) {
  const { FakeWS, sockets } = makeFakeWS();
  const clock = makeClock();
  const errors = [];
  const client = new RepstreamClient({
    url: 'ws://example.test/v1/stream',
    token: 'T0',
    WebSocket: FakeWS,
    random: () => 0.5,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    logger: silentLogger,
    onError: (e) => errors.push(e),
    ...opts,
  });
  return { client, FakeWS, sockets, clock, errors, last: () => sockets[sockets.length - 1] };
}

function recorder(client, opts) {
  const log = { snapshots: [], deltas: [], resets: [], errors: [] };
  const sub = client.subscribe({
    ...opts,
    onSnapshot: (states, info) => log.snapshots.push({ subjects: [...states.keys()], info }),
    onDelta: (d) => log.deltas.push({ subject: d.subject, lsn: d.lsn }),
    onReset: (info) => log.resets.push(info),
    onError: (e) => log.errors.push(e),
  });
  return { sub, log };
}

const WELCOME = { type: 'welcome', epoch: 'E1', lsn: '0/100', heartbeat_ms: 15000, server: 'repstream/test' };

async function welcome(env, msg = WELCOME) {
  await flush();
  const ws = env.last();
  ws.open();
  ws.recv(msg);
  return ws;
}

describe('cursor only from frames owed to the subscription', () => {
  test("a live delta owed to A does not move B's cursor while B replays", async () => {
    const env = setup();
    const a = recorder(env.client, { prefix: 'seller:' });
    env.client.connect();
    let ws = await welcome(env);
    const ma = ws.sentOf('subscribe')[0];
    ws.recv({ type: 'subscribed', id: ma.id, lsn: '0/100', mode: 'snapshot' });
    ws.recv({ type: 'snapshot', id: ma.id, lsn: '0/100', states: [] });
    ws.recv({ type: 'caught_up', id: ma.id, lsn: '0/100' });
    // B overlaps A and resumes from a cursor of its own.
    const b = recorder(env.client, { subjects: ['seller:1', 'user:1'], since: '0/50' });
    const mb = ws.sentOf('subscribe')[1];
    assert.equal(mb.since, '0/50');
    ws.recv({ type: 'subscribed', id: mb.id, lsn: '0/300', mode: 'replay' });
    ws.recv(delta('user:1', '0/60', 3.1)); // B's replay
    ws.recv(delta('seller:1', '0/400', 4.0)); // A's live delta: B also selects seller:1
    assert.equal(b.sub.cursor, '0/60', "B's cursor stays at its replay");
    assert.equal(b.sub.states.get('seller:1').lsn, '0/400', 'the newer state is held');
    assert.equal(a.sub.cursor, '0/400');
    // Dropped here: B resumes from what it really received.
    ws.serverClose(1006);
    env.clock.advance(30000);
    ws = await welcome(env);
    const [ra, rb] = ws.sentOf('subscribe');
    assert.equal(ra.since, '0/400');
    assert.equal(rb.since, '0/60');
    // Its replay, then its own copy of 0/400 (ignored: held), then caught_up.
    ws.recv({ type: 'subscribed', id: ra.id, lsn: '0/500', mode: 'replay' });
    ws.recv({ type: 'caught_up', id: ra.id, lsn: '0/500' });
    ws.recv({ type: 'subscribed', id: rb.id, lsn: '0/500', mode: 'replay' });
    ws.recv(delta('user:1', '0/200', 3.3));
    ws.recv(delta('seller:1', '0/400', 4.0));
    assert.equal(b.sub.cursor, '0/400', 'at or below H: its replay');
    assert.equal(b.sub.states.get('user:1').lsn, '0/200');
    ws.recv({ type: 'caught_up', id: rb.id, lsn: '0/500' });
    assert.equal(b.sub.cursor, '0/500');
    assert.equal(env.client.status, 'live');
    // Live now: every delta it selects moves its cursor.
    ws.recv(delta('seller:1', '0/600', 4.1));
    assert.equal(b.sub.cursor, '0/600');
  });

  test('a delta above H that only the replaying subscription selects ends its replay', async () => {
    const env = setup();
    recorder(env.client, { prefix: 'seller:' });
    const b = recorder(env.client, { subjects: ['user:1'], since: '0/50' });
    env.client.connect();
    const ws = await welcome(env);
    const [, mb] = ws.sentOf('subscribe');
    ws.recv({ type: 'subscribed', id: mb.id, lsn: '0/300', mode: 'replay' });
    ws.recv(delta('user:1', '0/350', 3.1));
    assert.equal(b.sub.cursor, '0/350');
  });

  test('deltas that overtook a snapshot do not move its cursor when another subscription selects them', async () => {
    const env = setup();
    const a = recorder(env.client, { prefix: 'seller:' });
    env.client.connect();
    const ws = await welcome(env);
    const ma = ws.sentOf('subscribe')[0];
    ws.recv({ type: 'subscribed', id: ma.id, lsn: '0/100', mode: 'snapshot' });
    ws.recv({ type: 'snapshot', id: ma.id, lsn: '0/100', states: [] });
    ws.recv({ type: 'caught_up', id: ma.id, lsn: '0/100' });
    const b = recorder(env.client, { subjects: ['seller:1', 'user:1'] });
    const mb = ws.sentOf('subscribe')[1];
    ws.recv({ type: 'subscribed', id: mb.id, lsn: '0/200', mode: 'snapshot' });
    ws.recv(delta('seller:1', '0/300', 4.0)); // A's live delta, during B's snapshot
    ws.recv({ type: 'snapshot', id: mb.id, lsn: '0/200', states: [state('seller:1', '0/150', 3.0)] });
    assert.equal(b.sub.states.get('seller:1').lsn, '0/300');
    assert.equal(b.sub.cursor, '0/200', "the snapshot's position, not A's delta");
    assert.equal(a.sub.cursor, '0/300');
  });

  test('a second subscribed (the replay was cut short by pruning) resets to the snapshot', async () => {
    const env = setup();
    const b = recorder(env.client, { subjects: ['user:1'], since: '0/50' });
    env.client.connect();
    const ws = await welcome(env);
    const m = ws.sentOf('subscribe')[0];
    ws.recv({ type: 'subscribed', id: m.id, lsn: '0/300', mode: 'replay' });
    ws.recv(delta('user:1', '0/60', 3.1));
    ws.recv({ type: 'subscribed', id: m.id, lsn: '0/320', mode: 'snapshot', reset: true });
    ws.recv({ type: 'snapshot', id: m.id, lsn: '0/320', states: [state('user:1', '0/310', 3.5)] });
    assert.equal(b.log.resets.length, 1);
    assert.equal(b.log.resets[0].reason, 'cursor_too_old');
    assert.equal(b.sub.cursor, '0/320');
    assert.equal(b.sub.states.get('user:1').lsn, '0/310');
  });
});

describe('timers and retries', () => {
  test('a token expiring in 30 days does not spin the refresh (setTimeout is capped at 2^31-1 ms)', async () => {
    const env = setup({ token: undefined });
    const expSec = Math.floor(env.clock.t / 1000) + 30 * 24 * 3600;
    let calls = 0;
    env.client = new RepstreamClient({
      url: 'ws://x/v1/stream',
      WebSocket: env.FakeWS,
      getToken: () => (calls++, fakeJWT({ exp: expSec + calls })),
      setTimeout: env.clock.setTimeout,
      clearTimeout: env.clock.clearTimeout,
      now: env.clock.now,
      random: () => 0,
      logger: silentLogger,
    });
    env.client.connect();
    const ws = await welcome(env, { ...WELCOME, heartbeat_ms: 0 }); // no watchdog: only the refresh timer runs
    assert.equal(calls, 1);
    for (const c of env.clock.calls) assert.ok(c.ms <= 2 ** 31 - 1, `a timer of ${c.ms} ms`);
    // The first step (24.8 days) passes: no refresh yet, no burst.
    env.clock.advance(2 ** 31 - 1);
    await flush();
    assert.equal(calls, 1);
    assert.equal(ws.sentOf('hello').length, 1);
    // Near exp, one refresh.
    env.clock.advance((30 * 24 * 3600 - 60 + 2) * 1000 - (2 ** 31 - 1));
    await flush();
    assert.equal(calls, 2);
    assert.equal(ws.sentOf('hello').length, 2);
  });

  test('a transient internal error is retried with backoff on the same socket', async () => {
    const env = setup();
    const b = recorder(env.client, { prefix: 'seller:' });
    env.client.connect();
    const ws = await welcome(env);
    let m = ws.sentOf('subscribe')[0];
    ws.recv({ type: 'error', id: m.id, code: 'internal', message: 'the store is unavailable' });
    assert.equal(b.log.errors[0].code, 'internal');
    assert.equal(ws.sentOf('subscribe').length, 1);
    env.clock.advance(30000);
    assert.equal(ws.sentOf('subscribe').length, 2, 'retried');
    m = ws.sentOf('subscribe')[1];
    // Failing during its catch-up (after subscribed) too.
    ws.recv({ type: 'subscribed', id: m.id, lsn: '0/100', mode: 'replay' });
    ws.recv({ type: 'error', id: m.id, code: 'internal', message: 'catch-up failed' });
    env.clock.advance(30000);
    assert.equal(ws.sentOf('subscribe').length, 3, 'retried again');
    m = ws.sentOf('subscribe')[2];
    ws.recv({ type: 'subscribed', id: m.id, lsn: '0/100', mode: 'snapshot' });
    ws.recv({ type: 'snapshot', id: m.id, lsn: '0/100', states: [] });
    assert.equal(env.client.status, 'live');
    assert.equal(env.sockets.length, 1);
    // A forbidden one is not retried on this socket.
    const c = recorder(env.client, { subjects: ['user:1'] });
    const mc = ws.sentOf('subscribe')[3];
    ws.recv({ type: 'error', id: mc.id, code: 'forbidden', message: 'no' });
    env.clock.advance(60000);
    assert.equal(ws.sentOf('subscribe').length, 4);
    assert.equal(c.sub.error.code, 'forbidden');
  });

  test('a refresh that loses a live subscription (forbidden) marks it failed', async () => {
    const env = setup();
    const b = recorder(env.client, { prefix: 'buyer:' });
    env.client.connect();
    const ws = await welcome(env);
    const m = ws.sentOf('subscribe')[0];
    ws.recv({ type: 'subscribed', id: m.id, lsn: '0/100', mode: 'snapshot' });
    ws.recv({ type: 'snapshot', id: m.id, lsn: '0/100', states: [] });
    ws.recv({ type: 'caught_up', id: m.id, lsn: '0/100' });
    ws.recv({ type: 'error', id: m.id, code: 'forbidden', message: 'the refreshed token does not cover this subscription' });
    assert.equal(b.sub.error.code, 'forbidden');
    ws.recv(delta('buyer:1', '0/200', 1));
    assert.equal(b.sub.states.size, 0);
  });
});

describe('no timer beyond setTimeout’s limit', () => {
  test('a huge heartbeat_ms or backoff cap never asks setTimeout for more than 2^31-1 ms', async () => {
    const env = setup({ backoff: { baseMs: 2 ** 40, capMs: 2 ** 40 } });
    env.client.subscribe({ prefix: 'seller:' });
    env.client.connect();
    const ws = await welcome(env, { ...WELCOME, heartbeat_ms: 2 ** 40 });
    env.clock.advance(2 ** 31); // the watchdog re-arms for the time left instead of firing
    assert.equal(env.sockets.length, 1);
    assert.equal(ws.closedWith, null);
    ws.serverClose(1006);
    for (const c of env.clock.calls) assert.ok(c.ms <= 2 ** 31 - 1, `a timer of ${c.ms} ms`);
  });
});
