import { test, describe } from 'node:test';
import assert from 'node:assert/strict';

import {
  RepstreamClient,
  parseLSN,
  formatLSN,
  compareLSN,
  tokenExpiry,
  backoffDelay,
  SUBPROTOCOL_JSON,
} from '../repstream.js';
import { makeFakeWS, makeClock, flush, silentLogger, fakeJWT, state, delta } from '../testdata/fakes.mjs';

/** a client wired to fakes; returns everything a test needs */
function setup(opts = {}) {
  const { FakeWS, sockets } = makeFakeWS();
  const clock = makeClock();
  const statuses = [];
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
    onStatus: (s) => statuses.push(s),
    onError: (e) => errors.push(e),
    ...opts,
  });
  return { client, FakeWS, sockets, clock, statuses, errors, last: () => sockets[sockets.length - 1] };
}

/** a subscription that records what it is told */
function recorder(client, opts = { prefix: 'seller:', throttleMs: 0 }) {
  const log = { snapshots: [], deltas: [], resets: [], errors: [] };
  const sub = client.subscribe({
    ...opts,
    onSnapshot: (states, info) => log.snapshots.push({ subjects: [...states.keys()], info }),
    onDelta: (d, st) => log.deltas.push({ subject: d.subject, lsn: d.lsn, bayes: st.bayes }),
    onReset: (info) => log.resets.push(info),
    onError: (e) => log.errors.push(e),
  });
  return { sub, log };
}

const WELCOME = { type: 'welcome', epoch: 'E1', lsn: '0/100', heartbeat_ms: 15000, server: 'repstream/test' };

/** connects, opens the socket and answers hello with welcome */
async function welcome(env, msg = WELCOME) {
  await flush();
  const ws = env.last();
  ws.open();
  ws.recv(msg);
  return ws;
}

describe('LSN', () => {
  test('parses X/Y hex into a 64-bit BigInt', () => {
    assert.equal(parseLSN('0/16B3748'), 0x16b3748n);
    assert.equal(parseLSN('1/0'), 1n << 32n);
    assert.equal(parseLSN('FFFFFFFF/FFFFFFFF'), 0xffffffffffffffffn);
    assert.equal(parseLSN('A/B'), (10n << 32n) | 11n);
  });
  test('formats upper-case and round-trips', () => {
    assert.equal(formatLSN(0x16b3748n), '0/16B3748');
    assert.equal(formatLSN((0x1an << 32n) | 0xffn), '1A/FF');
    for (const s of ['0/0', '0/16B3748', '1/0', 'FFFFFFFF/FFFFFFFF', 'A/3']) assert.equal(formatLSN(parseLSN(s)), s);
  });
  test('compares numerically where string order is wrong', () => {
    assert.equal(compareLSN('1/0', '0/FFFFFFFF'), 1);
    assert.equal(compareLSN('A/0', '10/0'), -1); // "A/0" > "10/0" as strings
    assert.equal(compareLSN('0/9', '0/10'), -1); // "0/9" > "0/10" as strings
  });
  test('rejects malformed cursors', () => {
    for (const bad of ['', '0', '0/', '/0', '0/0/0', 'G/0', '0/16b3748', '123456789/0', ' 0/0', 42, null]) {
      assert.throws(() => parseLSN(/** @type {any} */ (bad)), RangeError, String(bad));
    }
  });
});

describe('tokenExpiry', () => {
  test('reads exp in ms, null when absent or unreadable', () => {
    assert.equal(tokenExpiry(fakeJWT({ exp: 1700000000 })), 1700000000000);
    assert.equal(tokenExpiry(fakeJWT({ sub: 'x' })), null);
    assert.equal(tokenExpiry('not-a-jwt'), null);
    assert.equal(tokenExpiry('a.%%%.c'), null);
  });
});

describe('backoffDelay', () => {
  test('full jitter within [0, min(cap, base*2^n))', () => {
    const base = 500;
    const cap = 30000;
    for (let n = 0; n < 12; n++) {
      const ceiling = Math.min(cap, base * 2 ** n);
      assert.equal(backoffDelay(n, base, cap, () => 0), 0);
      const hi = backoffDelay(n, base, cap, () => 0.999999);
      assert.ok(hi < ceiling, `attempt ${n}: ${hi} vs ${ceiling}`);
      assert.equal(hi, Math.floor(0.999999 * ceiling));
      assert.equal(backoffDelay(n, base, cap, () => 0.5), Math.floor(ceiling / 2));
    }
    assert.equal(backoffDelay(1000, base, cap, () => 0.5), 15000); // no overflow past the cap
    assert.equal(backoffDelay(3, base, cap, () => 7), 0); // a broken random source cannot exceed the cap
  });
});

