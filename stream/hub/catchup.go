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
	if err := h.index(s); err != nil {
		return Result{}, err
	}
	// Every transaction not routed to s's buffer was fanned out before s
	// was indexed, so it is at or below h0 (Publish moves head first).
	h0 := h.Head()
	res, err := h.catchUp(ctx, s, r, epoch, h0)
	if err != nil {
		c.subMu.Lock()
		c.removeSub(s)
		c.subjects -= s.weight()
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
	if s.prefix != "" {
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
	if s.prefix != "" {
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
		c.subjects -= s.weight()
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
	if gs, H, ok := h.ring.read(sel, since); ok {
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
	if !c.Enqueue(h.codecs[c.codec].Subscribed(r.ID, H, ModeReplay, false)) {
		return Result{}, ErrClosed
	}
	n, err := h.replayLog(ctx, c, sel, since, H)
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

// snapshot sends the subscription's states at a consistent head, then
// whatever lies between that head and h0, then releases the buffer.
func (h *Hub) snapshot(ctx context.Context, s *sub, r Request, h0 stream.LSN, reset bool) (Result, error) {
	c := s.conn
	sel := s.selector()
	mode := "snapshot"
	if reset {
		mode = "snapshot_reset"
	}
	h.m.replays.WithLabelValues(mode).Inc()
	states, head, err := h.log.States(ctx, sel, "", 0)
	if err != nil {
		return Result{}, err
	}
	hs := Position(head)
	codec := h.codecs[c.codec]
	if !c.Enqueue(codec.Subscribed(r.ID, hs, ModeSnapshot, reset)) {
		return Result{}, ErrClosed
	}
	chunk := h.cfg.SnapshotChunk
	for i := 0; i == 0 || i < len(states); i += chunk {
		part := states[i:min(i+chunk, len(states))]
		if err := c.enqueueWait(ctx, Frame{Bytes: codec.Snapshot(r.ID, hs, part, i+chunk < len(states))}); err != nil {
			return Result{}, err
		}
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
	return Result{Mode: ModeSnapshot, Reset: reset, LSN: H, Sent: len(states)}, h.release(ctx, s, H)
}

// release ends catch-up: buffered deltas above H are sent, one frame per
// transaction, and s goes live. Like the replay it paces itself by the
// client: it takes the buffer and sends it without holding s.mu, so Publish
// keeps buffering (up to CatchupBuffer) instead of a burst overflowing the
// queue, and goes live only once the buffer is empty.
func (h *Hub) release(ctx context.Context, s *sub, H stream.LSN) error {
	c := s.conn
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return ErrClosed
		}
		gs := s.buf
		if len(gs) == 0 {
			s.buf, s.bufDeltas, s.catchingUp, s.floor = nil, 0, false, H
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
		}
	}
}
