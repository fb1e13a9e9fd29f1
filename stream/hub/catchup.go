package hub

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/repstream/repstream/stream"
)

// Request is a subscribe request.
type Request struct {
	ID int64
	// Sel names subjects, or a prefix; not both.
	Sel stream.Selector
	// Since is the client's cursor; nil asks for a snapshot.
	Since *stream.LSN
	// Epoch, when set, is the epoch the cursor belongs to; a cursor of
	// another epoch gets a snapshot with reset.
	Epoch string
	// Throttle, when positive, coalesces each subject's live deltas and
	// flushes them at most this often.
	Throttle time.Duration
	// Registered, if set, is called once the subscription is registered
	// (Revoke can see it), before its catch-up.
	Registered func()
	// Waiting, if set, is called (at most once) when the catch-up first
	// has to wait for the client to drain its queue: the caller may give
	// back what it holds for the request (a worker slot), since the rest
	// is paced by the client, not by the server.
	Waiting func()
	// Board, when set, makes the request a leaderboard of Sel.Prefix
	// (ModeBoard): no deltas, the board whenever it changes.
	Board *BoardRequest
}

// Result tells how a subscription caught up.
type Result struct {
	Mode  string // ModeReplay or ModeSnapshot
	Reset bool
	LSN   stream.LSN // H: caught up to here; live deltas above it follow
	Sent  int        // deltas replayed, or states in the snapshot
}

// Subscribe registers a subscription on c and catches it up exactly: it
// registers for live deltas first (buffering them), sends "subscribed" and
// then the replay (from the ring when it covers the cursor, else from the
// store) or the snapshot up to H, then releases the buffered deltas above H
// and goes live. No delta is skipped and none is sent twice.
//
// Subscribe waits for the client to drain its queue while it replays (it
// never overflows the queue itself), so it must not run on the goroutine
// that reads the client's socket. Calls for one connection must not overlap.
// A *Error tells the client what was wrong; the connection stays.
func (c *Conn) Subscribe(ctx context.Context, r Request) (Result, error) {
	h := c.h
	if r.Board != nil {
		return c.subscribeBoard(ctx, r)
	}
	if err := h.validate(r); err != nil {
		return Result{}, err
	}
	epoch, _, err := h.Ready(ctx)
	if err != nil {
		return Result{}, err
	}
	subjects := slices.Clone(r.Sel.Subjects)
	slices.Sort(subjects)
	s := &sub{conn: c, id: r.ID, prefix: r.Sel.Prefix, throttle: r.Throttle,
		subjects: slices.Clip(slices.Compact(subjects)), catchingUp: true}
	// Indexed and h0 read under pubMu, between two Publish calls: every
	// transaction at or below h0 was fanned out (and its frames queued for
	// the connection's other subscriptions) before s's "subscribed", every
	// one above h0 reaches s's buffer. So after "subscribed" the client
	// gets no frame at or below H (h0) but those owed to s; that is what
	// lets it tell s's replay from its other subscriptions' live deltas.
	h.pubMu.Lock()
	err = h.index(s)
	h0 := h.Head()
	h.pubMu.Unlock()
	if err != nil {
		return Result{}, err
	}
	if r.Registered != nil {
		r.Registered()
		s.mu.Lock()
		revoked := s.closed
		s.mu.Unlock()
		if revoked {
			return Result{}, ErrClosed
		}
	}
	if r.Waiting != nil {
		c.mu.Lock()
		c.waiting = r.Waiting
		c.mu.Unlock()
		defer func() {
			c.mu.Lock()
			c.waiting = nil
			c.mu.Unlock()
		}()
	}
	res, err := h.catchUp(ctx, s, r, epoch, h0)
	if err != nil {
		c.subMu.Lock()
		c.removeSub(s) // unless Unsubscribe or Revoke took it already
		c.subMu.Unlock()
		h.unindex(s)
		var he *Error
		if errors.As(err, &he) {
			return Result{}, err
		}
		if errors.Is(err, ErrClosed) || ctx.Err() != nil {
			return Result{}, err
		}
		return Result{}, errf(CodeInternal, "catch-up failed", err)
	}
	return res, nil
}

