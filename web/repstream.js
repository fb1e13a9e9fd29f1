// @ts-check
/**
 * repstream browser client, protocol version 1 (PROTOCOL.md, "WebSocket").
 *
 * Framework-free ES module with no dependencies. Works in browsers and in
 * any runtime that provides (or is given) a WebSocket constructor.
 *
 *   import { RepstreamClient } from './repstream.js';
 *   const client = new RepstreamClient({ url: '/v1/stream', getToken });
 *   const sub = client.subscribe({ prefix: 'seller:', throttleMs: 500,
 *     onSnapshot(states) {}, onDelta(delta, state) {}, onReset(info) {} });
 *   client.connect();
 *
 * Guarantees it keeps (PROTOCOL.md): hello first; per subscription a resume
 * cursor equal to the greatest LSN applied (or the snapshot / last tick LSN);
 * a delta is applied only if its LSN is greater than the LSN of the state
 * held for its subject (LSNs compared as 64-bit numbers); an epoch change
 * drops cursors and states; reconnects use exponential backoff with full
 * jitter.
 *
 * @module repstream
 */

/** WebSocket subprotocol of the JSON codec. */
export const SUBPROTOCOL_JSON = 'repstream.v1.json';

/**
 * Connection status values.
 * @type {Readonly<{CONNECTING: 'connecting', CATCHING_UP: 'catching_up', LIVE: 'live', OFFLINE: 'offline'}>}
 */
export const STATUS = Object.freeze({
  CONNECTING: 'connecting',
  CATCHING_UP: 'catching_up',
  LIVE: 'live',
  OFFLINE: 'offline',
});

/**
 * @typedef {'connecting'|'catching_up'|'live'|'offline'} Status
 *
 * @typedef {object} State
 * @property {string} subject
 * @property {number} count
 * @property {number} sum
 * @property {number} mean
 * @property {number} bayes
 * @property {number[]} [hist]
 * @property {number} version
 * @property {string} lsn
 * @property {string} updated_at
 *
 * @typedef {object} Change
 * @property {number} count
 * @property {number} sum
 * @property {number} mean
 * @property {number} bayes
 *
 * @typedef {object} Delta
 * @property {'delta'} [type]
 * @property {string} subject
 * @property {string} lsn
 * @property {number} version
 * @property {State} after
 * @property {Change} change
 * @property {number} [coalesced]
 *
 * @typedef {object} ResetInfo
 * @property {'epoch'|'cursor_too_old'|'bad_cursor'} reason
 * @property {string|null} [epoch]          new epoch (reason 'epoch')
 * @property {string|null} [previousEpoch]  epoch the dropped cursors belonged to
 *
 * @typedef {object} SnapshotInfo
 * @property {string} lsn     the snapshot's LSN, now the subscription's cursor
 * @property {boolean} reset  true if the snapshot replaced a cursor that was too old
 *
 * @typedef {object} RepstreamError
 * @property {string} code        a server error code (bad_request, unauthenticated, forbidden, bad_cursor,
 *                                too_many_subscriptions, internal) or one of the client's: 'unauthenticated',
 *                                'token', 'socket', 'protocol', 'policy', 'too_many_connections' (repstream.d.ts)
 * @property {string} message
 * @property {number} [id]        request id the server error refers to
 * @property {number} [closeCode] WebSocket close code, when the error is a close
 * @property {unknown} [cause]
 *
 * @typedef {object} StatusDetail
 * @property {number} [closeCode]  close code of the connection that ended
 * @property {string} [reason]     close reason
 * @property {number} [retryInMs]  delay before the next attempt, if one is scheduled
 * @property {number} [attempt]    number of the scheduled attempt (0 = first retry)
 *
 * @typedef {object} WelcomeMessage
 * @property {'welcome'} type
 * @property {string} epoch
 * @property {string} lsn
 * @property {number} [heartbeat_ms]
 * @property {string} [server]
 *
 * @typedef {object} WebSocketLike
 * @property {number} readyState
 * @property {(data: string) => void} send
 * @property {(code?: number, reason?: string) => void} close
 * @property {((ev: any) => void) | null} onopen
 * @property {((ev: {data: any}) => void) | null} onmessage
 * @property {((ev: {code: number, reason?: string}) => void) | null} onclose
 * @property {((ev: any) => void) | null} onerror
 *
 * @typedef {new (url: string, protocols?: string | string[]) => WebSocketLike} WebSocketConstructor
 *
 * @typedef {object} Logger
 * @property {(...args: any[]) => void} debug
 * @property {(...args: any[]) => void} info
 * @property {(...args: any[]) => void} warn
 * @property {(...args: any[]) => void} error
 *
 * @typedef {object} BackoffOptions
 * @property {number} [baseMs=500]     first retry waits up to this long
 * @property {number} [capMs=30000]    no retry waits longer than this
 * @property {number} [stableMs=10000] a connection welcomed this long ago resets the backoff
 *
 * @typedef {object} ClientOptions
 * @property {string} url  ws:// or wss:// URL of /v1/stream; a path ('/v1/stream') is resolved against location
 * @property {string} [token]  a JWT; used as is (a 4001 close then stops the client)
 * @property {() => (string | Promise<string>)} [getToken]  returns a fresh JWT; called on connect when
 *   the held token is missing or expiring, after a 4001 close, and before `exp` to extend the session
 * @property {'json'} [codec='json']
 * @property {string|null} [epoch]  epoch of cursors passed as `since` to subscribe(), if persisted
 * @property {BackoffOptions} [backoff]
 * @property {number} [connectTimeoutMs=15000]  give up on a connection not welcomed by then
 * @property {number} [refreshLeadMs=60000]  refresh the token at most this long before exp
 * @property {(status: Status, detail: StatusDetail) => void} [onStatus]
 * @property {(err: RepstreamError) => void} [onError]
 * @property {(welcome: WelcomeMessage) => void} [onWelcome]
 * @property {WebSocketConstructor} [WebSocket]  defaults to globalThis.WebSocket
 * @property {() => number} [random]  defaults to Math.random (backoff jitter)
 * @property {(fn: () => void, ms: number) => any} [setTimeout]
 * @property {(handle: any) => void} [clearTimeout]
 * @property {() => number} [now]  defaults to Date.now
 * @property {Logger} [logger]  defaults to console
 *
 * @typedef {object} SubscribeOptions
 * @property {string[]} [subjects]  exact subjects; or
 * @property {string} [prefix]      every subject starting with this, e.g. 'seller:'
 * @property {number} [throttleMs]  server-side coalescing window (throttle_ms)
 * @property {string} [since]       resume from this cursor (give the client `epoch` too)
 * @property {(states: ReadonlyMap<string, State>, info: SnapshotInfo, sub: Subscription) => void} [onSnapshot]
 * @property {(delta: Delta, state: State, sub: Subscription) => void} [onDelta]
 * @property {(info: ResetInfo, sub: Subscription) => void} [onReset]
 * @property {(err: RepstreamError, sub: Subscription) => void} [onError]
 * @property {number} [top]         makes it a leaderboard of `prefix`: its first `top` subjects by `order`
 * @property {BoardOrder} [order='bayes']  the leaderboard's ranking (descending; ties by subject)
 * @property {(board: BoardUpdate, sub: Subscription) => void} [onBoard]  the leaderboard changed
 *
 * @typedef {'bayes'|'mean'|'count'} BoardOrder
 *
 * @typedef {State & {rank: number}} BoardEntry
 *
 * @typedef {object} BoardMove
 * @property {string} subject
 * @property {number|null} from  previous rank, null if it entered the board
 * @property {number|null} to    new rank, null if it left the board
 *
 * @typedef {object} BoardUpdate
 * @property {string} lsn             the board is exact at this position (now the cursor)
 * @property {BoardOrder} order
 * @property {BoardEntry[]} entries   rank 1 first
 * @property {BoardMove[]} moves      rank changes since the previous board (all entries on the first)
 */

