// @ts-check
// The repstream dashboard: a live leaderboard, trust-score alerts and a
// subject's detail, over the client in repstream.js. No framework, no build.
//
// Under a burst the work per delta is O(1): the state lands in the
// subscription's map, the subject is marked dirty, and one animation frame
// later only the dirty rows that are on screen are touched. The ranking is
// recomputed at most once per frame, and only when a change can alter it.

import { RepstreamClient, parseLSN } from './repstream.js';
import { Ranking, DropDetector, RateMeter, histLabels, stepPath, thin } from './board.js';

/** @typedef {import('./repstream.js').State} State */
/** @typedef {import('./repstream.js').Subscription} Subscription */
/** @typedef {import('./board.js').DropAlert} DropAlert */

const TOP = 50; // rows rendered (plus the selected subject)
const ROW_H = 34; // px; the height of .row in style.css
const MAX_ALERTS = 50;
const HISTORY_PAGES = 10; // at most 10 × 1000 deltas of history per subject
const CHART_POINTS = 1500;
const REORDER_MS = 400; // re-sort the rows at most this often (values update every frame)
const SLOW_MS = 300; // alerts list and chart redraw at most this often
const TOKEN_KEY = 'repstream.token';
const PREFS_KEY = 'repstream.prefs';

// ---- elements ----------------------------------------------------------------

/** @param {string} sel */
function $(sel) {
  const el = document.querySelector(sel);
  if (!el) throw new Error(`dashboard: missing ${sel}`);
  return /** @type {HTMLElement} */ (el);
}

const ui = {
  status: $('[data-testid="status"]'),
  statusDetail: $('[data-testid="status-detail"]'),
  cursor: $('[data-testid="cursor"]'),
  ups: $('[data-testid="ups"]'),
  epoch: $('[data-testid="epoch"]'),
  tokenToggle: $('#token-toggle'),
  tokenForm: /** @type {HTMLFormElement} */ ($('#token-form')),
  tokenInput: /** @type {HTMLInputElement} */ ($('#token-input')),
  tokenMsg: $('[data-testid="token-msg"]'),
  prefix: /** @type {HTMLSelectElement} */ ($('#prefix')),
  throttle: /** @type {HTMLSelectElement} */ ($('#throttle')),
  threshold: /** @type {HTMLInputElement} */ ($('#threshold')),
  banner: $('#alert-banner'),
  bannerText: $('#alert-banner-text'),
  bannerDismiss: $('#alert-dismiss'),
  rows: $('#rows'),
  empty: $('#empty'),
  detail: $('#detail'),
  alerts: $('#alerts'),
  alertsEmpty: $('#alerts-empty'),
  topPrefix: $('[data-testid="top-prefix"]'),
  topOrder: /** @type {HTMLSelectElement} */ ($('#top-order')),
  topList: $('#top-list'),
  topEmpty: $('#top-empty'),
};

// ---- token ---------------------------------------------------------------------

/**
 * The token comes from the URL fragment (#token=…), which is then stored in
 * sessionStorage and removed from the address bar; else from sessionStorage.
 */
function takeToken() {
  const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  if (m) {
    let t = m[1];
    try {
      t = decodeURIComponent(t);
    } catch {
      /* use as is */
    }
    try {
      sessionStorage.setItem(TOKEN_KEY, t);
    } catch {
      /* storage disabled: keep it in memory */
    }
    history.replaceState(null, '', location.pathname + location.search);
    return t;
  }
  try {
    return sessionStorage.getItem(TOKEN_KEY) || '';
  } catch {
    return '';
  }
}

let token = takeToken();

/** @param {string} msg */
function showTokenForm(msg) {
  ui.tokenForm.hidden = false;
  ui.tokenMsg.textContent = msg;
  ui.tokenInput.focus();
}

ui.tokenToggle.addEventListener('click', () => {
  if (ui.tokenForm.hidden) showTokenForm('');
  else ui.tokenForm.hidden = true;
});

ui.tokenForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const t = ui.tokenInput.value.trim();
  if (!t) return;
  token = t;
  try {
    sessionStorage.setItem(TOKEN_KEY, t);
  } catch {
    /* memory only */
  }
  ui.tokenInput.value = '';
  ui.tokenForm.hidden = true;
  client.setToken(t);
  client.connect();
  if (detail.subject) void loadHistory(detail);
});

// ---- preferences ---------------------------------------------------------------

