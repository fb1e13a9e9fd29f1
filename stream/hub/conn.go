package hub

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Conn is one client connection's side of the hub: a bounded queue of
// encoded frames, and its subscriptions. The hub and the connection's
// request handling enqueue; one writer goroutine (the WebSocket session)
// drains the queue with Wait and Pop. Enqueueing never blocks the pipeline:
// when the queue overflows the connection is closed with 4008 and its frames
// are dropped.
//
// Conn is safe for concurrent use.
type Conn struct {
	h     *Hub
	codec int

	mu        sync.Mutex
	q         [][]byte      // guarded by mu
	qBytes    int           // guarded by mu
	closed    bool          // guarded by mu
	code      int           // guarded by mu
	reason    string        // guarded by mu
	spaceWait chan struct{} // guarded by mu; closed when the queue drains below the soft limit
	wake      chan struct{} // cap 1: frames are queued
	done      chan struct{} // closed by Close

	lastSend atomic.Int64 // unix nanos of the last frame enqueued

	subMu    sync.Mutex
	subs     map[*sub]struct{} // guarded by subMu
	subjects int               // guarded by subMu; subjects and prefixes named by subs
	removed  bool              // guarded by subMu; Disconnect ran
}

// Codec returns the index of the connection's codec in the hub's Codecs.
func (c *Conn) Codec() int { return c.codec }

// Enqueue queues a frame without waiting. If the queue is full the
// connection is closed with 4008 and false is returned; a closed connection
// also returns false.
func (c *Conn) Enqueue(frame []byte) bool {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		c.h.m.dropped.Inc()
		return false
	}
	if len(c.q) > 0 && (c.qBytes+len(frame) > c.h.cfg.QueueBytes || len(c.q) >= c.h.cfg.QueueFrames) {
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
func (c *Conn) enqueueWait(ctx context.Context, frame []byte) error {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return ErrClosed
		}
		if len(c.q) == 0 || (c.qBytes+len(frame) <= c.h.cfg.QueueBytes/2 && len(c.q) < c.h.cfg.QueueFrames/2) {
			c.pushLocked(frame)
			c.mu.Unlock()
			return nil
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

func (c *Conn) pushLocked(frame []byte) {
	c.q = append(c.q, frame)
	c.qBytes += len(frame)
	c.lastSend.Store(time.Now().UnixNano())
	c.h.m.enqueued.Inc()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Wake is signalled when frames are queued.
func (c *Conn) Wake() <-chan struct{} { return c.wake }

// Done is closed when the connection is closed.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Pop takes every queued frame, in order. The writer must not modify them:
// the same bytes go to other connections.
func (c *Conn) Pop() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	q := c.q
	c.q, c.qBytes = nil, 0
	if c.spaceWait != nil {
		close(c.spaceWait)
		c.spaceWait = nil
	}
	return q
}

// Close closes the connection with a WebSocket close code and reason and
// drops its queue. The first call wins; later calls are no-ops.
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

// Subscriptions returns how many subscriptions the connection holds.
func (c *Conn) Subscriptions() int {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	return len(c.subs)
}

// idle reports whether the connection may get a tick: nothing was sent for
// a heartbeat, and no subscription is catching up or holds coalesced deltas.
func (c *Conn) idle(now time.Time) bool {
	if now.Sub(time.Unix(0, c.lastSend.Load())) < c.h.cfg.Heartbeat {
		return false
	}
	c.subMu.Lock()
	defer c.subMu.Unlock()
	for s := range c.subs {
		s.mu.Lock()
		busy := s.catchingUp || len(s.pending) > 0
		s.mu.Unlock()
		if busy {
			return false
		}
	}
	return true
}
