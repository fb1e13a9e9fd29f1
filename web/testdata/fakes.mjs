// Test doubles for the repstream client: a scripted WebSocket and a manual clock.
// Kept outside test/ so that node --test does not run it as a test file.

/** A WebSocket stand-in the test drives from the server side. */
export function makeFakeWS() {
  const sockets = [];
  class FakeWS {
    static CONNECTING = 0;
    static OPEN = 1;
    static CLOSED = 3;
    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.readyState = 0;
      this.sent = [];
      this.closedWith = null;
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
      sockets.push(this);
    }
    send(data) {
      if (this.readyState !== 1) throw new Error('send on a socket that is not open');
      if (typeof data !== 'string') throw new Error('expected a text frame');
      this.sent.push(JSON.parse(data));
    }
    close(code, reason) {
      this.readyState = 3;
      this.closedWith = { code, reason };
    }
    // ---- server side ----
    open() {
      this.readyState = 1;
      this.onopen?.({});
    }
    recv(msg) {
      this.onmessage?.({ data: typeof msg === 'string' ? msg : JSON.stringify(msg) });
    }
    serverClose(code, reason = '') {
      this.readyState = 3;
      this.onclose?.({ code, reason, wasClean: code !== 1006 });
    }
    /** messages the client sent, of one type */
    sentOf(type) {
      return this.sent.filter((m) => m.type === type);
    }
  }
  return { FakeWS, sockets };
}

/** A clock whose timers run only when the test advances it. */
export function makeClock(start = 1_000_000) {
  const timers = new Map();
  let seq = 0;
  const clock = {
    t: start,
    /** every setTimeout call: {id, ms, at} */
    calls: [],
    now: () => clock.t,
    setTimeout: (fn, ms) => {
      const id = ++seq;
      timers.set(id, { fn, at: clock.t + ms, ms });
      clock.calls.push({ id, ms, at: clock.t + ms });
      return id;
    },
    clearTimeout: (id) => {
      timers.delete(id);
    },
    pending: () => [...timers.values()].sort((a, b) => a.at - b.at),
    /** runs, in order, every timer due within ms */
    advance(ms) {
      const end = clock.t + ms;
      for (;;) {
        let next = null;
        let nextId = null;
        for (const [id, tm] of timers) {
          if (tm.at <= end && (next === null || tm.at < next.at)) {
            next = tm;
            nextId = id;
          }
        }
        if (!next) break;
        timers.delete(nextId);
        clock.t = Math.max(clock.t, next.at);
        next.fn();
      }
      clock.t = end;
    },
  };
  return clock;
}

/** lets pending promise callbacks (the async token step) run */
export const flush = () => new Promise((resolve) => setImmediate(resolve));

export const silentLogger = { debug() {}, info() {}, warn() {}, error() {} };

/** an unsigned JWT with the given claims (the client only reads exp) */
export function fakeJWT(claims) {
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${enc({ alg: 'HS256', typ: 'JWT' })}.${enc(claims)}.sig`;
}

/** a state as the server would send it */
export function state(subject, lsn, bayes, extra = {}) {
  return {
    subject,
    count: 10,
    sum: 40,
    mean: 4,
    bayes,
    hist: [0, 0, 2, 4, 4],
    version: 10,
    lsn,
    updated_at: '2026-11-26T21:00:00.000Z',
    ...extra,
  };
}

/** a delta as the server would send it */
export function delta(subject, lsn, bayes, extra = {}) {
  return {
    type: 'delta',
    subject,
    lsn,
    version: 11,
    after: state(subject, lsn, bayes),
    change: { count: 1, sum: 5, mean: 0.1, bayes: 0.05 },
    coalesced: 1,
    ...extra,
  };
}