(function loadPrefs() {
  try {
    const p = JSON.parse(localStorage.getItem(PREFS_KEY) || '{}');
    if ([...ui.prefix.options].some((o) => o.value === p.prefix)) ui.prefix.value = p.prefix;
    if ([...ui.throttle.options].some((o) => o.value === p.throttle)) ui.throttle.value = p.throttle;
    if (typeof p.threshold === 'string' && Number(p.threshold) >= 0) ui.threshold.value = p.threshold;
  } catch {
    /* defaults */
  }
})();

function savePrefs() {
  try {
    localStorage.setItem(PREFS_KEY, JSON.stringify({ prefix: ui.prefix.value, throttle: ui.throttle.value, threshold: ui.threshold.value }));
  } catch {
    /* not kept */
  }
}

// ---- client --------------------------------------------------------------------

const client = new RepstreamClient({
  url: `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/stream`,
  token: token || undefined,
  onStatus(status, info) {
    ui.status.textContent = status;
    ui.status.dataset.status = status;
    ui.statusDetail.textContent =
      status === 'offline' && info.retryInMs !== undefined ? `retry in ${(info.retryInMs / 1000).toFixed(1)} s` : '';
    updateHeader();
  },
  onWelcome(w) {
    if (!token) ui.tokenForm.hidden = true; // this server needs no token
    ui.epoch.textContent = w.epoch.length > 14 ? `${w.epoch.slice(0, 12)}…` : w.epoch;
    ui.epoch.title = `epoch ${w.epoch}${w.server ? ` · ${w.server}` : ''}`;
  },
  onError(err) {
    if (err.code === 'unauthenticated') {
      ui.statusDetail.textContent = 'token required';
      showTokenForm(token ? 'The token was rejected or has expired. Paste a new one.' : 'This server needs an access token.');
    }
  },
});

// ---- leaderboard ---------------------------------------------------------------

/**
 * @typedef {object} Row
 * @property {HTMLElement} el
 * @property {HTMLElement} rank
 * @property {HTMLElement} bayes
 * @property {HTMLElement} mean
 * @property {HTMLElement} count
 * @property {HTMLElement} trend
 * @property {number|undefined} shown  the bayes value on screen
 * @property {Animation|null} flash  the running flash, reused while a subject keeps moving
 * @property {string} flashDir
 */

const board = {
  /** @type {Subscription|null} */ sub: null,
  /** re-sort now (selection changed) */ reorderNow: false,
  ranking: new Ranking(TOP),
  /** subjects changed since the last frame @type {Set<string>} */ dirty: new Set(),
  /** rows on screen by subject @type {Map<string, Row>} */ rows: new Map(),
  /** subjects on screen in order @type {string[]} */ order: [],
  /** redraw every row's cells (after a snapshot or reset) */ full: true,
};
const detector = new DropDetector({ threshold: Number(ui.threshold.value) || 0.15, windowMs: 60000 });
const meter = new RateMeter(1000, 10);
/** @type {string|null} */
let selected = null;

function subscribeBoard() {
  board.sub?.unsubscribe();
  board.dirty.clear();
  board.full = true;
  board.ranking.invalidate();
  detector.reset();
  board.sub = client.subscribe({
    prefix: ui.prefix.value,
    throttleMs: Number(ui.throttle.value),
    onSnapshot() {
      board.full = true;
      board.ranking.invalidate();
      detector.reset();
      schedule();
    },
    onDelta(d, st) {
      meter.add(1, performance.now());
      board.ranking.touch(st);
      board.dirty.add(d.subject);
      const before = d.change && typeof d.change.bayes === 'number' ? st.bayes - d.change.bayes : NaN;
      const hit = detector.observe(d.subject, before, st.bayes, Date.now());
      if (hit) noteAlert(hit.alert, hit.isNew);
      schedule();
    },
    onReset() {
      board.full = true;
      board.ranking.invalidate();
      detector.reset();
      schedule();
    },
  });
  schedule();
}

// ---- top panel: a leaderboard the server ranks ----------------------------------

const TOP_PANEL = 10;
/** @type {Subscription|null} */
let topSub = null;

/**
 * Subscribes the top panel: the server keeps the ranking of the whole prefix
 * and sends the first TOP_PANEL entries when they change (no need to hold
 * every subject, and a token with a `boards` claim for the prefix suffices).
 */
