// Type declarations for repstream.js, the repstream browser client (protocol v1).

/** WebSocket subprotocol of the JSON codec. */
export declare const SUBPROTOCOL_JSON: 'repstream.v1.json';

export type Status = 'connecting' | 'catching_up' | 'live' | 'offline';

export declare const STATUS: Readonly<{
  CONNECTING: 'connecting';
  CATCHING_UP: 'catching_up';
  LIVE: 'live';
  OFFLINE: 'offline';
}>;

/** A subject's reputation after the deltas up to `lsn`. */
export interface State {
  subject: string;
  count: number;
  sum: number;
  mean: number;
  bayes: number;
  /** counts per star, for integer scales */
  hist?: number[];
  version: number;
  /** pg_lsn text, "X/Y" */
  lsn: string;
  /** RFC 3339 */
  updated_at: string;
}

/** Differences a delta made to a state's figures. */
export interface Change {
  count: number;
  sum: number;
  mean: number;
  bayes: number;
}

/** One source transaction's effect on one subject. */
export interface Delta {
  type?: 'delta';
  subject: string;
  lsn: string;
  version: number;
  after: State;
  change: Change;
  /** > 1 when the server folded that many deltas into this one (throttling) */
  coalesced?: number;
}

export interface ResetInfo {
  /**
   * 'epoch': the server's history changed (welcome.epoch differs);
   * 'cursor_too_old': the server answered a resume with a snapshot marked reset;
   * 'bad_cursor': the server rejected the cursor.
   */
  reason: 'epoch' | 'cursor_too_old' | 'bad_cursor';
  epoch?: string | null;
  previousEpoch?: string | null;
}

export interface SnapshotInfo {
  /** the snapshot's LSN, now the subscription's cursor */
  lsn: string;
  /** true if the snapshot replaced a cursor that was too old */
  reset: boolean;
}

/** Codes of the server's `error` message (api/PROTOCOL.md, "Server → client"). */
export type ServerErrorCode =
  | 'bad_request'
  | 'unauthenticated'
  | 'forbidden'
  | 'bad_cursor'
  | 'too_many_subscriptions'
  | 'internal';

/**
 * Codes the client reports itself:
 * 'unauthenticated' the server refused the token (close 4001: at hello, or at any time without getToken);
 * 'token' getToken threw or returned no token;
 * 'socket' the WebSocket could not be opened;
 * 'protocol' the server closed with 4000 or 1009 (a client bug);
 * 'policy' the server refused this page's origin (close 1008: see api.allowed_origins);
 * 'too_many_connections' the server is at api.max_connections (close 4029).
 */
export type ClientErrorCode = 'unauthenticated' | 'token' | 'socket' | 'protocol' | 'policy' | 'too_many_connections';

export interface RepstreamError {
  /** a ServerErrorCode for an `error` message (then `id` is set), else a ClientErrorCode;
   *  treat any other string (a later server's addition) as a failed request */
  code: ServerErrorCode | ClientErrorCode | (string & {});
  message: string;
  /** request id the server error refers to */
  id?: number;
  /** WebSocket close code, when the error is a close */
  closeCode?: number;
  cause?: unknown;
}

export interface StatusDetail {
  closeCode?: number;
  reason?: string;
  /** delay before the next attempt, when one is scheduled */
  retryInMs?: number;
  /** number of the attempt (0 = first retry) */
  attempt?: number;
}

export interface WelcomeMessage {
  type: 'welcome';
  epoch: string;
  lsn: string;
  heartbeat_ms?: number;
  server?: string;
}

/** The part of the WebSocket interface the client uses. */
export interface WebSocketLike {
  readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: any }) => void) | null;
  onclose: ((ev: { code: number; reason?: string }) => void) | null;
  onerror: ((ev: any) => void) | null;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface Logger {
  debug(...args: any[]): void;
  info(...args: any[]): void;
  warn(...args: any[]): void;
  error(...args: any[]): void;
}

export interface BackoffOptions {
  /** first retry waits up to this long (default 500) */
  baseMs?: number;
  /** no retry waits longer than this (default 30000) */
  capMs?: number;
  /** a connection welcomed this long before it drops resets the backoff (default 10000) */
  stableMs?: number;
}

export interface ClientOptions {
  /** ws:// or wss:// URL of /v1/stream; a path such as '/v1/stream' is resolved against location */
  url: string;
  /** a JWT, used as is (a 4001 close then stops the client: call setToken() and connect()) */
  token?: string;
  /** returns a fresh JWT: called on connect when the token is missing or expiring, after a 4001 close,
   *  and before `exp` to extend the session (hello is sent again) */
  getToken?: () => string | Promise<string>;
  codec?: 'json';
  /** epoch the cursors passed as `since` belong to, when they were persisted */
  epoch?: string | null;
  backoff?: BackoffOptions;
  /** drop a connection not welcomed by then (default 15000) */
  connectTimeoutMs?: number;
  /** refresh the token at most this long before exp (default 60000) */
  refreshLeadMs?: number;
  onStatus?: (status: Status, detail: StatusDetail) => void;
  onError?: (err: RepstreamError) => void;
  onWelcome?: (welcome: WelcomeMessage) => void;
  /** defaults to globalThis.WebSocket */
  WebSocket?: WebSocketConstructor;
  /** backoff jitter source, defaults to Math.random */
  random?: () => number;
  setTimeout?: (fn: () => void, ms: number) => any;
  clearTimeout?: (handle: any) => void;
  /** defaults to Date.now */
  now?: () => number;
  /** defaults to console */
  logger?: Logger;
}