/** Orders a leaderboard subscription accepts. */
const BOARD_ORDERS = new Set(['bayes', 'mean', 'count']);

const MASK32 = 0xffffffffn;
const LSN_RE = /^([0-9A-F]{1,8})\/([0-9A-F]{1,8})$/;

/**
 * Parses a cursor in pg_lsn text form ("X/Y", upper-case hex, as Postgres prints it) into a 64-bit BigInt (X<<32 | Y).
 * @param {string} text
 * @returns {bigint}
 */
export function parseLSN(text) {
  const m = typeof text === 'string' ? LSN_RE.exec(text) : null;
  if (!m) throw new RangeError(`invalid LSN ${JSON.stringify(text)}: want X/Y in hex`);
  return (BigInt('0x' + m[1]) << 32n) | BigInt('0x' + m[2]);
}

/**
 * Formats a 64-bit LSN in pg_lsn text form, upper-case hex ("0/16B3748").
 * @param {bigint} lsn
 * @returns {string}
 */
export function formatLSN(lsn) {
  if (typeof lsn !== 'bigint' || lsn < 0n || lsn > 0xffffffffffffffffn) {
    throw new RangeError(`invalid LSN ${String(lsn)}`);
  }
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & MASK32).toString(16).toUpperCase()}`;
}

/**
 * Compares two LSNs as 64-bit unsigned integers (never as strings).
 * @param {string|bigint} a
 * @param {string|bigint} b
 * @returns {-1|0|1}
 */
export function compareLSN(a, b) {
  const x = typeof a === 'bigint' ? a : parseLSN(a);
  const y = typeof b === 'bigint' ? b : parseLSN(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

/**
 * Reads the `exp` claim of a JWT without verifying it.
 * @param {string} token
 * @returns {number|null} expiry in milliseconds since the epoch, or null if absent/unreadable
 */
export function tokenExpiry(token) {
  try {
    const part = String(token).split('.')[1];
    if (!part) return null;
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((part.length + 3) % 4);
    const claims = JSON.parse(atob(b64));
    return typeof claims.exp === 'number' && Number.isFinite(claims.exp) ? claims.exp * 1000 : null;
  } catch {
    return null;
  }
}

/**
 * Delay before reconnect attempt `attempt` (0-based): exponential backoff with
 * full jitter, uniform in [0, min(capMs, baseMs * 2^attempt)).
 * @param {number} attempt
 * @param {number} baseMs
 * @param {number} capMs
 * @param {() => number} [random]
 * @returns {number}
 */
export function backoffDelay(attempt, baseMs, capMs, random = Math.random) {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 52));
  const r = random();
  const u = r >= 0 && r < 1 ? r : 0; // a bad random source must not stretch the cap
  return Math.floor(u * ceiling);
}

/** @param {bigint|null} a @param {bigint} b */
const maxLSN = (a, b) => (a === null || b > a ? b : a);

/** @param {unknown} s */
function lsnOrZero(s) {
  try {
    return parseLSN(/** @type {string} */ (s));
  } catch {
    return 0n;
  }
}

const OPEN = 1;

/** The longest delay setTimeout honours (2^31-1 ms, about 24.8 days); a longer one fires at once. */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/** Server error codes that may clear up by themselves: the subscription is retried with backoff on the same socket. */
const TRANSIENT = new Set(['internal', 'unavailable']);

/**
 * One subscription: its options, the states it holds and its resume cursor.
 * Created by RepstreamClient.subscribe(); do not construct directly.
 */
export class Subscription {
  /**
   * @param {RepstreamClient} client
   * @param {SubscribeOptions} opts
   */
  constructor(client, opts) {
    /** @private */ this._client = client;
    /** @readonly @type {ReadonlyArray<string>|null} */
    this.subjects = opts.subjects ? Object.freeze([...opts.subjects]) : null;
    /** @readonly @type {string|null} */
    this.prefix = opts.subjects ? null : /** @type {string} */ (opts.prefix);
    /** @readonly @type {number|null} */
    this.throttleMs = opts.throttleMs ?? null;
    /**
     * Current state per subject. The same Map object for the subscription's
     * whole life (it is cleared on reset, not replaced), so a UI may keep it.
     * @readonly @type {Map<string, State>}
     */
    this.states = new Map();
    /** True once the subscription has caught up with the server head. @type {boolean} */
    this.caughtUp = false;
    /** Last error the server returned for this subscription. @type {RepstreamError|null} */
    this.error = null;
    /** @type {SubscribeOptions['onSnapshot']} */ this.onSnapshot = opts.onSnapshot;
    /** @type {SubscribeOptions['onDelta']} */ this.onDelta = opts.onDelta;
    /** @type {SubscribeOptions['onReset']} */ this.onReset = opts.onReset;
    /** @type {SubscribeOptions['onError']} */ this.onError = opts.onError;
    /** Leaderboard length, or null for a plain subscription. @readonly @type {number|null} */
    this.top = opts.top ?? null;
    /** Leaderboard order, or null. @readonly @type {BoardOrder|null} */
    this.order = this.top === null ? null : (opts.order ?? 'bayes');
    /** A leaderboard's entries, rank 1 first (replaced by each board). @type {BoardEntry[]} */
    this.entries = [];
    /** @type {SubscribeOptions['onBoard']} */ this.onBoard = opts.onBoard;

    /** @internal @type {bigint|null} */ this._cursor = opts.since ? parseLSN(opts.since) : null;
    /** @internal epoch the cursor was learnt in (null: given by the application) @type {string|null} */
    this._cursorEpoch = null;
    /** @internal @type {Map<string, bigint>} */ this._lsns = new Map();
    /** @internal @type {Set<string>|null} */ this._set = this.subjects ? new Set(this.subjects) : null;
    /** @internal @type {'idle'|'pending'|'snapshot'|'ready'|'failed'} */ this._phase = 'idle';
    /** @internal @type {number} */ this._reqId = 0;
    /** @internal @type {bigint|null} */ this._head = null;
    /** @internal */ this._resetPending = false;
    /** @internal @type {Delta[]} */ this._buffer = [];
    /** @internal @type {Map<string, State>|null} */ this._snapshot = null;
    /** @internal */ this._active = true;
    /**
     * @internal between subscribed and caught_up: deltas above `_head` may be owed to another,
     * overlapping subscription, so they move this one's cursor only when no other one selects them.
     */
    this._replaying = false;
    /** @internal transient errors in a row (backoff of the retry) */ this._retries = 0;
    /** @internal @type {any} */ this._retryTimer = null;
  }

  /** Resume cursor: the greatest LSN applied, or of the snapshot / last tick. */
  get cursor() {
    return this._cursor === null ? null : formatLSN(this._cursor);
  }

  /** Whether the subscription is still registered with its client. */
  get active() {
    return this._active;
  }

  /** Stops the subscription (tells the server if connected). Idempotent. */
  unsubscribe() {
    this._client._unsubscribe(this);
  }

  /**
   * @internal
   * @param {string} subject
   */
  _matches(subject) {
    if (this.top !== null) return false; // a leaderboard gets boards, never deltas
    return this._set ? this._set.has(subject) : subject.startsWith(/** @type {string} */ (this.prefix));
  }
}

/**
 * The repstream WebSocket client. See ClientOptions.
 */
export class RepstreamClient {
  /** @param {ClientOptions} opts */
  constructor(opts) {
    if (!opts || typeof opts.url !== 'string' || !opts.url) throw new TypeError('RepstreamClient: url is required');
    const codec = opts.codec ?? 'json';
    if (codec !== 'json') throw new RangeError(`RepstreamClient: codec ${JSON.stringify(codec)} is not supported (use 'json')`);
    const WS = opts.WebSocket ?? /** @type {any} */ (globalThis).WebSocket;
    if (typeof WS !== 'function') throw new TypeError('RepstreamClient: no WebSocket implementation; pass options.WebSocket');

    /** @readonly */ this.url = opts.url;
    /** @private */ this._WS = /** @type {WebSocketConstructor} */ (WS);
    /** @private @type {string|null} */ this._token = opts.token ?? null;
    /** @private */ this._getToken = opts.getToken ?? null;
    /** @private */ this._baseMs = opts.backoff?.baseMs ?? 500;
    /** @private */ this._capMs = opts.backoff?.capMs ?? 30000;
    /** @private */ this._stableMs = opts.backoff?.stableMs ?? 10000;
    /** @private */ this._connectTimeoutMs = opts.connectTimeoutMs ?? 15000;
    /** @private */ this._refreshLeadMs = opts.refreshLeadMs ?? 60000;
    /** @private */ this._random = opts.random ?? Math.random;
    /** @private */ this._setTimeout = opts.setTimeout ?? ((fn, ms) => globalThis.setTimeout(fn, ms));
    /** @private */ this._clearTimeout = opts.clearTimeout ?? ((h) => globalThis.clearTimeout(h));
    /** @private */ this._now = opts.now ?? Date.now;
    /** @private */ this._log = opts.logger ?? console;

    /** @type {((status: Status, detail: StatusDetail) => void) | null} */
    this.onStatus = opts.onStatus ?? null;
    /** @type {((err: RepstreamError) => void) | null} */
    this.onError = opts.onError ?? null;
    /** @type {((welcome: WelcomeMessage) => void) | null} */
    this.onWelcome = opts.onWelcome ?? null;

    /** @private @type {Status} */ this._status = STATUS.OFFLINE;
    /** Epoch of the history the cursors belong to (from the last welcome). @type {string|null} */
    this.epoch = opts.epoch ?? null;
    /** Server head LSN from the last welcome or tick. @type {string|null} */
    this.serverLsn = null;
    /** Server software, from welcome. @type {string|null} */
    this.server = null;

    /** @private @type {Set<Subscription>} */ this._subs = new Set();
    /** @private @type {Map<number, Subscription>} */ this._byReq = new Map();
    /** @private */ this._reqSeq = 0;
    /** @private @type {WebSocketLike|null} */ this._ws = null;
    /** @private */ this._welcomed = false;
    /** @private @type {number|null} */ this._welcomedAt = null;
    /** @private */ this._heartbeatMs = 0;
    /** @private */ this._watchdogMs = 0;
    /** @private */ this._heardAt = 0;
    /** @private */ this._wanted = false;
    /** @private */ this._gen = 0;
    /** @private */ this._attempt = 0;
    /** @private */ this._forceToken = false;
    /** @private @type {any} */ this._retryTimer = null;
    /** @private @type {any} */ this._watchdog = null;
    /** @private @type {any} */ this._refreshTimer = null;
  }

  /** Connection status: 'connecting' | 'catching_up' | 'live' | 'offline'. */
  get status() {
    return this._status;
  }

  /** Greatest resume cursor over the subscriptions (pg_lsn text), or null. */
  get cursor() {
    /** @type {bigint|null} */
    let c = null;
    for (const s of this._subs) if (s._cursor !== null) c = maxLSN(c, s._cursor);
    return c === null ? null : formatLSN(c);
  }

  /** The active subscriptions. @returns {Subscription[]} */
  get subscriptions() {
    return [...this._subs];
  }

  /** Opens the connection (and keeps it open, reconnecting, until close()). Idempotent. */
  connect() {
    if (this._wanted) return;
    this._wanted = true;
    this._attempt = 0;
    void this._open();
  }

  /** Closes the connection and stops reconnecting. Subscriptions, states and cursors are kept: connect() resumes. */
  close() {
    this._wanted = false;
    this._gen++;
    this._clearTimers();
    this._dropSocket(1000, 'client closed');
    for (const s of this._subs) this._clearSubRetry(s);
    for (const s of this._subs) if (s._phase !== 'failed') s._phase = 'idle';
    this._setStatus(STATUS.OFFLINE, {});
  }

  /**
   * Replaces the token. If the session is open, sends hello with it to extend the session.
   * @param {string} token
   */
  setToken(token) {
    this._token = token;
    if (this._welcomed) this._send(helloMessage(token));
  }

  /**
   * Subscribes to subjects or a prefix. Sent at once if connected, else on the next welcome.
   * @param {SubscribeOptions} opts
   * @returns {Subscription}
   */
  subscribe(opts) {
    if (!opts) throw new TypeError('subscribe: options required');
    const hasSubjects = Array.isArray(opts.subjects);
    const hasPrefix = typeof opts.prefix === 'string';
    if (hasSubjects === hasPrefix) throw new TypeError('subscribe: give exactly one of subjects or prefix');
    if (hasSubjects && /** @type {string[]} */ (opts.subjects).length === 0) throw new TypeError('subscribe: subjects is empty');
    if (opts.top !== undefined || opts.order !== undefined) {
      if (!hasPrefix) throw new TypeError('subscribe: a leaderboard (top) needs a prefix');
      if (!Number.isInteger(opts.top) || /** @type {number} */ (opts.top) < 1) throw new RangeError('subscribe: top must be an integer of at least 1');
      if (opts.order !== undefined && !BOARD_ORDERS.has(opts.order)) throw new RangeError('subscribe: order must be bayes, mean or count');
    }
    const sub = new Subscription(this, opts);
    this._subs.add(sub);
    if (this._welcomed) {
      this._sendSubscribe(sub);
      this._updateStatus();
    }
    return sub;
  }

  // ---- internals ------------------------------------------------------------

  /**
   * @internal
   * @param {Subscription} sub
   */
  _unsubscribe(sub) {
    if (!this._subs.delete(sub)) return;
    sub._active = false;
    this._clearSubRetry(sub);
    this._byReq.delete(sub._reqId);
    if (this._welcomed && (sub._phase === 'pending' || sub._phase === 'snapshot' || sub._phase === 'ready')) {
      // Leave alone what another subscription still asks the server for.
      if (sub.top !== null) {
        // A leaderboard stops with top and order; prefix subscriptions are left alone.
        const shared = [...this._subs].some((o) => o.prefix === sub.prefix && o.order === sub.order);
        if (!shared) this._send({ type: 'unsubscribe', id: ++this._reqSeq, prefix: sub.prefix, top: sub.top, order: sub.order });
      } else if (sub.prefix !== null) {
        const shared = [...this._subs].some((o) => o.prefix === sub.prefix && o.top === null);
        if (!shared) this._send({ type: 'unsubscribe', id: ++this._reqSeq, prefix: sub.prefix });
      } else {
        const kept = new Set();
        for (const o of this._subs) if (o.subjects) for (const s of o.subjects) kept.add(s);
        const subjects = /** @type {ReadonlyArray<string>} */ (sub.subjects).filter((s) => !kept.has(s));
        if (subjects.length) this._send({ type: 'unsubscribe', id: ++this._reqSeq, subjects });
      }
    }
    sub._phase = 'idle';
    sub._buffer = [];
    sub._snapshot = null;
    this._updateStatus();
  }

  /** @private */
  async _open() {
    const gen = ++this._gen;
    this._setStatus(STATUS.CONNECTING, { attempt: this._attempt });
    let token;
    try {
      token = await this._currentToken();
    } catch (err) {
      if (gen !== this._gen || !this._wanted) return;
      this._emitError({ code: 'token', message: `getToken failed: ${errMessage(err)}`, cause: err });
      this._afterFailure({ reason: 'getToken failed' });
      return;
    }
    if (gen !== this._gen || !this._wanted) return;

    /** @type {WebSocketLike} */
    let ws;
    try {
      ws = new this._WS(this._resolveUrl(), [SUBPROTOCOL_JSON]);
    } catch (err) {
      this._emitError({ code: 'socket', message: `cannot open WebSocket: ${errMessage(err)}`, cause: err });
      this._afterFailure({ reason: 'cannot open WebSocket' });
      return;
    }
    this._ws = ws;
    this._welcomed = false;
    this._welcomedAt = null;
    this._armWatchdog(this._connectTimeoutMs);
    ws.onopen = () => {
      if (ws !== this._ws) return;
      this._send(helloMessage(token)); // hello is always the first message
    };
    ws.onmessage = (ev) => {
      if (ws !== this._ws) return;
      this._onMessage(ev.data);
    };
    ws.onerror = () => {}; // a close event follows and carries what we need
    ws.onclose = (ev) => {
      if (ws !== this._ws) return;
      this._onClose(ev?.code ?? 1006, ev?.reason ?? '');
    };
  }

  /** @private */
  async _currentToken() {
    if (this._getToken) {
      const stale = !this._token || this._forceToken || this._refreshDelay(this._token) <= 0;
      if (stale) {
        const t = await this._getToken();
        if (typeof t !== 'string' || !t) throw new Error('getToken returned no token');
        this._token = t;
        this._forceToken = false;
      }
    }
    return this._token ?? '';
  }

  /**
   * Milliseconds until the token should be refreshed (Infinity if it has no exp).
   * @private
   * @param {string} token
   */
  _refreshDelay(token) {
    const exp = tokenExpiry(token);
    if (exp === null) return Infinity;
    const left = exp - this._now();
    const lead = Math.min(this._refreshLeadMs, Math.max(1000, left / 5));
    return left - lead;
  }

  /** @private */
  _resolveUrl() {
    const url = this.url;
    if (/^wss?:\/\//i.test(url)) return url;
    const loc = /** @type {any} */ (globalThis).location;
    if (!loc) return url;
    const u = new URL(url, loc.href);
    if (u.protocol === 'http:') u.protocol = 'ws:';
    else if (u.protocol === 'https:') u.protocol = 'wss:';
    return u.href;
  }

  /**
   * @private
   * @param {unknown} data
   */
  _onMessage(data) {
    if (typeof data !== 'string') {
      this._log.warn('repstream: ignoring a binary frame (codec is json)');
      return;
    }
    let msg;
    try {
      msg = JSON.parse(data);
    } catch (err) {
      this._log.warn('repstream: ignoring a frame that is not JSON', err);
      return;
    }
    if (!msg || typeof msg !== 'object') return;
    this._kickWatchdog();
    try {
      switch (msg.type) {
        case 'welcome':
          this._onWelcome(msg);
          break;
        case 'subscribed':
          this._onSubscribed(msg);
          break;
        case 'snapshot':
          this._onSnapshot(msg);
          break;
        case 'delta':
          this._onDeltas([msg]);
          break;
        case 'deltas':
          this._onDeltas(Array.isArray(msg.items) ? msg.items : []);
          break;
        case 'tick':
          this._onTick(msg);
          break;
        case 'caught_up':
          this._onCaughtUp(msg);
          break;
        case 'board':
          this._onBoard(msg);
          break;
        case 'error':
          this._onServerError(msg);
          break;
        case 'pong':
        case 'unsubscribed':
          break;
        default:
          this._log.debug?.('repstream: ignoring message of type', msg.type);
      }
    } catch (err) {
      // A malformed message must not wedge the client: log it and go on.
      this._log.error('repstream: failed to handle a message', msg?.type, err);
    }
  }

  /**
   * @private
   * @param {WelcomeMessage} msg
   */
  _onWelcome(msg) {
    if (this._welcomed) {
      // Answer to a refreshing hello. A new epoch mid-session: restart clean.
      if (msg.epoch !== this.epoch) {
        this._resetAll({ reason: 'epoch', epoch: msg.epoch, previousEpoch: this.epoch });
        this.epoch = msg.epoch;
        this._dropSocket(1000, 'epoch changed');
        this._clearTimers();
        void this._open();
      }
      return;
    }
    this._welcomed = true;
    this._welcomedAt = this._now();
    this.serverLsn = msg.lsn ?? null;
    this.server = msg.server ?? null;
    this._heartbeatMs = typeof msg.heartbeat_ms === 'number' && msg.heartbeat_ms > 0 ? msg.heartbeat_ms : 0;
    if (this.epoch !== null && msg.epoch !== this.epoch) {
      this._resetAll({ reason: 'epoch', epoch: msg.epoch, previousEpoch: this.epoch });
    }
    this.epoch = msg.epoch ?? null;
    this._armWatchdog(this._heartbeatMs ? Math.max(5000, this._heartbeatMs * 2.5) : 0);
    this._scheduleRefresh();
    this._call(this.onWelcome, msg);
    for (const sub of this._subs) this._sendSubscribe(sub);
    this._updateStatus();
  }

  /**
   * Drops every subscription's states and cursor and tells it.
   * @private
   * @param {ResetInfo} info
   */
  _resetAll(info) {
    for (const sub of this._subs) {
      sub.states.clear();
      sub._lsns.clear();
      sub._cursor = null;
      sub._cursorEpoch = null;
      sub._buffer = [];
      sub.entries = [];
      this._call(sub.onReset, info, sub);
    }
  }

  /**
   * @private
   * @param {Subscription} sub
   */
  _sendSubscribe(sub) {
    this._byReq.delete(sub._reqId);
    const id = ++this._reqSeq;
    sub._reqId = id;
    sub._phase = 'pending';
    sub._replaying = true;
    sub._head = null;
    sub._resetPending = false;
    sub._buffer = [];
    sub._snapshot = null;
    sub.caughtUp = false;
    sub.error = null;
    this._byReq.set(id, sub);
    /** @type {Record<string, unknown>} */
    const m = { type: 'subscribe', id };
    if (sub.subjects) m.subjects = sub.subjects;
    else m.prefix = sub.prefix;
    if (sub._cursor !== null) {
      m.since = formatLSN(sub._cursor);
      // Lets the server answer a cursor of another history with a reset snapshot.
      if (sub._cursorEpoch) m.epoch = sub._cursorEpoch;
    }
    if (sub.throttleMs !== null) m.throttle_ms = sub.throttleMs;
    if (sub.top !== null) {
      m.top = sub.top;
      m.order = sub.order;
    }
    this._send(m);
  }

  /**
   * @private
   * @param {{id: number, lsn: string, mode: string, reset?: boolean}} msg
   */
  _onSubscribed(msg) {
    const sub = this._byReq.get(msg.id);
    if (!sub) return;
    if (sub._phase === 'ready' && sub._replaying && msg.mode === 'snapshot') {
      // The server cut the replay short (retention pruned the log under it): a reset snapshot follows.
      sub._phase = 'pending';
      sub._buffer = [];
      sub._snapshot = null;
      sub.caughtUp = false;
    }
    if (sub._phase !== 'pending') return;
    sub._replaying = true;
    sub._head = lsnOrZero(msg.lsn);
    if (msg.mode === 'board') {
      // The board follows; it is exact whatever the cursor was.
      sub._phase = 'ready';
      sub._replaying = false;
      this._updateStatus();
      return;
    }
    if (msg.mode === 'snapshot') {
      sub._phase = 'snapshot';
      sub._resetPending = !!msg.reset;
    } else {
      sub._phase = 'ready';
      if (sub._cursor !== null && sub._cursor >= sub._head) sub.caughtUp = true;
    }
    this._updateStatus();
  }

  /**
   * A snapshot may come in chunks: every chunk but the last has `more: true`.
   * The states are swapped in when the last chunk arrives.
   * @private
   * @param {{id: number, lsn: string, states?: State[], reset?: boolean, more?: boolean}} msg
   */
  _onSnapshot(msg) {
    const sub = this._byReq.get(msg.id);
    if (!sub || (sub._phase !== 'snapshot' && sub._phase !== 'pending')) return;
    sub._phase = 'snapshot';
    if (msg.reset) sub._resetPending = true;
    const chunk = (sub._snapshot ??= new Map());
    for (const st of Array.isArray(msg.states) ? msg.states : []) {
      if (st && typeof st.subject === 'string') chunk.set(st.subject, st);
    }
    if (msg.more) return;
    sub._snapshot = null;
    const head = lsnOrZero(msg.lsn);
    const reset = sub._resetPending;
    if (reset) this._call(sub.onReset, { reason: 'cursor_too_old', epoch: this.epoch }, sub);
    sub.states.clear();
    sub._lsns.clear();
    for (const [subject, st] of chunk) {
      sub.states.set(subject, st);
      sub._lsns.set(subject, lsnOrZero(st.lsn));
    }
    sub._cursor = head;
    sub._cursorEpoch = this.epoch;
    sub._head = head;
    sub._phase = 'ready';
    sub._resetPending = false;
    sub.caughtUp = true;
    const early = sub._buffer;
    sub._buffer = [];
    this._call(sub.onSnapshot, sub.states, { lsn: formatLSN(head), reset }, sub);
    // Live deltas that overtook the snapshot (for overlapping subscriptions): their states are
    // newer, but they move the cursor only if no other subscription may be owed them.
    for (const d of early) this._apply(sub, d, lsnOrZero(d.lsn), !this._othersSelect(sub, d.subject));
    this._updateStatus();
  }

  /**
   * @private
   * @param {Delta[]} items
   */
  _onDeltas(items) {
    /** @type {Set<Subscription>} */
    const touched = new Set();
    for (const d of items) {
      if (!d || typeof d.subject !== 'string' || !d.after) continue;
      let lsn;
      try {
        lsn = parseLSN(d.lsn);
      } catch {
        this._log.warn('repstream: ignoring a delta with a bad lsn', d.lsn);
        continue;
      }
      for (const sub of this._subs) {
        if (!sub._matches(d.subject)) continue;
        if (sub._phase === 'snapshot') {
          sub._buffer.push(d); // lives only until the snapshot's last chunk
          continue;
        }
        if (sub._phase !== 'ready') continue;
        // Advance a cursor only from deltas owed to its subscription. While it catches up, a delta
        // at or below its H is its replay; one above H is its own only if no other subscription
        // selects it (then its replay is over: the server sends what it buffered only after).
        let owed = true;
        if (sub._replaying && (sub._head === null || lsn > sub._head)) {
          owed = !this._othersSelect(sub, d.subject);
          if (owed) sub._replaying = false;
        }
        if (this._apply(sub, d, lsn, owed)) touched.add(sub);
      }
    }
    // A frame never splits a transaction, so the greatest applied LSN is a safe cursor.
    let changed = false;
    for (const sub of touched) {
      if (!sub.caughtUp && sub._head !== null && sub._cursor !== null && sub._cursor >= sub._head) {
        sub.caughtUp = true;
        changed = true;
      }
    }
    if (changed) this._updateStatus();
  }

  /**
   * Applies one delta to a subscription if it is newer than the state held.
   * @private
   * @param {Subscription} sub
   * @param {Delta} d
   * @param {bigint} lsn
   * @param {boolean} [advance=true]  whether the delta may move the cursor (it is owed to sub)
   * @returns {boolean} whether it was applied
   */
  _apply(sub, d, lsn, advance = true) {
    if (advance) {
      // Owed to sub: everything it is owed up to lsn has come, even if its state is held already.
      sub._cursor = maxLSN(sub._cursor, lsn);
      sub._cursorEpoch = this.epoch;
    }
    const held = sub._lsns.get(d.subject);
    if (held !== undefined && lsn <= held) return false;
    sub.states.set(d.subject, d.after);
    sub._lsns.set(d.subject, lsn);
    this._call(sub.onDelta, d, d.after, sub);
    return true;
  }

  /**
   * @private
   * @param {{lsn: string}} msg
   */
  _onTick(msg) {
    let t;
    try {
      t = parseLSN(msg.lsn);
    } catch {
      return;
    }
    this.serverLsn = msg.lsn;
    let changed = false;
    for (const sub of this._subs) {
      if (sub._phase !== 'ready') continue; // before its snapshot a tick says nothing about it
      sub._replaying = false; // ticks are held back while any subscription catches up
      sub._cursor = maxLSN(sub._cursor, t);
      sub._cursorEpoch = this.epoch;
      if (!sub.caughtUp && (sub._head === null || t >= sub._head)) {
        sub.caughtUp = true;
        changed = true;
      }
    }
    if (changed) this._updateStatus();
  }

  /**
   * The server ended a subscription's catch-up: everything it was owed up to msg.lsn was sent.
   * @private
   * @param {{id: number, lsn: string}} msg
   */
  _onCaughtUp(msg) {
    const sub = this._byReq.get(msg.id);
    if (!sub || sub._phase !== 'ready') return;
    let l;
    try {
      l = parseLSN(msg.lsn);
    } catch {
      return;
    }
    sub._replaying = false;
    sub._retries = 0;
    sub._cursor = maxLSN(sub._cursor, l);
    sub._cursorEpoch = this.epoch;
    if (!sub.caughtUp) {
      sub.caughtUp = true;
      this._updateStatus();
    }
  }

  /**
   * A leaderboard's new top: entries, rank 1 first, and the moves since the previous one.
   * @private
   * @param {{id: number, lsn: string, order?: string, entries?: BoardEntry[], moves?: BoardMove[]}} msg
   */
  _onBoard(msg) {
    const sub = this._byReq.get(msg.id);
    if (!sub || sub.top === null || sub._phase !== 'ready') return;
    let l;
    try {
      l = parseLSN(msg.lsn);
    } catch {
      return;
    }
    const entries = Array.isArray(msg.entries) ? msg.entries.filter((e) => e && typeof e.subject === 'string') : [];
    sub.entries = entries;
    sub._cursor = maxLSN(sub._cursor, l);
    sub._cursorEpoch = this.epoch;
    sub._retries = 0;
    const first = !sub.caughtUp;
    sub.caughtUp = true;
    this._call(sub.onBoard, { lsn: msg.lsn, order: /** @type {BoardOrder} */ (msg.order ?? sub.order), entries,
      moves: Array.isArray(msg.moves) ? msg.moves : [] }, sub);
    if (first) this._updateStatus();
  }

  /**
   * Whether a subscription other than sub may be owed deltas of subject.
   * @private
   * @param {Subscription} sub
   * @param {string} subject
   */
  _othersSelect(sub, subject) {
    for (const o of this._subs) {
      if (o !== sub && (o._phase === 'pending' || o._phase === 'snapshot' || o._phase === 'ready') && o._matches(subject)) return true;
    }
    return false;
  }

  /**
   * @private
   * @param {Subscription} sub
   */
  _clearSubRetry(sub) {
    if (sub._retryTimer !== null) this._clearTimeout(sub._retryTimer);
    sub._retryTimer = null;
  }

  /**
   * Resubscribes after a transient error, with backoff, on the same socket.
   * @private
   * @param {Subscription} sub
   */
  _retrySubscription(sub) {
    this._clearSubRetry(sub);
    const delay = backoffDelay(sub._retries++, this._baseMs, this._capMs, this._random);
    const ws = this._ws;
    sub._retryTimer = this._setTimeout(() => {
      sub._retryTimer = null;
      if (ws !== this._ws || !this._welcomed || !sub._active || sub._phase !== 'failed') return;
      this._sendSubscribe(sub);
      this._updateStatus();
    }, Math.min(delay, MAX_TIMEOUT_MS));
  }

  /**
   * @private
   * @param {{id?: number, code?: string, message?: string}} msg
   */
  _onServerError(msg) {
    /** @type {RepstreamError} */
    const err = { code: String(msg.code ?? 'internal'), message: String(msg.message ?? '') };
    if (typeof msg.id === 'number') err.id = msg.id;
    const sub = typeof msg.id === 'number' ? this._byReq.get(msg.id) : undefined;
    // A request fails before its subscribed, or (the server dropped it) during its catch-up;
    // a refreshed token that no longer covers it ends it at any time.
    const failing = sub && (sub._phase === 'pending' || (sub._phase !== 'idle' && sub._phase !== 'failed' && (sub._replaying || err.code === 'forbidden')));
    if (sub && failing) {
      if (err.code === 'bad_cursor' && sub._phase === 'pending') {
        // The cursor is unusable: start this subscription over from a snapshot.
        sub.states.clear();
        sub._lsns.clear();
        sub._cursor = null;
        sub._cursorEpoch = null;
        this._call(sub.onReset, { reason: 'bad_cursor', epoch: this.epoch }, sub);
        this._sendSubscribe(sub);
      } else {
        // Retried on the next connection (a new token may allow it); a transient error also
        // with backoff on this one.
        sub._phase = 'failed';
        sub._buffer = [];
        sub._snapshot = null;
        sub.error = err;
        sub.caughtUp = true;
        this._call(sub.onError, err, sub);
        if (TRANSIENT.has(err.code)) this._retrySubscription(sub);
      }
    }
    this._log.warn(`repstream: server error ${err.code}: ${err.message}`);
    this._emitError(err);
    this._updateStatus();
  }

  /**
   * @private
   * @param {number} code
   * @param {string} reason
   */
  _onClose(code, reason) {
    this._ws = null;
    const refusedAtHello = !this._welcomed;
    const wasStable = this._welcomedAt !== null && this._now() - this._welcomedAt >= this._stableMs;
    this._welcomed = false;
    this._welcomedAt = null;
    this._clearTimers();
    for (const s of this._subs) this._clearSubRetry(s);
    if (wasStable) this._attempt = 0;
    for (const s of this._subs) if (s._phase !== 'failed') s._phase = 'idle';
    switch (code) {
      case 4001:
        if (!this._getToken) {
          this._emitError({ code: 'unauthenticated', message: reason || 'token rejected or expired', closeCode: code });
          this._wanted = false;
          this._setStatus(STATUS.OFFLINE, { closeCode: code, reason });
          return;
        }
        this._forceToken = true;
        if (refusedAtHello) {
          // The token getToken gave was refused outright (malformed, wrong
          // key, expired on arrival): the application must hear of it, not
          // watch the client loop between connecting and offline.
          this._log.warn(`repstream: the server refused the token from getToken (4001): ${reason}`);
          this._emitError({ code: 'unauthenticated', message: reason || 'token refused', closeCode: code });
        } else {
          this._log.info('repstream: token rejected or expired (4001); reconnecting with a fresh token');
        }
        break;
      case 4008:
        this._log.warn('repstream: slow consumer (4008); reconnecting to resume');
        break;
      case 1001:
        this._log.info('repstream: server going away (1001); reconnecting');
        break;
      case 4000:
      case 1009:
        this._log.error(`repstream: server closed with ${code} (${code === 4000 ? 'malformed message' : 'frame too large'}): ${reason}`);
        this._emitError({ code: 'protocol', message: reason || `closed with ${code}`, closeCode: code });
        break;
      case 1008:
      case 4029:
        this._log.warn(`repstream: server refused the connection (${code}): ${reason}`);
        this._emitError({ code: code === 1008 ? 'policy' : 'too_many_connections', message: reason || `closed with ${code}`, closeCode: code });
        break;
      default:
        this._log.info(`repstream: connection closed (${code}) ${reason}`);
    }
    this._afterFailure({ closeCode: code, reason });
  }

  /**
   * Goes offline and schedules the next attempt (if still wanted).
   * @private
   * @param {StatusDetail} detail
   */
  _afterFailure(detail) {
    if (!this._wanted) return;
    const attempt = this._attempt++;
    const delay = backoffDelay(attempt, this._baseMs, this._capMs, this._random);
    const gen = this._gen;
    this._retryTimer = this._setTimeout(() => {
      this._retryTimer = null;
      if (this._wanted && gen === this._gen) void this._open();
    }, Math.min(delay, MAX_TIMEOUT_MS));
    this._setStatus(STATUS.OFFLINE, { ...detail, retryInMs: delay, attempt });
  }

  /** @private */
  _scheduleRefresh() {
    if (!this._getToken || !this._token) return;
    const delay = this._refreshDelay(this._token);
    if (!Number.isFinite(delay)) return;
    const ws = this._ws;
    const oldExp = tokenExpiry(this._token);
    const wait = Math.max(0, delay);
    this._refreshTimer = this._setTimeout(async () => {
      this._refreshTimer = null;
      if (wait > MAX_TIMEOUT_MS) {
        // setTimeout cannot wait that long: this was a step of at most MAX_TIMEOUT_MS; wait again.
        if (ws === this._ws && this._welcomed) this._scheduleRefresh();
        return;
      }
      let t;
      try {
        t = await /** @type {() => (string|Promise<string>)} */ (this._getToken)();
      } catch (err) {
        this._emitError({ code: 'token', message: `getToken failed: ${errMessage(err)}`, cause: err });
        return; // the server will close with 4001 at exp; we reconnect with a forced refresh
      }
      if (ws !== this._ws || !this._welcomed || typeof t !== 'string' || !t) return;
      this._token = t;
      this._send(helloMessage(t));
      const newExp = tokenExpiry(t);
      if (newExp !== null && oldExp !== null && newExp <= oldExp) {
        this._log.warn('repstream: getToken returned a token that does not expire later; not refreshing again');
        return;
      }
      this._scheduleRefresh();
    }, Math.min(wait, MAX_TIMEOUT_MS));
  }

  /**
   * Drops the connection if nothing is heard for `ms` (0 disables). Messages
   * only stamp `_heardAt`; the timer re-arms itself for the time left, so a
   * busy stream costs no timer churn.
   * @private
   * @param {number} ms
   */
  _armWatchdog(ms) {
    if (this._watchdog !== null) this._clearTimeout(this._watchdog);
    this._watchdog = null;
    this._watchdogMs = ms;
    this._heardAt = this._now();
    if (!ms) return;
    const ws = this._ws;
    const check = () => {
      this._watchdog = null;
      if (ws !== this._ws) return;
      const left = this._heardAt + ms - this._now();
      if (left > 0) {
        this._watchdog = this._setTimeout(check, Math.min(left, MAX_TIMEOUT_MS)); // re-armed until really due
        return;
      }
      this._log.warn(`repstream: nothing heard for ${ms} ms; reconnecting`);
      this._ws = null;
      closeQuietly(ws, 1000, 'heartbeat timeout');
      this._onClose(1006, 'heartbeat timeout');
    };
    this._watchdog = this._setTimeout(check, Math.min(ms, MAX_TIMEOUT_MS));
  }

  /** @private */
  _kickWatchdog() {
    this._heardAt = this._now();
  }

  /** @private */
  _clearTimers() {
    for (const k of /** @type {const} */ (['_retryTimer', '_watchdog', '_refreshTimer'])) {
      if (this[k] !== null) this._clearTimeout(this[k]);
      this[k] = null;
    }
  }

  /**
   * Detaches and closes the current socket, if any.
   * @private
   * @param {number} code
   * @param {string} reason
   */
  _dropSocket(code, reason) {
    const ws = this._ws;
    this._ws = null;
    this._welcomed = false;
    this._welcomedAt = null;
    if (ws) closeQuietly(ws, code, reason);
  }

  /**
   * @private
   * @param {object} msg
   */
  _send(msg) {
    const ws = this._ws;
    if (!ws || ws.readyState !== OPEN) return false;
    try {
      ws.send(JSON.stringify(msg));
      return true;
    } catch (err) {
      this._log.warn('repstream: send failed', err);
      return false;
    }
  }

  /** @private */
  _updateStatus() {
    if (!this._welcomed) return;
    let live = true;
    for (const s of this._subs) if (!s.caughtUp) live = false;
    this._setStatus(live ? STATUS.LIVE : STATUS.CATCHING_UP, {});
  }

  /**
   * @private
   * @param {Status} status
   * @param {StatusDetail} detail
   */
  _setStatus(status, detail) {
    if (status === this._status && status !== STATUS.OFFLINE) return;
    if (status === this._status && !('retryInMs' in detail) && !('closeCode' in detail)) return;
    this._status = status;
    this._call(this.onStatus, status, detail);
  }

  /**
   * @private
   * @param {RepstreamError} err
   */
  _emitError(err) {
    this._call(this.onError, err);
  }

  /**
   * Calls an application callback; its exceptions must not break the client.
   * @private
   * @param {Function|null|undefined} fn
   * @param {...any} args
   */
  _call(fn, ...args) {
    if (typeof fn !== 'function') return;
    try {
      fn(...args);
    } catch (err) {
      this._log.error('repstream: callback threw', err);
    }
  }
}

/**
 * Detaches a socket's handlers and closes it.
 * @param {WebSocketLike|null} ws
 * @param {number} code
 * @param {string} reason
 */
function closeQuietly(ws, code, reason) {
  if (!ws) return;
  ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
  try {
    ws.close(code, reason);
  } catch {
    /* already closed */
  }
}

/** @param {string} token */
function helloMessage(token) {
  return token ? { type: 'hello', token } : { type: 'hello' };
}

/** @param {unknown} err */
function errMessage(err) {
  return err instanceof Error ? err.message : String(err);
}