function subscribeTop() {
  topSub?.unsubscribe();
  ui.topPrefix.textContent = ui.prefix.value;
  ui.topList.replaceChildren();
  ui.topEmpty.textContent = 'Waiting for the leaderboard…';
  ui.topEmpty.hidden = false;
  topSub = client.subscribe({
    prefix: ui.prefix.value,
    top: TOP_PANEL,
    order: /** @type {'bayes'|'mean'|'count'} */ (ui.topOrder.value),
    throttleMs: Number(ui.throttle.value),
    onBoard: renderTop,
    onError(err) {
      ui.topList.replaceChildren();
      ui.topEmpty.textContent = `Leaderboard unavailable (${err.code}).`;
      ui.topEmpty.hidden = false;
    },
  });
}

/** @param {import('./repstream.js').BoardUpdate} b */
function renderTop(b) {
  /** @type {Map<string, import('./repstream.js').BoardMove>} */
  const moved = new Map(b.moves.map((m) => [m.subject, m]));
  const items = b.entries.map((e) => {
    const li = document.createElement('li');
    li.dataset.subject = e.subject;
    li.dataset.rank = String(e.rank);
    const m = moved.get(e.subject);
    const dir = !m ? '' : m.from === null ? 'new' : m.to !== null && m.to < m.from ? 'up' : 'down';
    if (dir) li.dataset.move = dir;
    const value = b.order === 'count' ? String(e.count) : (b.order === 'mean' ? e.mean : e.bayes).toFixed(3);
    for (const [cls, text] of [['rank', String(e.rank)], ['subject', e.subject], ['num', value],
      ['move', dir === 'up' ? '▲' : dir === 'down' ? '▼' : dir === 'new' ? '•' : '']]) {
      const span = document.createElement('span');
      span.className = cls;
      span.textContent = text;
      li.append(span);
    }
    li.addEventListener('click', () => select(e.subject));
    return li;
  });
  ui.topList.replaceChildren(...items);
  ui.topList.dataset.lsn = b.lsn;
  ui.topEmpty.textContent = `No ${ui.prefix.value} subjects yet.`;
  ui.topEmpty.hidden = items.length > 0;
}

/** @param {string} subject */
function makeRow(subject) {
  const el = document.createElement('div');
  el.className = 'row';
  el.setAttribute('role', 'row');
  el.setAttribute('data-testid', 'row');
  el.dataset.subject = subject;
  el.tabIndex = 0;
  /** @param {string} cls @param {string} [testid] */
  const cell = (cls, testid) => {
    const c = document.createElement('span');
    c.className = cls;
    c.setAttribute('role', 'cell');
    if (testid) c.setAttribute('data-testid', testid);
    el.appendChild(c);
    return c;
  };
  const rank = cell('rank', 'rank');
  cell('subject', 'subject').textContent = subject;
  /** @type {Row} */
  const row = {
    el,
    rank,
    bayes: cell('num', 'bayes'),
    mean: cell('num', 'mean'),
    count: cell('num', 'count'),
    trend: cell('trend'),
    shown: undefined,
    flash: null,
    flashDir: '',
  };
  return row;
}

const FLASH = {
  up: [{ backgroundColor: 'rgba(34, 197, 94, 0.55)' }, { backgroundColor: 'rgba(34, 197, 94, 0)' }],
  down: [{ backgroundColor: 'rgba(239, 68, 68, 0.55)' }, { backgroundColor: 'rgba(239, 68, 68, 0)' }],
};

/**
 * Writes a state's numbers into a row; flashes it if its score moved.
 * @param {Row} row
 * @param {State} st
 * @param {boolean} flash
 */
function paintRow(row, st, flash) {
  setNum(row.bayes, st.bayes, 3);
  setNum(row.mean, st.mean, 3);
  setNum(row.count, st.count, 0);
  if (flash && row.shown !== undefined && st.bayes !== row.shown) {
    const dir = st.bayes > row.shown ? 'up' : 'down';
    row.el.dataset.trend = dir;
    row.trend.textContent = dir === 'up' ? '▲' : '▼';
    if (row.flash && row.flashDir === dir) {
      row.flash.currentTime = 0;
      row.flash.play();
    } else if (row.el.animate) {
      row.flash?.cancel();
      row.flash = row.el.animate(FLASH[dir], { duration: 900, easing: 'ease-out' });
      row.flashDir = dir;
    }
  }
  row.shown = st.bayes;
}

/**
 * @param {HTMLElement} el
 * @param {number} v
 * @param {number} digits
 */
