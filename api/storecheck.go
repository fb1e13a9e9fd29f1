package api

import (
	"context"
	"fmt"
	"net/http"
	"sync"
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
type storeCheck struct {
	log stream.Log

	mu      sync.Mutex
	at      time.Time // of the last answer
	last    error
	running bool
}

// err is nil while the store answers. Callers that arrive while a check
// runs get the previous answer rather than waiting on it.
func (c *storeCheck) err() error {
	c.mu.Lock()
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