func (h *Hub) validate(r Request) error {
	if r.Sel.Prefix != "" && len(r.Sel.Subjects) > 0 {
		return errf(CodeBadRequest, "give subjects or prefix, not both", nil)
	}
	if r.Sel.Prefix == "" && len(r.Sel.Subjects) == 0 {
		return errf(CodeBadRequest, "subjects or a non-empty prefix is required", nil)
	}
	for _, x := range r.Sel.Subjects {
		if x == "" {
			return errf(CodeBadRequest, "empty subject", nil)
		}
	}
	if r.Throttle < 0 {
		return errf(CodeBadRequest, "throttle_ms must not be negative", nil)
	}
	return nil
}

func (s *sub) weight() int {
	if s.prefix != "" {
		return 1
	}
	return len(s.subjects)
}

// index adds s to its connection and the subject index.
func (h *Hub) index(s *sub) error {
	c := s.conn
	c.subMu.Lock()
	if c.removed {
		c.subMu.Unlock()
		return ErrClosed
	}
	if len(c.subs) >= h.cfg.MaxSubscriptions {
		c.subMu.Unlock()
		return errf(CodeTooManySubscriptions, "this connection holds the most subscriptions allowed", nil)
	}
	if c.subjects+s.weight() > h.cfg.MaxSubjects {
		c.subMu.Unlock()
		return errf(CodeTooManySubscriptions, "this connection names the most subjects allowed", nil)
	}
	c.subs = append(c.subs, s)
	c.subjects += s.weight()
	c.subMu.Unlock()
	if s.board != nil {
		// Registered in its board by subscribeBoard.
	} else if s.prefix != "" {
		h.prefixes.add(s)
	} else {
		for _, x := range s.subjects {
			sh := h.shardOf(x)
			sh.mu.Lock()
			m := sh.subs[x]
			if m == nil {
				m = make(map[*sub]struct{})
				sh.subs[x] = m
			}
			m[s] = struct{}{}
			sh.mu.Unlock()
		}
	}
	h.nsubs.Add(1)
	h.m.subs.Inc()
	return nil
}

// unindex removes s from the subject index and stops it. It does not touch
// the connection's set.
func (h *Hub) unindex(s *sub) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	s.pending, s.buf = nil, nil
	subjects := s.subjects // no longer changed: the subscription is closed
	s.mu.Unlock()
	if s.board != nil {
		h.unindexBoard(s)
	} else if s.prefix != "" {
		h.prefixes.remove(s)
	}
	for _, x := range subjects {
		h.unindexSubject(s, x)
	}
	h.nsubs.Add(-1)
	h.m.subs.Dec()
}

func (h *Hub) unindexSubject(s *sub, x string) {
	sh := h.shardOf(x)
	sh.mu.Lock()
	if m := sh.subs[x]; m != nil {
		delete(m, s)
		if len(m) == 0 {
			delete(sh.subs, x)
		}
	}
	sh.mu.Unlock()
}

// Unsubscribe removes the named subjects from c's subscriptions, and the
// subscriptions whose prefix is sel.Prefix. It returns how many subjects and
// prefixes were removed.
func (c *Conn) Unsubscribe(sel stream.Selector) int {
	h := c.h
	n := 0
	c.subMu.Lock()
	var gone []*sub
	for _, s := range c.subs {
		if s.board != nil {
			continue // see UnsubscribeBoard
		}
		if s.prefix != "" {
			if s.prefix == sel.Prefix {
				gone = append(gone, s)
				n++
			}
			continue
		}
		s.mu.Lock()
		for _, x := range sel.Subjects {
			if i, ok := slices.BinarySearch(s.subjects, x); ok && !s.closed {
				s.subjects = slices.Delete(s.subjects, i, i+1)
				delete(s.pending, x) // a throttled delta held for x is no longer owed
				h.unindexSubject(s, x)
				c.subjects--
				n++
			}
		}
		if len(s.subjects) == 0 {
			gone = append(gone, s)
		}
		s.mu.Unlock()
	}
	for _, s := range gone {
		c.removeSub(s)
	}
	c.subMu.Unlock()
	for _, s := range gone {
		h.unindex(s)
	}
	return n
}