function setNum(el, v, digits) {
  const raw = String(v);
  if (el.dataset.value === raw) return;
  el.dataset.value = raw;
  el.textContent = typeof v === 'number' ? v.toFixed(digits) : '—';
}

/** Puts the rows on screen in ranking order (plus the selected subject), animating moves. */
function reconcileRows() {
  const states = board.sub ? board.sub.states : new Map();
  const wanted = board.ranking.order.slice();
  const pinned = selected && !wanted.includes(selected) && states.has(selected) ? selected : null;
  if (pinned) wanted.push(pinned);
  const same = wanted.length === board.order.length && wanted.every((s, i) => s === board.order[i]);
  if (same) return;

  /** @type {Map<string, number>} */
  const oldIndex = new Map();
  board.order.forEach((s, i) => oldIndex.set(s, i));
  const keep = new Set(wanted);
  for (const [s, row] of board.rows) {
    if (!keep.has(s)) {
      row.el.remove();
      board.rows.delete(s);
    }
  }
  const container = ui.rows;
  wanted.forEach((s, i) => {
    let row = board.rows.get(s);
    const isNew = !row;
    if (!row) {
      row = makeRow(s);
      board.rows.set(s, row);
      const st = states.get(s);
      if (st) paintRow(row, st, false);
    }
    const at = container.children[i];
    if (at !== row.el) container.insertBefore(row.el, at ?? null);
    const rank = s === pinned ? '…' : String(i + 1);
    if (row.rank.textContent !== rank) row.rank.textContent = rank;
    row.el.dataset.rank = s === pinned ? '' : String(i + 1);
    row.el.classList.toggle('pinned', s === pinned);
    row.el.classList.toggle('selected', s === selected);
    const from = oldIndex.get(s);
    if (!row.el.animate) return;
    if (isNew) {
      row.el.animate([{ opacity: 0 }, { opacity: 1 }], { duration: 250 });
    } else if (from !== undefined && from !== i) {
      row.el.animate([{ transform: `translateY(${(from - i) * ROW_H}px)` }, { transform: 'translateY(0)' }], {
        duration: 300, // shorter than REORDER_MS: rows settle between re-sorts
        easing: 'cubic-bezier(.2,.8,.2,1)',
        composite: 'add',
      });
    }
  });
  board.order = wanted;
}

ui.rows.addEventListener('click', (ev) => {
  const row = /** @type {HTMLElement|null} */ (/** @type {HTMLElement} */ (ev.target).closest('[data-testid="row"]'));
  if (row?.dataset.subject) select(row.dataset.subject);
});
ui.rows.addEventListener('keydown', (ev) => {
  if (ev.key !== 'Enter' && ev.key !== ' ') return;
  const row = /** @type {HTMLElement|null} */ (/** @type {HTMLElement} */ (ev.target).closest('[data-testid="row"]'));
  if (row?.dataset.subject) {
    ev.preventDefault();
    select(row.dataset.subject);
  }
});

// ---- alerts --------------------------------------------------------------------

/** newest first @type {DropAlert[]} */
let alerts = [];
let alertsDirty = false;
let bannerDismissed = false;

/** @param {DropAlert} alert @param {boolean} isNew */
function noteAlert(alert, isNew) {
  if (!isNew) {
    // a deepening drop is the freshest news: move it to the top
    const i = alerts.indexOf(alert);
    if (i > 0) alerts.splice(i, 1);
    if (i !== 0) alerts.unshift(alert);
  } else {
    alerts.unshift(alert);
    bannerDismissed = false;
  }
  if (alerts.length > MAX_ALERTS) alerts.length = MAX_ALERTS;
  alertsDirty = true;
}

/** @param {DropAlert} a */
const alertText = (a) => `${a.subject}: ${a.from.toFixed(3)} → ${a.to.toFixed(3)} (−${(a.from - a.to).toFixed(3)})`;

