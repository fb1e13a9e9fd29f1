package hub

import (
	"cmp"
	"context"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/btree"

	"github.com/repstream/repstream/stream"
)

// ModeBoard is the subscribed mode of a leaderboard subscription.
const ModeBoard = "board"

// BoardRequest makes a subscribe request a leaderboard of its prefix: the
// first Top subjects by Order (descending, ties by subject), kept by the hub
// and sent whole whenever it changes.
type BoardRequest struct {
	Top   int
	Order stream.Order // bayes, mean or count
}

type boardKey struct {
	prefix string
	order  stream.Order
}

// board is the ranking of every subject of a prefix by one order, shared by
// all leaderboard subscriptions of the hub over that prefix and order. It is
// a function of the stream position: loaded from the store at a known head,
// then updated by each published transaction. Its fields but ready and err
// are guarded by Hub.pubMu.
type board struct {
	key    boardKey
	ready  chan struct{} // closed once loaded, or the load failed (err)
	err    error
	loaded bool
	buf    []stream.Delta // published deltas of the prefix while loading
	states map[string]*stream.State
	ranked *btree.BTreeG[*stream.State] // ordered by cmp
	lsn    stream.LSN                   // the ranking is exact at this position
	subs   map[*sub]struct{}
	views  map[int]*boardView // the current view of each top in use
}

// boardView is the top of a board a subscription was last sent. Views are
// shared by the subscriptions that were sent the same board, so a change is
// computed once per top and encoded once per view, codec and id.
type boardView struct {
	entries []stream.State
}

// cmp orders states as SQL's ORDER BY <order> DESC, subject does.
func (b *board) cmp(x, y *stream.State) int {
	var c int
	switch b.key.order {
	case stream.OrderCount:
		c = cmp.Compare(y.Count, x.Count)
	case stream.OrderMean:
		c = cmp.Compare(y.Mean, x.Mean)
	default:
		c = cmp.Compare(y.Bayes, x.Bayes)
	}
	if c != 0 {
		return c
	}
	return strings.Compare(x.Subject, y.Subject)
}

// set puts a subject's state in the ranking, unless the board already holds
// it at or above that LSN. It reports whether the board changed.
func (b *board) set(st stream.State) bool {
	cur := b.states[st.Subject]
	if cur != nil {
		if cur.LSN >= st.LSN {
			return false
		}
		b.ranked.Delete(cur)
	}
	ns := &st
	b.states[st.Subject] = ns
	b.ranked.ReplaceOrInsert(ns)
	return true
}

func (b *board) apply(d *stream.Delta) bool {
	st := d.After
	st.Subject, st.LSN, st.Version = d.Subject, d.LSN, d.Version
	return b.set(st)
}

// top returns the first n entries.
func (b *board) top(n int) []stream.State {
	out := make([]stream.State, 0, min(n, b.ranked.Len()))
	b.ranked.Ascend(func(s *stream.State) bool {
		out = append(out, *s)
		return len(out) < n
	})
	return out
}

func (b *board) less(x, y *stream.State) bool { return b.cmp(x, y) < 0 }

// view returns the current view of the first n entries: the one already
// made if they did not change since.
func (b *board) view(n int) *boardView {
	top := b.top(n)
	if v := b.views[n]; v != nil && sameEntries(v.entries, top) {
		return v
	}
	v := &boardView{entries: top}
	if b.views == nil {
		b.views = make(map[int]*boardView)
	}
	b.views[n] = v
	return v
}

// sameEntries reports whether two tops hold the same subjects, in the same
// order, at the same versions.
func sameEntries(a, b []stream.State) bool {
	return slices.EqualFunc(a, b, func(x, y stream.State) bool {
		return x.Subject == y.Subject && x.LSN == y.LSN && x.Version == y.Version
	})
}

// moves lists the subjects whose rank differs between two tops, in the new
// top's order, then those that left it.
func moves(prev, next []stream.State) []stream.Move {
	was := make(map[string]int, len(prev))
	for i := range prev {
		was[prev[i].Subject] = i + 1
	}
	var ms []stream.Move
	for i := range next {
		from := was[next[i].Subject]
		delete(was, next[i].Subject)
		if from != i+1 {
			ms = append(ms, stream.Move{Subject: next[i].Subject, From: from, To: i + 1})
		}
	}
	for i := range prev {
		if r, ok := was[prev[i].Subject]; ok {
			ms = append(ms, stream.Move{Subject: prev[i].Subject, From: r})
		}
	}
	return ms
}

func (h *Hub) validateBoard(r Request) error {
	if r.Sel.Prefix == "" || len(r.Sel.Subjects) > 0 {
		return errf(CodeBadRequest, "a leaderboard needs a prefix and no subjects", nil)
	}
	if r.Board.Top < 1 || r.Board.Top > h.cfg.MaxBoardTop {
		return errf(CodeBadRequest, "top must be between 1 and "+strconv.Itoa(h.cfg.MaxBoardTop), nil)
	}
	switch r.Board.Order {
	case stream.OrderBayes, stream.OrderMean, stream.OrderCount:
	default:
		return errf(CodeBadRequest, "order must be bayes, mean or count", nil)
	}
	if r.Throttle < 0 {
		return errf(CodeBadRequest, "throttle_ms must not be negative", nil)
	}
	return nil
}