// catchUp sends subscribed, the replay or snapshot, and releases the buffer.
func (h *Hub) catchUp(ctx context.Context, s *sub, r Request, epoch string, h0 stream.LSN) (Result, error) {
	c := s.conn
	if r.Since == nil {
		return h.snapshot(ctx, s, r, h0, false)
	}
	since := *r.Since
	if r.Epoch != "" && r.Epoch != epoch {
		return h.snapshot(ctx, s, r, h0, true)
	}
	if since > h0 {
		// The cursor is ahead of what this hub has published. It may come
		// from a node further along; the store is the judge.
		m, err := h.log.Meta(ctx)
		if err != nil {
			return Result{}, err
		}
		if m.Epoch != epoch {
			h.nudge()
			c.Close(CloseGoingAway, "epoch changed")
			return Result{}, ErrClosed
		}
		if since > Position(m.Checkpoint) {
			return Result{}, errf(CodeBadCursor, "cursor "+since.String()+" is ahead of the server ("+max(h0, Position(m.Checkpoint)).String()+")", nil)
		}
	}
	sel := s.selector()
	if gs, ok := h.ring.read(sel, since, h0); ok {
		// The ring's replay stops at h0: later transactions are in s's
		// buffer (and their frames for other subscriptions may still be
		// on their way, so they must stay above H).
		H := h0
		h.m.replays.WithLabelValues("ring").Inc()
		if !c.Enqueue(h.codecs[c.codec].Subscribed(r.ID, H, ModeReplay, false)) {
			return Result{}, ErrClosed
		}
		n := 0
		for _, g := range gs {
			if err := c.enqueueWait(ctx, h.frameOf(g.t, g.items, c.codec)); err != nil {
				return Result{}, err
			}
			n += len(g.items)
		}
		return Result{Mode: ModeReplay, LSN: H, Sent: n}, h.release(ctx, s, H)
	}
	m, err := h.log.Meta(ctx)
	if err != nil {
		return Result{}, err
	}
	if m.Epoch != epoch {
		// The store started an epoch this hub has not heard of: close the
		// connection (its client reconnects and sees the new epoch in
		// welcome) and have Follow read the store now.
		h.nudge()
		c.Close(CloseGoingAway, "epoch changed")
		return Result{}, ErrClosed
	}
	if since < m.LogFrom {
		return h.snapshot(ctx, s, r, h0, true)
	}
	h.m.replays.WithLabelValues("log").Inc()
	H := max(h0, since)
	if err := h.enqueueSubscribed(ctx, c, h.codecs[c.codec].Subscribed(r.ID, H, ModeReplay, false), H); err != nil {
		return Result{}, err
	}
	n, err := h.replayLog(ctx, c, sel, since, H)
	if errors.Is(err, stream.ErrPruned) {
		// Retention pruned the log under the replay: what was sent holds
		// no gap, but the rest is gone. Start over: a second subscribed,
		// a snapshot marked reset, then live deltas.
		h.logger.Info("hub: the log was pruned during a replay; resetting the subscription", "id", r.ID)
		return h.snapshot(ctx, s, r, h0, true)
	}
	if err != nil {
		return Result{}, err
	}
	return Result{Mode: ModeReplay, LSN: H, Sent: n}, h.release(ctx, s, H)
}

// replayLog sends the selected deltas with since < lsn <= upto from the
// store, page by page, one frame per transaction. The next page is read
// while this one is sent, so the store and the client work at once.
func (h *Hub) replayLog(ctx context.Context, c *Conn, sel stream.Selector, since, upto stream.LSN) (int, error) {
	type page struct {
		ds  []stream.Delta
		err error
	}
	pages := make(chan page, 1)
	fctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(pages)
		for from := since; from < upto; {
			ds, err := h.log.Deltas(fctx, sel, from, upto, h.cfg.ReplayPage)
			select {
			case pages <- page{ds, err}:
			case <-fctx.Done():
				return
			}
			if err != nil || len(ds) < h.cfg.ReplayPage || len(ds) == 0 {
				return
			}
			from = ds[len(ds)-1].LSN
		}
	}()
	n := 0
	for p := range pages {
		if p.err != nil {
			return n, p.err
		}
		ds := p.ds
		for i := 0; i < len(ds); {
			j := i + 1
			for j < len(ds) && ds[j].LSN == ds[i].LSN {
				j++
			}
			if ds[i].LSN <= since || ds[i].LSN > upto {
				return n, errors.New("hub: store returned deltas out of range or order")
			}
			if err := c.enqueueWait(ctx, h.frameOf(nil, newItems(ds[i:j]), c.codec)); err != nil {
				return n, err
			}
			n += j - i
			since = ds[i].LSN
			i = j
		}
	}
	return n, nil
}

// publishedWait bounds how long a subscribe waits for this hub to publish
// what its store already holds.
const publishedWait = 10 * time.Second