function renderAlerts() {
  alertsDirty = false;
  const items = alerts.map((a) => {
    const li = document.createElement('li');
    li.setAttribute('data-testid', 'alert');
    li.dataset.subject = a.subject;
    li.dataset.from = String(a.from);
    li.dataset.to = String(a.to);
    const time = document.createElement('time');
    time.dateTime = new Date(a.at).toISOString();
    time.textContent = new Date(a.at).toLocaleTimeString();
    const text = document.createElement('span');
    text.textContent = alertText(a);
    li.append(time, ' ', text);
    return li;
  });
  ui.alerts.replaceChildren(...items);
  ui.alertsEmpty.hidden = alerts.length > 0;
  const latest = alerts[0];
  if (latest && !bannerDismissed) {
    const others = alerts.filter((a) => a !== latest && Date.now() - a.at < 60000).length;
    ui.bannerText.textContent = `${alertText(latest)}${others ? ` — and ${others} more in the last minute` : ''}`;
    ui.banner.dataset.subject = latest.subject;
    ui.banner.hidden = false;
  } else {
    ui.banner.hidden = true;
  }
}

ui.alerts.addEventListener('click', (ev) => {
  const li = /** @type {HTMLElement|null} */ (/** @type {HTMLElement} */ (ev.target).closest('li'));
  if (li?.dataset.subject) select(li.dataset.subject);
});
ui.bannerDismiss.addEventListener('click', () => {
  bannerDismissed = true;
  ui.banner.hidden = true;
});

// ---- detail --------------------------------------------------------------------

/**
 * @typedef {object} Detail
 * @property {string|null} subject
 * @property {Subscription|null} sub
 * @property {State|null} state
 * @property {{lsn: bigint, t: number, v: number}[]} points  in LSN order
 * @property {Set<string>} seen  LSNs of the points
 * @property {AbortController|null} abort
 * @property {string} note
 * @property {boolean} dirty
 * @property {boolean} chartDirty
 */

/** @type {Detail} */
let detail = { subject: null, sub: null, state: null, points: [], seen: new Set(), abort: null, note: '', dirty: false, chartDirty: false };

/** @param {string} subject */
function select(subject) {
  if (subject === detail.subject) return;
  detail.sub?.unsubscribe();
  detail.abort?.abort();
  selected = subject;
  /** @type {Detail} */
  const d = {
    subject,
    sub: null,
    state: board.sub?.states.get(subject) ?? null,
    points: [],
    seen: new Set(),
    abort: null,
    note: '',
    dirty: true,
    chartDirty: true,
  };
  detail = d;
  if (d.state) addPoint(d, d.state);
  d.sub = client.subscribe({
    subjects: [subject],
    throttleMs: 0,
    onSnapshot(states) {
      const st = states.get(subject);
      if (st) {
        d.state = st;
        addPoint(d, st);
      }
      d.dirty = true;
      schedule();
    },
    onDelta(_delta, st) {
      d.state = st;
      addPoint(d, st);
      d.dirty = true;
      schedule();
    },
    onReset() {
      d.points = [];
      d.seen.clear();
      d.state = null;
      d.dirty = true;
      void loadHistory(d);
      schedule();
    },
  });
  void loadHistory(d);
  for (const row of board.rows.values()) row.el.classList.toggle('selected', row.el.dataset.subject === subject);
  board.reorderNow = true; // the next frame pins the row if it is outside the top
  schedule();
}

/**
 * @param {Detail} d
 * @param {State} st
 */
function addPoint(d, st) {
  if (!st || typeof st.lsn !== 'string' || d.seen.has(st.lsn)) return;
  let lsn;
  try {
    lsn = parseLSN(st.lsn);
  } catch {
    return;
  }
  d.seen.add(st.lsn);
  const t = Date.parse(st.updated_at);
  const p = { lsn, t: Number.isFinite(t) ? t : Date.now(), v: st.bayes };
  const pts = d.points;
  if (!pts.length || pts[pts.length - 1].lsn < lsn) {
    pts.push(p); // live deltas: the common case
  } else {
    let lo = 0;
    let hi = pts.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (pts[mid].lsn < lsn) lo = mid + 1;
      else hi = mid;
    }
    pts.splice(lo, 0, p);
  }
  d.chartDirty = true;
}

/** @param {string} s */
const subjectPath = (s) => encodeURIComponent(s).replace(/%3A/gi, ':').replace(/%40/g, '@');

/**
 * Loads a subject's retained deltas over HTTP; live deltas are merged by LSN.
 * @param {Detail} d
 */
