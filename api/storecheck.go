package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/stream"
)

const (
	// storeCheckEvery is how long one answer of the store check stands, so
	// a storm of connects costs the store one read a second.
	storeCheckEvery = time.Second
	// storeCheckTimeout bounds the check's read: a black-holed store is
	// judged gone at once, not after a TCP timeout.
	storeCheckTimeout = 500 * time.Millisecond
)

// storeCheck tells whether this node can serve at all: every stream and
// every REST read starts from the store. A node that cannot reach it
// refuses with 503, so a load balancer (nginx's proxy_next_upstream
// http_503) hands the request to another node at once, and marks this
// one failed, instead of a client hanging on it.
//
// Every store read of the node counts as an answer (see answeredLog): a
// storm of reconnecting clients keeps the pool busy, so a check of its own
// could time out waiting for a connection while the store answers them
// all, and refusing them would make the storm its own cause.
type storeCheck struct {
	log stream.Log

	mu      sync.Mutex
	at      time.Time // of the last answer
	last    error
	running bool
	// answered is the UnixNano of the last read the store answered.
	answered atomic.Int64
}

// err is nil while the store answers. Callers that arrive while a check
// runs get the previous answer rather than waiting on it.
func (c *storeCheck) err() error {
	answered := time.Unix(0, c.answered.Load())
	if time.Since(answered) < storeCheckEvery {
		return nil
	}
	c.mu.Lock()
	if answered.After(c.at) && !c.at.IsZero() {
		c.last = nil // a read was answered after the check that failed
	}
	if c.running || (!c.at.IsZero() && time.Since(c.at) < storeCheckEvery) {
		err := c.last
		c.mu.Unlock()
		return err
	}
	c.running = true
	c.mu.Unlock()
	return c.check()
}

// now checks the store now, whatever the last answer: for a caller whose
// own store read just failed.
func (c *storeCheck) now() error {
	c.mu.Lock()
	c.running = true
	c.mu.Unlock()
	return c.check()
}

func (c *storeCheck) check() error {
	ctx, cancel := context.WithTimeout(context.Background(), storeCheckTimeout)
	_, err := c.log.Meta(ctx)
	if ctx.Err() != nil {
		err = fmt.Errorf("the store does not answer within %s", storeCheckTimeout)
	} else if err != nil {
		err = fmt.Errorf("the store does not answer: %w", err)
	}
	cancel()
	c.mu.Lock()
	c.last, c.at, c.running = err, time.Now(), false
	c.mu.Unlock()
	return err
}

// refuseWithoutStore answers 503 unavailable, with Retry-After, when this
// node cannot reach its store; it reports whether it did.
func (s *Server) refuseWithoutStore(w http.ResponseWriter) bool {
	err := s.store.err()
	if err == nil {
		return false
	}
	s.m.storeRefusals.Inc()
	w.Header().Set("Retry-After", "1")
	writeError(w, http.StatusServiceUnavailable, wire.CodeUnavailable, "this node cannot serve now, try another: "+err.Error())
	return true
}

// requireStore is refuseWithoutStore as middleware for the REST reads.
func (s *Server) requireStore(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.refuseWithoutStore(w) {
			next.ServeHTTP(w, r)
		}
	})
}

// answeredLog is the node's store, telling its storeCheck of every read
// the store answered: a result, or a verdict such as not found or pruned.
type answeredLog struct {
	stream.Log
	c *storeCheck
}

func (l answeredLog) seen(err error) {
	if err == nil || errors.Is(err, stream.ErrNotFound) || errors.Is(err, stream.ErrPruned) {
		l.c.answered.Store(time.Now().UnixNano())
	}
}

func (l answeredLog) Meta(ctx context.Context) (stream.Meta, error) {
	m, err := l.Log.Meta(ctx)
	l.seen(err)
	return m, err
}

func (l answeredLog) State(ctx context.Context, subject string) (stream.State, error) {
	st, err := l.Log.State(ctx, subject)
	l.seen(err)
	return st, err
}

func (l answeredLog) States(ctx context.Context, sel stream.Selector, order stream.Order, limit int) ([]stream.State, stream.LSN, error) {
	sts, head, err := l.Log.States(ctx, sel, order, limit)
	l.seen(err)
	return sts, head, err
}

func (l answeredLog) StatesAfter(ctx context.Context, sel stream.Selector, after string, limit int) ([]stream.State, stream.LSN, error) {
	sts, head, err := l.Log.StatesAfter(ctx, sel, after, limit)
	l.seen(err)
	return sts, head, err
}

func (l answeredLog) Deltas(ctx context.Context, sel stream.Selector, since, upto stream.LSN, limit int) ([]stream.Delta, error) {
	ds, err := l.Log.Deltas(ctx, sel, since, upto, limit)
	l.seen(err)
	return ds, err
}