// subscribeBoard registers a leaderboard subscription, loads its board if
// no other subscription holds it, and sends subscribed and the board. The
// cursor (Since) does not matter: the board at the current position is
// exact whatever the client saw before.
func (c *Conn) subscribeBoard(ctx context.Context, r Request) (Result, error) {
	h := c.h
	if err := h.validateBoard(r); err != nil {
		return Result{}, err
	}
	if _, _, err := h.Ready(ctx); err != nil {
		return Result{}, err
	}
	key := boardKey{r.Sel.Prefix, r.Board.Order}
	s := &sub{conn: c, id: r.ID, prefix: r.Sel.Prefix, throttle: r.Throttle, top: r.Board.Top, catchingUp: true}
	h.pubMu.Lock()
	b := h.boards[key]
	load := b == nil
	if load {
		b = &board{key: key, ready: make(chan struct{}), states: make(map[string]*stream.State), subs: make(map[*sub]struct{})}
	}
	s.board = b // before index: it keeps s out of the delta indexes
	err := h.index(s)
	if err == nil {
		if load {
			if h.boards == nil {
				h.boards = make(map[boardKey]*board)
			}
			h.boards[key] = b
		}
		b.subs[s] = struct{}{}
	}
	h0 := h.Head()
	h.pubMu.Unlock()
	if err != nil {
		return Result{}, err
	}
	fail := func(err error) (Result, error) {
		c.subMu.Lock()
		c.removeSub(s)
		c.subMu.Unlock()
		h.unindex(s)
		return Result{}, err
	}
	if r.Registered != nil {
		r.Registered()
	}
	if load {
		// Not cancelled with this request, and even if it was revoked:
		// other subscriptions may be waiting for the same board.
		h.loadBoard(context.WithoutCancel(ctx), b, h0)
	}
	s.mu.Lock()
	revoked := s.closed
	s.mu.Unlock()
	if revoked {
		return Result{}, ErrClosed
	}
	select {
	case <-b.ready:
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	if b.err != nil {
		return fail(errf(CodeInternal, "loading the leaderboard failed", b.err))
	}
	h.pubMu.Lock()
	defer h.pubMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Result{}, ErrClosed
	}
	codec := h.codecs[c.codec]
	v := b.view(s.top)
	s.view = v
	c.Enqueue(codec.Subscribed(r.ID, b.lsn, ModeBoard, false))
	if !c.Enqueue(codec.Board(r.ID, b.lsn, string(key.order), v.entries, moves(nil, v.entries))) {
		return Result{}, ErrClosed
	}
	s.catchingUp, s.floor, s.lastFlush = false, b.lsn, time.Now()
	return Result{Mode: ModeBoard, LSN: b.lsn, Sent: len(v.entries)}, nil
}

// loadBoard reads every state of the board's prefix from the store (one
// consistent read), then, under pubMu, folds in what was published since
// h0 and marks the board live. A failed load is dropped from the hub, so
// the next subscription tries again.
func (h *Hub) loadBoard(ctx context.Context, b *board, h0 stream.LSN) {
	sel := stream.Selector{Prefix: b.key.prefix}
	states, head, err := h.log.States(ctx, sel, "", 0)
	hs := Position(head)
	var ds []stream.Delta
	if err == nil && hs < h0 {
		// The store's read is older than what the hub already published
		// (it should not be: the store commits before it publishes).
		ds, err = h.log.Deltas(ctx, sel, hs, h0, 0)
	}
	h.pubMu.Lock()
	defer h.pubMu.Unlock()
	defer close(b.ready)
	if err != nil {
		b.err = err
		if h.boards[b.key] == b {
			delete(h.boards, b.key)
		}
		return
	}
	b.ranked = btree.NewG(32, b.less)
	for i := range states {
		st := states[i]
		b.states[st.Subject] = &st
		b.ranked.ReplaceOrInsert(&st)
	}
	for i := range ds {
		b.apply(&ds[i])
	}
	for i := range b.buf {
		b.apply(&b.buf[i])
	}
	b.buf, b.loaded = nil, true
	b.lsn = max(hs, h.Head())
	if len(b.subs) == 0 && h.boards[b.key] == b {
		delete(h.boards, b.key) // every subscription left during the load
	}
	h.boardGauges()
}