async function loadHistory(d) {
  if (!d.subject) return;
  d.abort?.abort();
  const abort = new AbortController();
  d.abort = abort;
  d.note = 'loading history…';
  d.dirty = true;
  schedule();
  let since = ''; // none: from the start of the retained log
  let loaded = 0;
  try {
    for (let page = 0; ; page++) {
      if (page === HISTORY_PAGES) {
        d.note = `history limited to the first ${loaded} changes`;
        break;
      }
      const q = new URLSearchParams({ limit: '1000' });
      if (since) q.set('since', since);
      const res = await fetch(`/v1/subjects/${subjectPath(d.subject)}/deltas?${q}`, {
        headers: token ? { Authorization: `Bearer ${token}` } : {},
        signal: abort.signal,
      });
      if (res.status === 410) {
        d.note = 'older history is past the retention window';
        break;
      }
      if (res.status === 401) {
        d.note = 'history needs a valid token';
        break;
      }
      if (!res.ok) {
        d.note = `history unavailable (HTTP ${res.status})`;
        break;
      }
      const body = await res.json();
      const items = Array.isArray(body.items) ? body.items : [];
      for (const it of items) if (it && it.after) addPoint(d, { ...it.after, lsn: it.lsn });
      loaded += items.length;
      d.dirty = true;
      schedule();
      if (!body.more || !items.length) {
        d.note = `${loaded} change${loaded === 1 ? '' : 's'} in the retained history`;
        break;
      }
      since = items[items.length - 1].lsn;
    }
  } catch (err) {
    if (abort.signal.aborted) return;
    d.note = `history unavailable (${err instanceof Error ? err.message : String(err)})`;
  }
  d.dirty = true;
  schedule();
}

function renderDetail() {
  const d = detail;
  const root = ui.detail;
  if (d.dirty) {
    d.dirty = false;
    const body = /** @type {HTMLElement} */ (root.querySelector('.detail-body'));
    const hint = /** @type {HTMLElement} */ (root.querySelector('.hint'));
    root.dataset.subject = d.subject ?? '';
    hint.hidden = !!d.subject;
    body.hidden = !d.subject;
    if (!d.subject) return;
    const q = (/** @type {string} */ id) => /** @type {HTMLElement} */ (root.querySelector(`[data-testid="${id}"]`));
    q('detail-subject').textContent = d.subject;
    const st = d.state;
    if (st) {
      setNum(q('detail-bayes'), st.bayes, 4);
      setNum(q('detail-mean'), st.mean, 4);
      setNum(q('detail-count'), st.count, 0);
      q('detail-version').textContent = String(st.version);
      q('detail-lsn').textContent = st.lsn;
    }
    renderHist(q('hist'), st?.hist ?? []);
    q('history-note').textContent = d.note;
  }
  if (d.subject && d.chartDirty && due('chart', SLOW_MS)) {
    d.chartDirty = false;
    renderChart(root, d);
  }
}

/**
 * @param {HTMLElement} el
 * @param {number[]} hist
 */
function renderHist(el, hist) {
  const labels = histLabels(hist.length);
  const max = Math.max(1, ...hist);
  const total = hist.reduce((a, b) => a + b, 0);
  if (el.childElementCount !== hist.length) {
    el.replaceChildren(
      ...hist.map((_, i) => {
        const row = document.createElement('div');
        row.className = 'hist-row';
        row.setAttribute('data-testid', 'hist-bar');
        const label = document.createElement('span');
        label.className = 'hist-label';
        label.textContent = `${labels[i]}★`;
        const track = document.createElement('span');
        track.className = 'hist-track';
        const bar = document.createElement('span');
        bar.className = 'hist-bar';
        track.appendChild(bar);
        const n = document.createElement('span');
        n.className = 'hist-n';
        row.append(label, track, n);
        return row;
      }).reverse(), // highest star on top
    );
  }
  const rows = [...el.children].reverse();
  hist.forEach((n, i) => {
    const row = /** @type {HTMLElement} */ (rows[i]);
    row.dataset.star = labels[i];
    row.dataset.value = String(n);
    /** @type {HTMLElement} */ (row.querySelector('.hist-bar')).style.width = `${(n / max) * 100}%`;
    /** @type {HTMLElement} */ (row.querySelector('.hist-n')).textContent = total ? `${n} · ${Math.round((n / total) * 100)}%` : String(n);
  });
}

/**
 * @param {HTMLElement} root
 * @param {Detail} d
 */
