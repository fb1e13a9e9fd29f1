package hub

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/repstream/repstream/stream"
)

// Conn is one client connection's side of the hub: a bounded queue of
// encoded frames, and its subscriptions. The hub and the connection's
// request handling enqueue; one writer drains the queue. Enqueueing never
// blocks the pipeline: when the queue overflows the connection is closed
// with 4008 and its frames are dropped.
//
// The writer is a drain that runs only while there is something to do: the
// connection starts it (SetDrain's start) when work arrives for a parked
// writer, and the drain takes its work with Next until Next parks it. An
// idle connection has no writer goroutine at all.
//
// Conn is safe for concurrent use.
type Conn struct {
	h     *Hub
	codec int

	mu        sync.Mutex
	q         []Frame       // guarded by mu
	qBytes    int           // guarded by mu
	closed    bool          // guarded by mu
	running   bool          // guarded by mu; the drain is started and not parked
	poked     bool          // guarded by mu; Poke since the drain's last Next
	code      int           // guarded by mu
	reason    string        // guarded by mu
	spaceWait chan struct{} // guarded by mu; closed when the queue drains below the soft limit
	start     func()        // guarded by mu; set by SetDrain: starts the drain
	waiting   func()        // guarded by mu; Request.Waiting of the catch-up running, until called
	done      chan struct{} // closed by Close

	lastSend atomic.Int64 // unix nanos of the last frame enqueued
	admitted atomic.Bool  // Admit ran: the connection may get ticks

	subMu    sync.Mutex
	subs     []*sub // guarded by subMu; a few (at most MaxSubscriptions): a slice costs less than a map
	subjects int    // guarded by subMu; subjects and prefixes named by subs
	removed  bool   // guarded by subMu; Disconnect ran
}

// Admit lets the connection receive ticks, which tell the server's
// position: call it once the client is authenticated and welcomed. Before
// that the connection gets only what its owner enqueues.
func (c *Conn) Admit() { c.admitted.Store(true) }

// Codec returns the index of the connection's codec in the hub's Codecs.
func (c *Conn) Codec() int { return c.codec }

// Frame is one queued frame. The drain must not modify Bytes: the same
// bytes go to other connections.
type Frame struct {
	Bytes []byte
	// DeltaLSN is the LSN of the one delta the frame holds, when it is a
	// "delta" frame: a whole transaction's share for the connection, which
	// the writer may join with its neighbours into one "deltas" frame.
	// Zero for every other frame.
	DeltaLSN stream.LSN
}

// Enqueue queues a frame without waiting. If the queue is full the
// connection is closed with 4008 and false is returned; a closed connection
// also returns false.
func (c *Conn) Enqueue(frame []byte) bool { return c.enqueue(Frame{Bytes: frame}) }

func (c *Conn) enqueue(frame Frame) bool {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		c.h.m.dropped.Inc()
		return false
	}
	if len(c.q) > 0 && (c.qBytes+len(frame.Bytes) > c.h.cfg.QueueBytes || len(c.q) >= c.h.cfg.QueueFrames) {
		c.mu.Unlock()
		c.h.m.slow.Inc()
		c.h.logger.Info("hub: slow consumer disconnected", "queued_bytes", c.qBytes, "queued_frames", len(c.q))
		c.Close(CloseSlowConsumer, "slow consumer")
		c.h.m.dropped.Inc()
		return false
	}
	c.pushLocked(frame)
	c.mu.Unlock()
	return true
}

// enqueueWait queues a frame, waiting while the queue is above half its
// bound: catch-up paces itself by the client instead of overflowing.
func (c *Conn) enqueueWait(ctx context.Context, frame Frame) error {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return ErrClosed
		}
		if len(c.q) == 0 || (c.qBytes+len(frame.Bytes) <= c.h.cfg.QueueBytes/2 && len(c.q) < c.h.cfg.QueueFrames/2) {
			c.pushLocked(frame)
			c.mu.Unlock()
			return nil
		}
		if f := c.waiting; f != nil {
			// The catch-up is paced by the client from here: let its
			// caller give back what it holds, then look again.
			c.waiting = nil
			c.mu.Unlock()
			f()
			continue
		}
		if c.spaceWait == nil {
			c.spaceWait = make(chan struct{})
		}
		w := c.spaceWait
		c.mu.Unlock()
		select {
		case <-w:
		case <-c.done:
			return ErrClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (c *Conn) pushLocked(frame Frame) {
	c.q = append(c.q, frame)
	c.qBytes += len(frame.Bytes)
	c.lastSend.Store(time.Now().UnixNano())
	c.h.m.enqueued.Inc()
	c.wakeLocked()
}

// wakeLocked starts a parked drain: there is work. Called with mu held.
func (c *Conn) wakeLocked() {
	if c.start != nil && !c.running {
		c.running = true
		c.start()
	}
}

// SetDrain makes the connection drive its writer: from now on, whenever
// frames are queued, Poke is called or the connection is closed while the
// writer is parked, start is called to run the drain, which must take its
// work with Next until Next parks it (ok false) or reports the connection
// closed. At most one drain runs at a time, and no wake-up is lost: work
// that arrives while a drain runs is returned by its next Next.
//
// start is called with the connection's lock held (by Enqueue, Poke, Close
// or SetDrain itself, on whichever goroutine calls them): it must not call
// back into c or block; typically it is `go drain()`. Frames queued before
// SetDrain start the drain at once. Set it once. Without a drain, frames
// wait until Next is called.
func (c *Conn) SetDrain(start func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.start = start
	if len(c.q) > 0 || c.closed || c.poked {
		c.wakeLocked()
	}
}

// Poke wakes the drain for work of the writer's own (a WebSocket ping):
// the next batch from Next has Poked set. It does nothing on a closed
// connection.
func (c *Conn) Poke() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.poked = true
	c.wakeLocked()
}