interface SubscribeCommon {
  /** server-side coalescing window (throttle_ms) */
  throttleMs?: number;
  /** resume from this cursor (pass the client `epoch` it belongs to) */
  since?: string;
  onSnapshot?: (states: ReadonlyMap<string, State>, info: SnapshotInfo, sub: Subscription) => void;
  /** called for each delta applied (newer than the state held), after the state is updated */
  onDelta?: (delta: Delta, state: State, sub: Subscription) => void;
  /** the subscription's states and cursor were dropped; a snapshot follows */
  onReset?: (info: ResetInfo, sub: Subscription) => void;
  onError?: (err: RepstreamError, sub: Subscription) => void;
}

export type BoardOrder = 'bayes' | 'mean' | 'count';

/** a leaderboard entry: the subject's state and its rank (1 first) */
export type BoardEntry = State & { rank: number };

export interface BoardMove {
  subject: string;
  /** previous rank, null if it entered the board */
  from: number | null;
  /** new rank, null if it left the board */
  to: number | null;
}

export interface BoardUpdate {
  /** the board is exact at this position (now the cursor) */
  lsn: string;
  order: BoardOrder;
  /** rank 1 first */
  entries: BoardEntry[];
  /** rank changes since the previous board (every entry on the first) */
  moves: BoardMove[];
}

export type SubscribeOptions =
  | (SubscribeCommon & { subjects: string[]; prefix?: undefined; top?: undefined; order?: undefined })
  | (SubscribeCommon & { prefix: string; subjects?: undefined; top?: undefined; order?: undefined })
  | (SubscribeCommon & {
      /** a leaderboard of the prefix: the server keeps the ranking and sends it when its top changes */
      prefix: string;
      subjects?: undefined;
      /** 1 to the server's api.max_board_top (default 100) */
      top: number;
      order?: BoardOrder;
      onBoard?: (board: BoardUpdate, sub: Subscription) => void;
    });

export declare class Subscription {
  private constructor();
  readonly subjects: ReadonlyArray<string> | null;
  readonly prefix: string | null;
  readonly throttleMs: number | null;
  /** current state per subject; the same Map for the subscription's life (cleared on reset) */
  readonly states: ReadonlyMap<string, State>;
  /** resume cursor: the greatest LSN applied, or of the snapshot / last tick */
  readonly cursor: string | null;
  /** true once caught up with the server head */
  readonly caughtUp: boolean;
  /** last error the server returned for this subscription */
  readonly error: RepstreamError | null;
  /** whether it is still registered with its client */
  readonly active: boolean;
  onSnapshot: SubscribeCommon['onSnapshot'];
  onDelta: SubscribeCommon['onDelta'];
  onReset: SubscribeCommon['onReset'];
  onError: SubscribeCommon['onError'];
  /** leaderboard length, or null for a plain subscription */
  readonly top: number | null;
  /** leaderboard order, or null */
  readonly order: BoardOrder | null;
  /** a leaderboard's entries, rank 1 first (replaced by each board) */
  readonly entries: BoardEntry[];
  onBoard: ((board: BoardUpdate, sub: Subscription) => void) | undefined;
  /** stops the subscription (tells the server if connected); idempotent */
  unsubscribe(): void;
}

export declare class RepstreamClient {
  constructor(opts: ClientOptions);
  readonly url: string;
  /** 'connecting' | 'catching_up' | 'live' | 'offline' */
  readonly status: Status;
  /** greatest resume cursor over the subscriptions, or null */
  readonly cursor: string | null;
  /** epoch of the history the cursors belong to */
  epoch: string | null;
  /** server head LSN from the last welcome or tick */
  serverLsn: string | null;
  /** server software, from welcome */
  server: string | null;
  readonly subscriptions: Subscription[];
  onStatus: ((status: Status, detail: StatusDetail) => void) | null;
  onError: ((err: RepstreamError) => void) | null;
  onWelcome: ((welcome: WelcomeMessage) => void) | null;
  /** opens the connection and keeps it open (reconnecting) until close(); idempotent */
  connect(): void;
  /** closes and stops reconnecting; subscriptions, states and cursors are kept */
  close(): void;
  /** replaces the token; sends hello with it if the session is open */
  setToken(token: string): void;
  subscribe(opts: SubscribeOptions): Subscription;
}

/** parses "X/Y" (hex) into X<<32 | Y; throws RangeError if malformed */
export declare function parseLSN(text: string): bigint;
/** formats an LSN as upper-case "X/Y" */
export declare function formatLSN(lsn: bigint): string;
/** compares LSNs as 64-bit unsigned integers */
export declare function compareLSN(a: string | bigint, b: string | bigint): -1 | 0 | 1;
/** the JWT's exp in ms since the epoch (unverified), or null */
export declare function tokenExpiry(token: string): number | null;
/** full-jitter backoff: uniform in [0, min(capMs, baseMs * 2^attempt)) */
export declare function backoffDelay(attempt: number, baseMs: number, capMs: number, random?: () => number): number;