describe('RepstreamClient', () => {
  test('sends hello with the token first, then subscribes after welcome', async () => {
    const env = setup();
    recorder(env.client, { prefix: 'seller:', throttleMs: 500 });
    env.client.connect();
    assert.equal(env.client.status, 'connecting');
    await flush();
    const ws = env.last();
    assert.equal(ws.url, 'ws://example.test/v1/stream');
    assert.deepEqual(ws.protocols, [SUBPROTOCOL_JSON]);
    ws.open();
    assert.deepEqual(ws.sent, [{ type: 'hello', token: 'T0' }]);
    ws.recv(WELCOME);
    assert.equal(ws.sent.length, 2);
    assert.deepEqual(ws.sent[1], { type: 'subscribe', id: ws.sent[1].id, prefix: 'seller:', throttle_ms: 500 });
    assert.equal(typeof ws.sent[1].id, 'number');
    assert.equal(env.client.epoch, 'E1');
    assert.equal(env.client.status, 'catching_up');
  });

  test('snapshot, then idempotent apply: duplicate and older deltas are ignored', async () => {
    const env = setup();
    const { sub, log } = recorder(env.client);
    env.client.connect();
    const ws = await welcome(env);
    const id = ws.sentOf('subscribe')[0].id;
    ws.recv({ type: 'subscribed', id, lsn: '0/100', mode: 'snapshot', reset: false });
    ws.recv({ type: 'snapshot', id, lsn: '0/100', states: [state('seller:1', '0/90', 3.5), state('seller:2', '0/F0', 4.0)] });
    assert.equal(env.client.status, 'live');
    assert.deepEqual(log.snapshots, [{ subjects: ['seller:1', 'seller:2'], info: { lsn: '0/100', reset: false } }]);
    assert.equal(sub.cursor, '0/100');

    ws.recv(delta('seller:1', '0/110', 3.6));
    ws.recv(delta('seller:1', '0/110', 9.9)); // duplicate
    ws.recv(delta('seller:1', '0/105', 9.9)); // older
    ws.recv(delta('seller:2', '0/E0', 9.9)); // older than the snapshot state of seller:2
    ws.recv(delta('seller:1', '0/120', 3.7));
    ws.recv(delta('user:9', '0/130', 1.0)); // not subscribed

    assert.deepEqual(log.deltas, [
      { subject: 'seller:1', lsn: '0/110', bayes: 3.6 },
      { subject: 'seller:1', lsn: '0/120', bayes: 3.7 },
    ]);
    assert.equal(sub.states.get('seller:1').bayes, 3.7);
    assert.equal(sub.states.get('seller:2').bayes, 4.0);
    assert.equal(sub.states.has('user:9'), false);
    assert.equal(sub.cursor, '0/120');
    assert.equal(env.client.cursor, '0/120');
  });

  test('compares delta LSNs as 64-bit numbers, not strings', async () => {
    const env = setup();
    const { sub, log } = recorder(env.client);
    env.client.connect();
    const ws = await welcome(env);
    const id = ws.sentOf('subscribe')[0].id;
    ws.recv({ type: 'subscribed', id, lsn: '0/9', mode: 'snapshot' });
    ws.recv({ type: 'snapshot', id, lsn: '0/9', states: [state('seller:1', '0/9', 3.0)] });
    ws.recv(delta('seller:1', '0/10', 3.1)); // "0/10" < "0/9" as strings, but greater as LSNs
    ws.recv(delta('seller:1', '0/FFFFFFFF', 3.2));
    ws.recv(delta('seller:1', '1/0', 3.3));
    ws.recv(delta('seller:1', '0/FFFFFFFE', 0)); // older
    assert.deepEqual(log.deltas.map((d) => d.lsn), ['0/10', '0/FFFFFFFF', '1/0']);
    assert.equal(sub.states.get('seller:1').bayes, 3.3);
    assert.equal(sub.cursor, '1/0');
  });

  test('a deltas frame applies all its items in order', async () => {
    const env = setup();
    const { sub, log } = recorder(env.client);
    env.client.connect();
    const ws = await welcome(env);
    const id = ws.sentOf('subscribe')[0].id;
    ws.recv({ type: 'subscribed', id, lsn: '0/100', mode: 'snapshot' });
    ws.recv({ type: 'snapshot', id, lsn: '0/100', states: [] });
    ws.recv({
      type: 'deltas',
      items: [delta('seller:1', '0/200', 3.1), delta('seller:2', '0/200', 4.1), delta('seller:1', '0/300', 3.2), delta('seller:3', '0/300', 2.0)],
    });
    assert.deepEqual(
      log.deltas.map((d) => `${d.subject}@${d.lsn}`),
      ['seller:1@0/200', 'seller:2@0/200', 'seller:1@0/300', 'seller:3@0/300'],
    );
    assert.deepEqual([...sub.states.keys()].sort(), ['seller:1', 'seller:2', 'seller:3']);
    assert.equal(sub.states.get('seller:1').bayes, 3.2);
    assert.equal(sub.cursor, '0/300');
  });

  test('after a drop, reconnects and resubscribes since the greatest applied LSN', async () => {
    const env = setup();
    const { sub, log } = recorder(env.client);
    env.client.connect();
    let ws = await welcome(env);
    let id = ws.sentOf('subscribe')[0].id;
    ws.recv({ type: 'subscribed', id, lsn: '0/100', mode: 'snapshot' });
    ws.recv({ type: 'snapshot', id, lsn: '0/100', states: [state('seller:1', '0/100', 3.0)] });
    ws.recv({ type: 'deltas', items: [delta('seller:1', '0/1A0', 3.1), delta('seller:2', '0/2B0', 3.9)] });
    assert.equal(sub.cursor, '0/2B0');

    ws.serverClose(1006);
    assert.equal(env.client.status, 'offline');
    assert.equal(env.sockets.length, 1);
    env.clock.advance(30000);
    await flush();
    assert.equal(env.sockets.length, 2);
    assert.equal(env.client.status, 'connecting');
    ws = env.last();
    ws.open();
    assert.deepEqual(ws.sent[0], { type: 'hello', token: 'T0' });
    ws.recv({ ...WELCOME, lsn: '0/400' });
    const subMsg = ws.sentOf('subscribe')[0];
    assert.equal(subMsg.since, '0/2B0');
    assert.equal(subMsg.prefix, 'seller:');
    assert.equal(env.client.status, 'catching_up');

    id = subMsg.id;
    ws.recv({ type: 'subscribed', id, lsn: '0/400', mode: 'replay', reset: false });
    assert.equal(env.client.status, 'catching_up');
    ws.recv({ type: 'deltas', items: [delta('seller:1', '0/300', 3.2)] });
    assert.equal(env.client.status, 'catching_up');
    ws.recv({ type: 'deltas', items: [delta('seller:2', '0/400', 4.0)] });
    assert.equal(env.client.status, 'live');
    assert.equal(sub.cursor, '0/400');
    assert.equal(sub.states.get('seller:1').bayes, 3.2);
    assert.equal(log.resets.length, 0);
    assert.equal(log.snapshots.length, 1);
    assert.deepEqual(env.statuses, ['connecting', 'catching_up', 'live', 'offline', 'connecting', 'catching_up', 'live']);
  });

  test('a snapshot in chunks (more: true) is applied whole, once, with deltas that came between', async () => {
    const env = setup();
    const { sub, log } = recorder(env.client);
    env.client.connect();
    const ws = await welcome(env);
    const id = ws.sentOf('subscribe')[0].id;
    ws.recv({ type: 'subscribed', id, lsn: '0/100', mode: 'snapshot', reset: false });
    ws.recv({ type: 'snapshot', id, lsn: '0/100', states: [state('seller:1', '0/10', 3.1), state('seller:2', '0/20', 3.2)], more: true });
    assert.equal(log.snapshots.length, 0);
    assert.equal(sub.states.size, 0);
    assert.equal(sub.cursor, null);
    assert.equal(env.client.status, 'catching_up');
    ws.recv({ type: 'tick', lsn: '0/150' }); // says nothing before the last chunk
    ws.recv(delta('seller:3', '0/180', 4.4)); // live, overtook the last chunk
    ws.recv({ type: 'snapshot', id, lsn: '0/100', states: [state('seller:3', '0/30', 3.3)], more: false });
    assert.equal(log.snapshots.length, 1);
    assert.deepEqual(log.snapshots[0].subjects, ['seller:1', 'seller:2', 'seller:3']);
    assert.deepEqual(log.deltas, [{ subject: 'seller:3', lsn: '0/180', bayes: 4.4 }]);
    assert.equal(sub.states.get('seller:3').bayes, 4.4);
    assert.equal(sub.cursor, '0/180');
    assert.equal(env.client.status, 'live');
    ws.recv({ type: 'unsubscribed', id: 99 }); // an acknowledgement: nothing to do
    assert.equal(env.errors.length, 0);
  });

  test('a resume names the epoch of its cursor; an application cursor does not', async () => {
    const env = setup();
    recorder(env.client);
    const given = recorder(env.client, { subjects: ['user:1'], since: '0/5' });
    env.client.connect();
    let ws = await welcome(env);
    const [a, b] = ws.sentOf('subscribe');
    assert.equal('epoch' in a, false);
    assert.equal(b.since, '0/5');
    assert.equal('epoch' in b, false);
    ws.recv({ type: 'subscribed', id: a.id, lsn: '0/100', mode: 'snapshot' });
    ws.recv({ type: 'snapshot', id: a.id, lsn: '0/100', states: [] });
    ws.serverClose(1006);
    env.clock.advance(30000);
    ws = await welcome(env);
    const [a2, b2] = ws.sentOf('subscribe');
    assert.equal(a2.since, '0/100');
    assert.equal(a2.epoch, 'E1');
    assert.equal(b2.since, '0/5');
    assert.equal('epoch' in b2, false);
    assert.equal(given.sub.cursor, '0/5');
  });

  test('a tick advances the cursor and ends catching up', async () => {
    const env = setup();
    const { sub } = recorder(env.client);
    env.client.connect();
    let ws = await welcome(env);
    let id = ws.sentOf('subscribe')[0].id;
    ws.recv({ type: 'tick', lsn: '0/50' }); // before the subscription is answered: says nothing about it
    assert.equal(sub.cursor, null);
    ws.recv({ type: 'subscribed', id, lsn: '0/100', mode: 'snapshot' });
    ws.recv({ type: 'tick', lsn: '0/80' }); // still before its snapshot
    assert.equal(sub.cursor, null);
    ws.recv({ type: 'snapshot', id, lsn: '0/100', states: [] });
    ws.recv({ type: 'tick', lsn: '0/5000' });
    assert.equal(sub.cursor, '0/5000');
    assert.equal(env.client.serverLsn, '0/5000');

    ws.serverClose(1001, 'draining');
    env.clock.advance(30000);
    ws = await welcome(env);
    const m = ws.sentOf('subscribe')[0];
    assert.equal(m.since, '0/5000');
    id = m.id;
    ws.recv({ type: 'subscribed', id, lsn: '0/6000', mode: 'replay' });
    assert.equal(env.client.status, 'catching_up');
    ws.recv({ type: 'tick', lsn: '0/6000' });
    assert.equal(env.client.status, 'live');
  });

  test('replay with nothing to catch up is live at once', async () => {
    const env = setup();
    const sub = env.client.subscribe({ subjects: ['seller:1'], since: '0/500' });
    env.client.connect();
    const ws = await welcome(env);
    const m = ws.sentOf('subscribe')[0];
    assert.deepEqual(m, { type: 'subscribe', id: m.id, subjects: ['seller:1'], since: '0/500' });
    ws.recv({ type: 'subscribed', id: m.id, lsn: '0/500', mode: 'replay' });
    assert.equal(env.client.status, 'live');
    assert.equal(sub.cursor, '0/500');
  });

  test('epoch change: drops states and cursors, calls onReset, subscribes without since', async () => {
    const env = setup();
    const { sub, log } = recorder(env.client);
    env.client.connect();
    let ws = await welcome(env);
    let id = ws.sentOf('subscribe')[0].id;
    ws.recv({ type: 'subscribed', id, lsn: '0/100', mode: 'snapshot' });
    ws.recv({ type: 'snapshot', id, lsn: '0/100', states: [state('seller:1', '0/100', 3.0)] });
    ws.recv(delta('seller:1', '5/0', 3.5));
    ws.serverClose(1001);
    env.clock.advance(30000);
    ws = await welcome(env, { ...WELCOME, epoch: 'E2', lsn: '0/20' });

    assert.deepEqual(log.resets, [{ reason: 'epoch', epoch: 'E2', previousEpoch: 'E1' }]);
    assert.equal(sub.states.size, 0);
    assert.equal(sub.cursor, null);
    assert.equal(env.client.epoch, 'E2');
    const m = ws.sentOf('subscribe')[0];
    assert.equal('since' in m, false);

    id = m.id;
    ws.recv({ type: 'subscribed', id, lsn: '0/20', mode: 'snapshot' });
    ws.recv({ type: 'snapshot', id, lsn: '0/20', states: [state('seller:1', '0/10', 2.0)] });
    // An LSN below the old history's must apply in the new epoch.
    ws.recv(delta('seller:1', '0/30', 2.1));
    assert.equal(sub.states.get('seller:1').bayes, 2.1);
    assert.equal(sub.cursor, '0/30');
  });

  test('a persisted cursor of another epoch is dropped', async () => {
    const env = setup({ epoch: 'OLD' });
    const { log } = recorder(env.client, { prefix: 'user:', since: '0/99' });
    env.client.connect();
    const ws = await welcome(env);
    assert.equal(log.resets[0].reason, 'epoch');
    assert.equal('since' in ws.sentOf('subscribe')[0], false);
  });

  test('snapshot marked reset (cursor too old) calls onReset and replaces the states', async () => {
    const env = setup();
    const { sub, log } = recorder(env.client);
    env.client.connect();
    let ws = await welcome(env);
    let id = ws.sentOf('subscribe')[0].id;
    ws.recv({ type: 'subscribed', id, lsn: '0/100', mode: 'snapshot' });
    ws.recv({ type: 'snapshot', id, lsn: '0/100', states: [state('seller:1', '0/100', 3.0), state('seller:2', '0/100', 3.0)] });
    ws.serverClose(4008, 'slow consumer');
    env.clock.advance(30000);
    ws = await welcome(env);
    const m = ws.sentOf('subscribe')[0];
    assert.equal(m.since, '0/100');
    id = m.id;
    ws.recv({ type: 'subscribed', id, lsn: '0/900', mode: 'snapshot', reset: true });
    ws.recv({ type: 'snapshot', id, lsn: '0/900', states: [state('seller:2', '0/800', 4.4)] });
    assert.deepEqual(log.resets, [{ reason: 'cursor_too_old', epoch: 'E1' }]);
    assert.deepEqual([...sub.states.keys()], ['seller:2']);
    assert.equal(log.snapshots[1].info.reset, true);
    assert.equal(sub.cursor, '0/900');
    assert.equal(env.client.status, 'live');
  });

  test('bad_cursor error restarts that subscription from a snapshot', async () => {
    const env = setup();
    const { log } = recorder(env.client, { prefix: 'seller:', since: '0/1' });
    env.client.connect();
    const ws = await welcome(env);
    const first = ws.sentOf('subscribe')[0];
    assert.equal(first.since, '0/1');
    ws.recv({ type: 'error', id: first.id, code: 'bad_cursor', message: 'too old' });
    const second = ws.sentOf('subscribe')[1];
    assert.ok(second && second.id !== first.id);
    assert.equal('since' in second, false);
    assert.equal(log.resets[0].reason, 'bad_cursor');
    assert.equal(env.errors[0].code, 'bad_cursor');
  });

  test('a forbidden subscription reports the error and does not block live', async () => {
    const env = setup();
    const a = recorder(env.client, { prefix: 'seller:' });
    const b = recorder(env.client, { subjects: ['user:1'] });
    env.client.connect();
    const ws = await welcome(env);
    const [ma, mb] = ws.sentOf('subscribe');
    ws.recv({ type: 'error', id: mb.id, code: 'forbidden', message: 'no' });
    assert.equal(b.log.errors[0].code, 'forbidden');
    assert.equal(b.sub.error.code, 'forbidden');
    ws.recv({ type: 'subscribed', id: ma.id, lsn: '0/1', mode: 'snapshot' });
    ws.recv({ type: 'snapshot', id: ma.id, lsn: '0/1', states: [] });
    assert.equal(env.client.status, 'live');
    assert.equal(a.log.errors.length, 0);
  });

  test('deltas that overtake a snapshot are applied after it', async () => {
    const env = setup();
    const { sub, log } = recorder(env.client);
    env.client.connect();
    const ws = await welcome(env);
    const id = ws.sentOf('subscribe')[0].id;
    ws.recv(delta('seller:1', '0/50', 9)); // before subscribed: not ours
    ws.recv({ type: 'subscribed', id, lsn: '0/100', mode: 'snapshot' });
    ws.recv(delta('seller:1', '0/200', 3.3)); // newer than the snapshot
    ws.recv(delta('seller:2', '0/90', 9)); // older than the snapshot: dropped
    ws.recv({ type: 'snapshot', id, lsn: '0/100', states: [state('seller:1', '0/100', 3.0), state('seller:2', '0/95', 2.0)] });
    assert.deepEqual(log.deltas, [{ subject: 'seller:1', lsn: '0/200', bayes: 3.3 }]);
    assert.equal(sub.states.get('seller:2').bayes, 2.0);
    assert.equal(sub.cursor, '0/200');
  });

  test('4001 gets a fresh token via getToken, then reconnects with it', async () => {
    let n = 0;
    const env = setup({ token: undefined, getToken: async () => `tok-${++n}` });
    recorder(env.client);
    env.client.connect();
    let ws = await welcome(env);
    assert.equal(n, 1);
    assert.deepEqual(ws.sent[0], { type: 'hello', token: 'tok-1' });
    ws.serverClose(4001, 'token expired');
    assert.equal(env.client.status, 'offline');
    env.clock.advance(30000);
    await flush();
    assert.equal(n, 2);
    ws = env.last();
    ws.open();
    assert.deepEqual(ws.sent[0], { type: 'hello', token: 'tok-2' });
  });

  test('4001 without getToken stops and reports unauthenticated', async () => {
    const env = setup();
    env.client.connect();
    const ws = await welcome(env);
    ws.serverClose(4001, 'bad token');
    assert.equal(env.client.status, 'offline');
    assert.equal(env.errors.at(-1).code, 'unauthenticated');
    assert.equal(env.errors.at(-1).closeCode, 4001);
    assert.equal(env.clock.pending().length, 0);
    env.clock.advance(120000);
    await flush();
    assert.equal(env.sockets.length, 1);
    // a new token and connect() resume
    env.client.setToken('T1');
    env.client.connect();
    await flush();
    env.last().open();
    assert.deepEqual(env.last().sent[0], { type: 'hello', token: 'T1' });
  });

  test('sends hello with a fresh token before exp', async () => {
    const env = setup({ token: undefined });
    const expSec = Math.floor(env.clock.t / 1000) + 600; // 10 minutes
    let calls = 0;
    env.client = new RepstreamClient({
      url: 'ws://x/v1/stream',
      WebSocket: env.FakeWS,
      getToken: () => fakeJWT({ exp: expSec + 600 * calls++ }),
      setTimeout: env.clock.setTimeout,
      clearTimeout: env.clock.clearTimeout,
      now: env.clock.now,
      random: () => 0,
      logger: silentLogger,
    });
    env.client.connect();
    const ws = await welcome(env);
    assert.equal(calls, 1);
    assert.equal(ws.sentOf('hello').length, 1);
    const wait = async (ms) => {
      for (let t = 0; t < ms; t += 10000) {
        env.clock.advance(10000);
        ws.recv({ type: 'tick', lsn: '0/1' }); // heartbeats keep the connection
        await flush();
      }
    };
    await wait(530 * 1000); // still more than the lead time before exp
    assert.equal(ws.sentOf('hello').length, 1);
    await wait(20 * 1000); // within 60 s of exp
    await flush();
    assert.equal(calls, 2);
    const hellos = ws.sentOf('hello');
    assert.equal(hellos.length, 2);
    assert.equal(tokenExpiry(hellos[1].token), (expSec + 600) * 1000);
    assert.equal(env.sockets.length, 1, 'refreshed on the same connection');
  });

  test('backoff delays grow within [0, min(cap, base*2^n)] and reset after a stable connection', async () => {
    const env = setup({ random: () => 0.999, backoff: { baseMs: 500, capMs: 30000, stableMs: 10000 } });
    const details = [];
    env.client.onStatus = (s, d) => s === 'offline' && details.push(d);
    env.client.connect();
    for (let n = 0; n < 10; n++) {
      await flush();
      const ws = env.last();
      ws.serverClose(1006); // fails before welcome
      const d = details.at(-1);
      const ceiling = Math.min(30000, 500 * 2 ** n);
      assert.equal(d.attempt, n);
      assert.ok(d.retryInMs >= 0 && d.retryInMs <= ceiling, `attempt ${n}: ${d.retryInMs} > ${ceiling}`);
      assert.equal(d.retryInMs, Math.floor(0.999 * ceiling));
      const timer = env.clock.calls.at(-1);
      assert.equal(timer.ms, d.retryInMs);
      env.clock.advance(d.retryInMs);
    }
    assert.equal(details.at(-1).retryInMs, Math.floor(0.999 * 30000));
    // a connection that stays up resets the backoff
    const ws = await welcome(env);
    env.clock.advance(10000);
    ws.serverClose(1001);
    assert.equal(details.at(-1).attempt, 0);
    assert.ok(details.at(-1).retryInMs <= 500);
    // ... but a connection that drops at once does not
    env.clock.advance(500);
    const ws2 = await welcome(env);
    ws2.serverClose(4008);
    assert.equal(details.at(-1).attempt, 1);
    assert.ok(details.at(-1).retryInMs <= 1000);
  });

  test('full jitter: each delay uses the injected random source', async () => {
    const seq = [0, 0.25, 0.5, 0.75];
    let i = 0;
    const env = setup({ random: () => seq[i++ % seq.length] });
    const delays = [];
    env.client.onStatus = (s, d) => s === 'offline' && delays.push(d.retryInMs);
    env.client.connect();
    for (let n = 0; n < 4; n++) {
      await flush();
      env.last().serverClose(1006);
      env.clock.advance(delays.at(-1));
    }
    assert.deepEqual(delays, [0, 250, 1000, 3000]); // r * 500 * 2^n
  });

  test('close codes: 4008, 1001, 4000 and 1009 reconnect and resume', async () => {
    for (const code of [4008, 1001, 4000, 1009, 1006]) {
      const env = setup();
      const { sub } = recorder(env.client);
      env.client.connect();
      let ws = await welcome(env);
      const id = ws.sentOf('subscribe')[0].id;
      ws.recv({ type: 'subscribed', id, lsn: '0/10', mode: 'snapshot' });
      ws.recv({ type: 'snapshot', id, lsn: '0/10', states: [] });
      ws.recv(delta('seller:7', '0/77', 3));
      ws.serverClose(code);
      assert.equal(env.client.status, 'offline', `code ${code}`);
      env.clock.advance(30000);
      ws = await welcome(env);
      assert.equal(ws.sentOf('subscribe')[0].since, '0/77', `code ${code}`);
      assert.equal(sub.states.get('seller:7').bayes, 3);
      if (code === 4000 || code === 1009) assert.equal(env.errors.at(-1).closeCode, code);
    }
  });

  test('a silent connection is dropped after missing heartbeats', async () => {
    const env = setup();
    env.client.connect();
    const ws = await welcome(env); // heartbeat_ms 15000
    env.clock.advance(30000);
    ws.recv({ type: 'tick', lsn: '0/1' }); // keeps it alive
    env.clock.advance(30000);
    assert.equal(env.client.status, 'live');
    env.clock.advance(7499);
    assert.equal(env.client.status, 'live');
    env.clock.advance(1);
    assert.equal(env.client.status, 'offline');
    assert.equal(ws.closedWith.code, 1000);
    assert.equal(env.sockets.length, 1);
    env.clock.advance(30000);
    await flush();
    assert.equal(env.sockets.length, 2, 'reconnected');
  });

  test('unsubscribe tells the server and stops applying', async () => {
    const env = setup();
    const a = recorder(env.client, { prefix: 'seller:' });
    const b = recorder(env.client, { subjects: ['seller:1', 'seller:2'] });
    env.client.connect();
    const ws = await welcome(env);
    for (const m of ws.sentOf('subscribe')) {
      ws.recv({ type: 'subscribed', id: m.id, lsn: '0/1', mode: 'snapshot' });
      ws.recv({ type: 'snapshot', id: m.id, lsn: '0/1', states: [] });
    }
    b.sub.unsubscribe();
    b.sub.unsubscribe(); // idempotent
    assert.deepEqual(ws.sentOf('unsubscribe').map(({ id, ...m }) => m), [{ type: 'unsubscribe', subjects: ['seller:1', 'seller:2'] }]);
    ws.recv(delta('seller:1', '0/5', 3));
    assert.equal(b.log.deltas.length, 0);
    assert.equal(a.log.deltas.length, 1);
    a.sub.unsubscribe();
    assert.deepEqual(ws.sentOf('unsubscribe').at(-1).prefix, 'seller:');
    assert.equal(env.client.subscriptions.length, 0);
  });

  test('close() stops reconnecting; connect() resumes with the cursor kept', async () => {
    const env = setup();
    const { sub } = recorder(env.client);
    env.client.connect();
    let ws = await welcome(env);
    const id = ws.sentOf('subscribe')[0].id;
    ws.recv({ type: 'subscribed', id, lsn: '0/10', mode: 'snapshot' });
    ws.recv({ type: 'snapshot', id, lsn: '0/10', states: [] });
    env.client.close();
    assert.equal(ws.closedWith.code, 1000);
    assert.equal(env.client.status, 'offline');
    env.clock.advance(60000);
    await flush();
    assert.equal(env.sockets.length, 1);
    env.client.connect();
    ws = await welcome(env);
    assert.equal(ws.sentOf('subscribe')[0].since, '0/10');
    assert.equal(sub.active, true);
  });

  test('subscribing while live sends at once and catches up', async () => {
    const env = setup();
    env.client.connect();
    const ws = await welcome(env);
    assert.equal(env.client.status, 'live'); // nothing to catch up
    const { sub } = recorder(env.client, { subjects: ['seller:9'], throttleMs: 0 });
    const m = ws.sentOf('subscribe')[0];
    assert.deepEqual(m.subjects, ['seller:9']);
    assert.equal(m.throttle_ms, 0);
    assert.equal(env.client.status, 'catching_up');
    ws.recv({ type: 'subscribed', id: m.id, lsn: '0/3', mode: 'snapshot' });
    ws.recv({ type: 'snapshot', id: m.id, lsn: '0/3', states: [state('seller:9', '0/2', 4.2)] });
    assert.equal(env.client.status, 'live');
    assert.equal(sub.states.get('seller:9').bayes, 4.2);
  });

  test('a throwing callback or a garbage frame does not break the stream', async () => {
    const env = setup();
    const seen = [];
    const sub = env.client.subscribe({
      prefix: 'seller:',
      onDelta: (d) => {
        seen.push(d.lsn);
        throw new Error('app bug');
      },
    });
    env.client.connect();
    const ws = await welcome(env);
    const id = ws.sentOf('subscribe')[0].id;
    ws.recv({ type: 'subscribed', id, lsn: '0/1', mode: 'snapshot' });
    ws.recv({ type: 'snapshot', id, lsn: '0/1', states: [] });
    ws.recv('{not json');
    ws.recv({ type: 'something_new', x: 1 });
    ws.recv(delta('seller:1', 'zz', 3));
    ws.recv(delta('seller:1', '0/2', 3));
    ws.recv(delta('seller:1', '0/3', 3));
    assert.deepEqual(seen, ['0/2', '0/3']);
    assert.equal(sub.cursor, '0/3');
  });

  test('options are validated', () => {
    const { FakeWS } = makeFakeWS();
    assert.throws(() => new RepstreamClient({ url: '', WebSocket: FakeWS }), TypeError);
    assert.throws(() => new RepstreamClient({ url: 'ws://x', codec: /** @type {any} */ ('proto'), WebSocket: FakeWS }), RangeError);
    const c = new RepstreamClient({ url: 'ws://x', WebSocket: FakeWS });
    assert.throws(() => c.subscribe({}), TypeError);
    assert.throws(() => c.subscribe({ prefix: 'a', subjects: ['b'] }), TypeError);
    assert.throws(() => c.subscribe({ subjects: [] }), TypeError);
    assert.throws(() => c.subscribe({ prefix: 'a', since: 'nope' }), RangeError);
  });
});