// Batch is the work Next hands the drain.
type Batch struct {
	// Frames are the queued frames, in order.
	Frames []Frame
	// Poked tells that Poke was called since the previous batch.
	Poked bool
	// Closed tells that the connection is closed (Closed gives the code
	// and reason; queued frames were dropped): the drain writes the close
	// and returns without calling Next again. The connection never starts
	// a drain again.
	Closed bool
}

// Next takes the drain's next batch. When there is nothing to do it parks
// the drain and returns ok false: the drain must return, and the next
// Enqueue, Poke or Close starts it again. Both happen under one hold of the
// connection's lock, so work queued concurrently either is in this batch or
// starts a new drain.
//
// written is the previous batch's Frames, all written (or nil): Next
// clears it and reuses it for the queue, so a busy connection does not
// allocate a queue per batch and an idle one holds none.
func (c *Conn) Next(written []Frame) (b Batch, ok bool) {
	clear(written)
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return Batch{Closed: true}, true // running stays set: no drain again
	case len(c.q) == 0 && !c.poked:
		c.running = false
		c.q = nil
		return Batch{}, false
	}
	b = Batch{Frames: c.q, Poked: c.poked}
	c.poked = false
	c.q, c.qBytes = written[:0], 0
	if c.spaceWait != nil {
		close(c.spaceWait)
		c.spaceWait = nil
	}
	return b, true
}

// Done is closed when the connection is closed.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Close closes the connection with a WebSocket close code and reason and
// drops its queue; a parked drain is started to write the close. The first
// call wins; later calls are no-ops.
func (c *Conn) Close(code int, reason string) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed, c.code, c.reason = true, code, reason
	if n := len(c.q); n > 0 {
		c.h.m.dropped.Add(float64(n))
	}
	c.q, c.qBytes = nil, 0
	if c.start != nil {
		c.poked = false
		c.wakeLocked()
	}
	c.mu.Unlock()
	close(c.done)
}

// Closed reports whether the connection is closed, and with which code and
// reason.
func (c *Conn) Closed() (closed bool, code int, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed, c.code, c.reason
}

// removeSub drops s from c.subs and its subjects from c.subjects,
// reporting whether it was there. Called with subMu held.
func (c *Conn) removeSub(s *sub) bool {
	i := slices.Index(c.subs, s)
	if i < 0 {
		return false
	}
	c.subs = slices.Delete(c.subs, i, i+1)
	c.subjects -= s.weight()
	return true
}

// Revoke stops every subscription whose selector keep refuses (a
// refreshed token that no longer covers it) and returns their request ids,
// so the client can be told. A subscription still catching up stops too:
// its Subscribe returns ErrClosed.
func (c *Conn) Revoke(keep func(sel stream.Selector, board bool) bool) []int64 {
	c.subMu.Lock()
	var gone []*sub
	for _, s := range c.subs {
		if !keep(s.selector(), s.board != nil) {
			gone = append(gone, s)
		}
	}
	ids := make([]int64, 0, len(gone))
	for _, s := range gone {
		c.removeSub(s)
		ids = append(ids, s.id)
	}
	c.subMu.Unlock()
	for _, s := range gone {
		c.h.unindex(s)
	}
	return ids
}

// Subscriptions returns how many subscriptions the connection holds.
func (c *Conn) Subscriptions() int {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	return len(c.subs)
}

// tickAt reports whether the connection may get a tick, and at which
// position: it was admitted, nothing was sent for a heartbeat, and no
// subscription is catching up. A throttled subscription holding deltas
// bounds the position below the first one it holds, so the tick claims
// only what was flushed, and a throttle longer than the client's watchdog
// does not leave the connection silent.
func (c *Conn) tickAt(now time.Time, head stream.LSN) (stream.LSN, bool) {
	if !c.admitted.Load() {
		return 0, false
	}
	if now.Sub(time.Unix(0, c.lastSend.Load())) < c.h.cfg.Heartbeat {
		return 0, false
	}
	pos := head
	c.subMu.Lock()
	defer c.subMu.Unlock()
	for _, s := range c.subs {
		s.mu.Lock()
		busy := s.catchingUp
		if len(s.pending) > 0 && s.heldFrom > 0 {
			pos = min(pos, s.heldFrom-1)
		}
		s.mu.Unlock()
		if busy {
			return 0, false
		}
	}
	return pos, true
}