// publishBoards folds one published transaction into the boards over its
// subjects and sends the changed tops to their live subscriptions. Called
// with pubMu held, after the transaction's delta frames were queued.
func (h *Hub) publishBoards(t *txn) {
	if len(h.boards) == 0 {
		return
	}
	var changed []*board
	for _, b := range h.boards {
		hit := false
		for _, it := range t.items {
			if !strings.HasPrefix(it.d.Subject, b.key.prefix) {
				continue
			}
			if !b.loaded {
				b.buf = append(b.buf, it.d)
				continue
			}
			if b.apply(&it.d) {
				hit = true
			}
		}
		if hit {
			b.lsn = max(b.lsn, t.lsn)
			changed = append(changed, b)
		}
	}
	for _, b := range changed {
		h.sendBoard(b, t.lsn)
	}
	if len(changed) > 0 {
		h.boardGauges()
	}
}

// sendBoard sends b's top to each of its live subscriptions whose view it
// changes; a throttled subscription sent one within its throttle gets it
// when the throttle allows. Called with pubMu held.
func (h *Hub) sendBoard(b *board, lsn stream.LSN) {
	views := make(map[int]*boardView)
	frames := make(map[boardFrame][]byte)
	now := time.Now()
	for s := range b.subs {
		h.sendBoardTo(s, b, lsn, now, views, frames)
	}
}

// boardFrame keys a board frame's encoding: subscriptions sent the same
// views share it when their ids agree too (clients number their requests
// alike, so they mostly do).
type boardFrame struct {
	prev, next *boardView
	codec      int
	id         int64
}

func (h *Hub) sendBoardTo(s *sub, b *board, lsn stream.LSN, now time.Time, views map[int]*boardView, frames map[boardFrame][]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.catchingUp {
		return
	}
	if s.throttle > 0 {
		if wait := s.throttle - now.Sub(s.lastFlush); wait > 0 {
			if s.timer == nil {
				s.timer = time.AfterFunc(wait, func() { h.flushBoard(s) })
			}
			return
		}
	}
	next, ok := views[s.top]
	if !ok {
		next = b.view(s.top)
		views[s.top] = next
	}
	prev := s.view
	if next == prev || (prev != nil && sameEntries(prev.entries, next.entries)) {
		s.view = next
		return
	}
	c := s.conn
	fk := boardFrame{prev: prev, next: next, codec: c.codec, id: s.id}
	f, ok := frames[fk]
	if !ok {
		var pe []stream.State
		if prev != nil {
			pe = prev.entries
		}
		f = h.codecs[c.codec].Board(s.id, lsn, string(b.key.order), next.entries, moves(pe, next.entries))
		frames[fk] = f
	}
	s.view, s.lastFlush, s.floor = next, now, lsn
	h.m.boardFrames.Inc()
	c.Enqueue(f)
}

// flushBoard is a throttled board subscription's timer: it sends the
// board as it is now, if it changed since the last one sent.
func (h *Hub) flushBoard(s *sub) {
	h.pubMu.Lock()
	defer h.pubMu.Unlock()
	s.mu.Lock()
	s.timer = nil
	b := s.board
	s.mu.Unlock()
	if b == nil || !b.loaded {
		return
	}
	h.sendBoardTo(s, b, b.lsn, time.Now(), map[int]*boardView{}, map[boardFrame][]byte{})
}

// UnsubscribeBoard stops c's leaderboards of prefix by order (every order
// if order is empty) and returns how many it stopped.
func (c *Conn) UnsubscribeBoard(prefix string, order stream.Order) int {
	c.subMu.Lock()
	var gone []*sub
	for _, s := range c.subs {
		if s.board != nil && s.prefix == prefix && (order == "" || s.board.key.order == order) {
			gone = append(gone, s)
		}
	}
	for _, s := range gone {
		c.removeSub(s)
	}
	c.subMu.Unlock()
	for _, s := range gone {
		c.h.unindex(s)
	}
	return len(gone)
}

// dropBoardsLocked forgets every board, which missed transactions, and
// closes their subscribers' connections with 1001, so their clients
// resubscribe and get boards loaded afresh. Called with pubMu held.
func (h *Hub) dropBoardsLocked() {
	for _, b := range h.boards {
		for s := range b.subs {
			s.conn.Close(CloseGoingAway, "resync")
		}
	}
	h.boards = nil
	h.boardGauges()
}

// boardGauges sets the board gauges. Called with pubMu held.
func (h *Hub) boardGauges() {
	n := 0
	for _, b := range h.boards {
		n += len(b.states)
	}
	h.m.boards.Set(float64(len(h.boards)))
	h.m.boardStates.Set(float64(n))
}

// unindexBoard removes a leaderboard subscription from its board, and the
// board from the hub when it was the last.
func (h *Hub) unindexBoard(s *sub) {
	h.pubMu.Lock()
	defer h.pubMu.Unlock()
	b := s.board
	delete(b.subs, s)
	if len(b.subs) == 0 && b.loaded && h.boards[b.key] == b {
		delete(h.boards, b.key)
		h.boardGauges()
	}
}

// Boards returns how many boards the hub keeps (each ranks every subject
// of its prefix).
func (h *Hub) Boards() int {
	h.pubMu.Lock()
	defer h.pubMu.Unlock()
	return len(h.boards)
}