function renderChart(root, d) {
  const pts = d.points;
  // x is the commit time, kept monotonic in LSN order (clocks may step back)
  let tPrev = -Infinity;
  const series = thin(
    pts.map((p) => {
      tPrev = Math.max(tPrev, p.t);
      return { t: tPrev, v: p.v };
    }),
    CHART_POINTS,
  );
  const { d: path, min, max, t0, t1 } = stepPath(series, 600, 180, { tMax: Date.now() });
  /** @type {SVGPathElement} */ (root.querySelector('.chart .line')).setAttribute('d', path);
  const chart = /** @type {HTMLElement} */ (root.querySelector('.chart'));
  chart.dataset.points = String(pts.length);
  const txt = (/** @type {string} */ sel, /** @type {string} */ s) => {
    /** @type {HTMLElement} */ (root.querySelector(sel)).textContent = s;
  };
  txt('.chart-axis .ymax', series.length ? max.toFixed(3) : '');
  txt('.chart-axis .ymin', series.length ? min.toFixed(3) : '');
  txt('.chart-time .t0', series.length ? new Date(t0).toLocaleString() : '');
  txt('.chart-time .t1', series.length ? new Date(t1).toLocaleTimeString() : '');
}

// ---- frame loop and header -----------------------------------------------------

let frameQueued = false;
function schedule() {
  if (frameQueued) return;
  frameQueued = true;
  requestAnimationFrame(frame);
}

/** @type {Record<string, number>} */
const lastRun = {};
/** @type {Record<string, any>} */
const laterTimers = {};

/**
 * Whether the work named `key` may run now (at most once per `ms`); if not,
 * a frame is scheduled for when it may.
 * @param {string} key
 * @param {number} ms
 */
function due(key, ms) {
  const now = performance.now();
  const wait = (lastRun[key] ?? -Infinity) + ms - now;
  if (wait <= 0) {
    lastRun[key] = now;
    return true;
  }
  if (!laterTimers[key]) {
    laterTimers[key] = setTimeout(() => {
      laterTimers[key] = null;
      schedule();
    }, wait);
  }
  return false;
}

function frame() {
  frameQueued = false;
  const states = board.sub ? board.sub.states : new Map();
  if (board.full || board.reorderNow) {
    board.ranking.invalidate();
    lastRun.reorder = -Infinity;
  }
  // Re-sort a few times a second; in between only the numbers change, so a
  // burst does not pile up move animations.
  if (board.ranking.stale && due('reorder', REORDER_MS)) {
    board.ranking.update(states);
    reconcileRows();
    board.reorderNow = false;
  }
  if (board.full) {
    for (const [s, row] of board.rows) {
      const st = states.get(s);
      if (st) paintRow(row, st, false);
    }
  } else {
    for (const s of board.dirty) {
      const row = board.rows.get(s);
      const st = row && states.get(s);
      if (row && st) paintRow(row, st, true);
    }
  }
  board.full = false;
  board.dirty.clear();
  ui.empty.hidden = board.rows.size > 0;
  ui.empty.textContent = client.status === 'live' ? `No ${ui.prefix.value} subjects yet.` : 'Waiting for data…';
  if (alertsDirty && due('alerts', SLOW_MS)) renderAlerts();
  if (detail.dirty || detail.chartDirty) renderDetail();
  updateHeader();
}

function updateHeader() {
  const c = client.cursor ?? '—';
  if (ui.cursor.textContent !== c) ui.cursor.textContent = c;
  const ups = String(Math.round(meter.rate(performance.now())));
  if (ui.ups.textContent !== ups) ui.ups.textContent = ups;
}

setInterval(updateHeader, 250);
setInterval(() => {
  detector.prune(Date.now());
  if (detail.subject) {
    detail.chartDirty = true; // let the chart's time axis reach now
    schedule();
  }
}, 5000);

// ---- controls ------------------------------------------------------------------

ui.prefix.addEventListener('change', () => {
  savePrefs();
  subscribeBoard();
  subscribeTop();
});
ui.throttle.addEventListener('change', () => {
  savePrefs();
  subscribeBoard();
  subscribeTop();
});
ui.topOrder.addEventListener('change', subscribeTop);
ui.threshold.addEventListener('input', () => {
  const v = Number(ui.threshold.value);
  if (ui.threshold.value !== '' && Number.isFinite(v) && v >= 0) {
    detector.threshold = v;
    savePrefs();
  }
});

// ---- start ---------------------------------------------------------------------

if (!token) showTokenForm('No token in the link: paste one, or wait if this server needs none.');
subscribeBoard();
subscribeTop();
client.connect();

// for debugging from the console
Object.assign(window, { repstream: { client, board, detail: () => detail, select } });