// enqueueSubscribed queues a "subscribed" frame at H once the hub has
// fanned out every transaction at or below H: the store commits a
// transaction a moment before the hub publishes it (and a cursor from a
// node further along may name one this hub has yet to publish), and the
// connection's other subscriptions' live frames at or below H must all
// come before "subscribed", or a client could not tell them from this
// subscription's replay.
func (h *Hub) enqueueSubscribed(ctx context.Context, c *Conn, frame []byte, H stream.LSN) error {
	if h.Head() < H {
		h.nudge() // a node fed by the store reads it now
		ctx, cancel := context.WithTimeout(ctx, publishedWait)
		defer cancel()
		for wait := 50 * time.Microsecond; h.Head() < H; wait = min(2*wait, 5*time.Millisecond) {
			select {
			case <-ctx.Done():
				return errf(CodeInternal, "this node has not published up to "+H.String()+" yet; retry", ctx.Err())
			case <-time.After(wait):
			}
		}
	}
	// Under pubMu: a Publish that moved the head has fanned out all of it.
	h.pubMu.Lock()
	ok := c.Enqueue(frame)
	h.pubMu.Unlock()
	if !ok {
		return ErrClosed
	}
	return nil
}

// snapshot sends the subscription's states, read a chunk at a time in
// subject order (one page per snapshot message, so no subscriber holds a
// large prefix's states at once), then whatever lies between the first
// page's head and h0, then releases the buffer.
//
// The snapshot's lsn is the first page's head hs; a later page may hold
// states newer than hs. The live deltas that follow are every one above
// hs, so a client, which applies a delta only above the lsn of the state it
// holds, ends exactly where the server is.
func (h *Hub) snapshot(ctx context.Context, s *sub, r Request, h0 stream.LSN, reset bool) (Result, error) {
	c := s.conn
	sel := s.selector()
	mode := "snapshot"
	if reset {
		mode = "snapshot_reset"
	}
	h.m.replays.WithLabelValues(mode).Inc()
	chunk := h.cfg.SnapshotChunk
	page, head, err := h.log.StatesAfter(ctx, sel, "", chunk)
	if err != nil {
		return Result{}, err
	}
	hs := Position(head)
	codec := h.codecs[c.codec]
	if err := h.enqueueSubscribed(ctx, c, codec.Subscribed(r.ID, hs, ModeSnapshot, reset), hs); err != nil {
		return Result{}, err
	}
	sent := 0
	for {
		var next []stream.State
		if len(page) == chunk {
			if next, _, err = h.log.StatesAfter(ctx, sel, page[len(page)-1].Subject, chunk); err != nil {
				return Result{}, err
			}
		}
		if err := c.enqueueWait(ctx, Frame{Bytes: codec.Snapshot(r.ID, hs, page, len(next) > 0)}); err != nil {
			return Result{}, err
		}
		sent += len(page)
		if len(next) == 0 {
			break
		}
		page = next
	}
	H := hs
	if hs < h0 {
		// The store's read is older than what the hub already fanned out
		// (it should not be: the store commits before it publishes).
		if _, err := h.replayLog(ctx, c, sel, hs, h0); err != nil {
			return Result{}, err
		}
		H = h0
	}
	return Result{Mode: ModeSnapshot, Reset: reset, LSN: H, Sent: sent}, h.release(ctx, s, H)
}

// release ends catch-up: buffered deltas above H are sent, one frame per
// transaction, and s goes live. Like the replay it paces itself by the
// client: it takes the buffer and sends it without holding s.mu, so Publish
// keeps buffering (up to CatchupBuffer) instead of a burst overflowing the
// queue, and goes live only once the buffer is empty.
func (h *Hub) release(ctx context.Context, s *sub, H stream.LSN) error {
	c := s.conn
	sent := H // every delta s is owed at or below it was sent
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return ErrClosed
		}
		gs := s.buf
		if len(gs) == 0 {
			s.buf, s.bufDeltas, s.catchingUp, s.floor = nil, 0, false, H
			// Under s.mu: before any live frame of s (route takes s.mu).
			c.Enqueue(h.codecs[c.codec].CaughtUp(s.id, sent))
			s.mu.Unlock()
			return nil
		}
		s.buf, s.bufDeltas = nil, 0
		s.mu.Unlock()
		for _, g := range gs {
			if g.lsn() <= H {
				continue
			}
			if err := c.enqueueWait(ctx, h.frameOf(g.t, g.items, c.codec)); err != nil {
				return err
			}
			sent = g.lsn()
		}
	}
}
