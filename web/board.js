// @ts-check
/**
 * The dashboard's logic that needs no DOM: ranking, drop alerts, rates,
 * histogram labels and the chart's geometry. Tested by web/test/board.test.mjs.
 * @module board
 */

/** @typedef {import('./repstream.js').State} State */

/**
 * Leaderboard order: Bayesian score descending, then count descending, then subject.
 * @param {State} a
 * @param {State} b
 */
export function compareStates(a, b) {
  return b.bayes - a.bayes || b.count - a.count || (a.subject < b.subject ? -1 : a.subject > b.subject ? 1 : 0);
}

/**
 * The first `n` states in leaderboard order, in one pass (O(m log n)).
 * @param {Iterable<State>} states
 * @param {number} n
 * @returns {State[]}
 */
export function topN(states, n) {
  /** @type {State[]} */
  const top = [];
  if (n <= 0) return top;
  for (const s of states) {
    if (top.length === n && compareStates(s, top[n - 1]) >= 0) continue;
    let lo = 0;
    let hi = top.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (compareStates(top[mid], s) <= 0) lo = mid + 1;
      else hi = mid;
    }
    top.splice(lo, 0, s);
    if (top.length > n) top.pop();
  }
  return top;
}

/**
 * Keeps the top `limit` subjects of a states map and recomputes them only
 * when a change could alter them.
 */
export class Ranking {
  /** @param {number} limit */
  constructor(limit) {
    this.limit = limit;
    /** subjects in rank order @type {string[]} */
    this.order = [];
    /** @private @type {Set<string>} */ this._in = new Set();
    /** @private @type {State|null} */ this._last = null;
    /** @private */ this._stale = true;
  }

  /** Whether a change since the last update() may have altered the top. */
  get stale() {
    return this._stale;
  }

  /** Forces a recomputation (new data set, new limit). */
  invalidate() {
    this._stale = true;
  }

  /**
   * Notes that a state changed.
   * @param {State} state its new value
   */
  touch(state) {
    if (this._stale) return;
    if (this._in.has(state.subject) || this.order.length < this.limit || (this._last && compareStates(state, this._last) < 0)) {
      this._stale = true;
    }
  }

  /**
   * Recomputes if needed.
   * @param {ReadonlyMap<string, State>} states
   * @returns {boolean} whether the order may have changed
   */
  update(states) {
    if (!this._stale) return false;
    this._stale = false;
    const top = topN(states.values(), this.limit);
    const order = top.map((s) => s.subject);
    const same = order.length === this.order.length && order.every((s, i) => s === this.order[i]);
    this.order = order;
    this._in = new Set(order);
    this._last = top.length ? top[top.length - 1] : null;
    return !same;
  }
}

/**
 * @typedef {object} DropAlert
 * @property {string} subject
 * @property {number} from   highest score within the window before the drop
 * @property {number} to     score after the drop
 * @property {number} at     time of the last delta that deepened the drop (ms)
 * @property {number} since  time of the first alerting delta (ms)
 */

/**
 * Raises an alert when a subject's score falls more than `threshold` below
 * its highest value within the last `windowMs`. One open alert per subject;
 * further drops within the window deepen it instead of adding new ones.
 */
export class DropDetector {
  /** @param {{threshold?: number, windowMs?: number}} [opts] */
  constructor(opts = {}) {
    this.threshold = opts.threshold ?? 0.15;
    this.windowMs = opts.windowMs ?? 60000;
    /** @private @type {Map<string, {t: number, v: number}[]>} */ this._hist = new Map();
    /** @private @type {Map<string, DropAlert>} */ this._open = new Map();
  }

  /** Forgets all history (new data set). */
  reset() {
    this._hist.clear();
    this._open.clear();
  }

  /**
   * Records a change of a subject's score.
   * @param {string} subject
   * @param {number} before score before the change (NaN if unknown)
   * @param {number} after  score after the change
   * @param {number} t      time (ms)
   * @returns {{alert: DropAlert, isNew: boolean} | null} the alert raised or deepened
   */
  observe(subject, before, after, t) {
    const from = t - this.windowMs;
    let h = this._hist.get(subject);
    if (!h) {
      h = [];
      this._hist.set(subject, h);
      if (Number.isFinite(before)) h.push({ t, v: before });
    } else {
      // Keep the newest point at or before the window's start: the value held then.
      let drop = 0;
      while (drop < h.length - 1 && h[drop + 1].t <= from) drop++;
      if (drop) h.splice(0, drop);
    }
    h.push({ t, v: after });
    let max = -Infinity;
    for (const p of h) if (p.v > max) max = p.v;

    const open = this._open.get(subject);
    if (open && open.at < from) this._open.delete(subject);
    if (!(max - after >= this.threshold - 1e-9) || !(this.threshold > 0)) return null;
    const cur = this._open.get(subject);
    if (cur) {
      if (after < cur.to || max > cur.from) {
        cur.to = Math.min(cur.to, after);
        cur.from = Math.max(cur.from, max);
        cur.at = t;
        return { alert: cur, isNew: false };
      }
      return null;
    }
    /** @type {DropAlert} */
    const alert = { subject, from: max, to: after, at: t, since: t };
    this._open.set(subject, alert);
    return { alert, isNew: true };
  }

