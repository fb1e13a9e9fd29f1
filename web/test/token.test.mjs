// getToken failures reach the application through onError and the status
// detail, instead of a silent loop between connecting and offline.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';

import { RepstreamClient } from '../repstream.js';
import { makeFakeWS, makeClock, flush, silentLogger } from '../testdata/fakes.mjs';

function setup(getToken) {
  const { FakeWS, sockets } = makeFakeWS();
  const clock = makeClock();
  const statuses = [];
  const errors = [];
  const client = new RepstreamClient({
    url: 'ws://example.test/v1/stream',
    getToken,
    WebSocket: FakeWS,
    random: () => 0.5,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    logger: silentLogger,
    onStatus: (s, detail) => statuses.push({ s, detail }),
    onError: (e) => errors.push(e),
  });
  return { client, sockets, clock, statuses, errors };
}

describe('getToken failures', () => {
  test('a getToken that throws is reported on every attempt, with the status detail', async () => {
    let calls = 0;
    const env = setup(async () => {
      calls++;
      throw new Error('token endpoint answered 401');
    });
    env.client.connect();
    await flush();
    assert.equal(env.errors.length, 1);
    assert.equal(env.errors[0].code, 'token');
    assert.match(env.errors[0].message, /token endpoint answered 401/);
    assert.equal(env.client.status, 'offline');
    assert.equal(env.statuses.at(-1).detail.reason, 'getToken failed');
    assert.equal(env.sockets.length, 0, 'no socket is opened without a token');
    env.clock.advance(30000);
    await flush();
    assert.equal(calls, 2);
    assert.equal(env.errors.length, 2, 'the retry that failed again is reported too');
  });

  test('a token the server refuses at hello (4001 before welcome) is reported, and retried with backoff', async () => {
    // What the README's old snippet did: the body of a failed fetch as the token.
    let calls = 0;
    const env = setup(async () => {
      calls++;
      return '<!doctype html><title>401 Unauthorized</title>';
    });
    env.client.connect();
    for (let i = 1; i <= 3; i++) {
      await flush();
      const ws = env.sockets.at(-1);
      ws.open();
      ws.serverClose(4001, 'unauthenticated: token is malformed');
      assert.equal(env.errors.length, i, `attempt ${i}: onError called`);
      assert.equal(env.errors.at(-1).code, 'unauthenticated');
      assert.equal(env.errors.at(-1).closeCode, 4001);
      assert.match(env.errors.at(-1).message, /malformed/);
      assert.equal(env.client.status, 'offline');
      assert.equal(env.statuses.at(-1).detail.closeCode, 4001);
      assert.ok(env.statuses.at(-1).detail.retryInMs > 0, 'the next try waits');
      env.clock.advance(env.statuses.at(-1).detail.retryInMs);
    }
    await flush();
    assert.equal(calls, 4, 'each attempt asks getToken again');
  });

  test('a welcomed session whose token expires (4001) refreshes silently', async () => {
    let calls = 0;
    const env = setup(async () => `tok-${++calls}`);
    env.client.connect();
    await flush();
    const ws = env.sockets.at(-1);
    ws.open();
    ws.recv({ type: 'welcome', epoch: 'E1', lsn: '0/100', heartbeat_ms: 15000 });
    ws.serverClose(4001, 'token expired');
    assert.equal(env.errors.length, 0);
    env.clock.advance(30000);
    await flush();
    assert.equal(calls, 2);
  });
});