  /**
   * Drops history older than the window (call now and then).
   * @param {number} t
   */
  prune(t) {
    const from = t - this.windowMs;
    for (const [s, h] of this._hist) if (h[h.length - 1].t < from) this._hist.delete(s);
    for (const [s, a] of this._open) if (a.at < from) this._open.delete(s);
  }

  /** number of subjects with history (for tests) */
  get tracked() {
    return this._hist.size;
  }
}

/** Counts events in a sliding window of `windowMs`, in `slots` buckets. */
export class RateMeter {
  /** @param {number} [windowMs] @param {number} [slots] */
  constructor(windowMs = 1000, slots = 10) {
    this.windowMs = windowMs;
    this.slotMs = windowMs / slots;
    /** @private */ this._counts = new Array(slots).fill(0);
    /** @private */ this._ids = new Array(slots).fill(-1);
  }

  /** @param {number} n @param {number} t */
  add(n, t) {
    const id = Math.floor(t / this.slotMs);
    const i = id % this._counts.length;
    if (this._ids[i] !== id) {
      this._ids[i] = id;
      this._counts[i] = 0;
    }
    this._counts[i] += n;
  }

  /** events per second over the window ending at t @param {number} t */
  rate(t) {
    const id = Math.floor(t / this.slotMs);
    const oldest = id - this._counts.length + 1;
    let sum = 0;
    for (let i = 0; i < this._counts.length; i++) if (this._ids[i] >= oldest && this._ids[i] <= id) sum += this._counts[i];
    return (sum * 1000) / this.windowMs;
  }
}

/**
 * Labels for a histogram of `n` buckets: a scale of n values starting at 1,
 * except where n is one more than a multiple of 5 ([0,5], [0,10], [0,100]).
 * @param {number} n
 * @returns {string[]}
 */
export function histLabels(n) {
  const lo = n % 5 === 1 ? 0 : 1;
  return Array.from({ length: n }, (_, i) => String(lo + i));
}

/**
 * @typedef {object} Point
 * @property {number} t  time (ms)
 * @property {number} v  value
 */

/**
 * The SVG path of a step chart of `points` (sorted by t) in a w×h box.
 * @param {Point[]} points
 * @param {number} w
 * @param {number} h
 * @param {{pad?: number, tMax?: number}} [opts]
 * @returns {{d: string, min: number, max: number, t0: number, t1: number}}
 */
export function stepPath(points, w, h, opts = {}) {
  const pad = opts.pad ?? 4;
  if (!points.length) return { d: '', min: 0, max: 0, t0: 0, t1: 0 };
  let min = Infinity;
  let max = -Infinity;
  for (const p of points) {
    if (p.v < min) min = p.v;
    if (p.v > max) max = p.v;
  }
  if (max - min < 1e-6) {
    min -= 0.05;
    max += 0.05;
  }
  const t0 = points[0].t;
  const t1 = Math.max(opts.tMax ?? 0, points[points.length - 1].t, t0 + 1);
  const x = (/** @type {number} */ t) => pad + ((t - t0) / (t1 - t0)) * (w - 2 * pad);
  const y = (/** @type {number} */ v) => pad + (1 - (v - min) / (max - min)) * (h - 2 * pad);
  const f = (/** @type {number} */ n) => (Math.round(n * 10) / 10).toString();
  let d = `M${f(x(t0))} ${f(y(points[0].v))}`;
  for (let i = 1; i < points.length; i++) d += `H${f(x(points[i].t))}V${f(y(points[i].v))}`;
  d += `H${f(x(t1))}`;
  return { d, min, max, t0, t1 };
}

/**
 * Thins a long series to at most `max` points, keeping the first and last.
 * @template T
 * @param {T[]} points
 * @param {number} max
 * @returns {T[]}
 */
export function thin(points, max) {
  if (points.length <= max || max < 2) return points;
  const out = [];
  const step = (points.length - 1) / (max - 1);
  for (let i = 0; i < max; i++) out.push(points[Math.round(i * step)]);
  return out;
}
