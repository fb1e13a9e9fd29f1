package api

import (
	"context"
	"testing"
	"time"

	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/hub"
)

// slowMeta is a store whose Meta waits for its context's end, as a check
// queued behind a pool that a storm of subscribes keeps busy; its other
// reads answer.
type slowMeta struct{ stream.Log }

func (slowMeta) Meta(ctx context.Context) (stream.Meta, error) {
	<-ctx.Done()
	return stream.Meta{}, ctx.Err()
}

// TestStoreCheckCountsAnsweredReads: the reads the node's clients make are
// the store's answers too. A check that times out while they are answered
// does not refuse anyone (before, a reconnect storm of 10,000 clients got
// 503s from a check stuck behind their own reads); with no read answered,
// the timed-out check refuses.
func TestStoreCheckCountsAnsweredReads(t *testing.T) {
	ctx := context.Background()
	store := slowMeta{hub.NewMemLog("epoch-1", 0x1000)}
	c := &storeCheck{log: store}
	l := answeredLog{Log: store, c: c}
	if err := c.err(); err == nil {
		t.Fatal("no read answered and the check timed out: err = nil, want the store judged gone")
	}
	if _, _, err := l.States(ctx, stream.Selector{}, "", 0); err != nil {
		t.Fatal(err)
	}
	if err := c.err(); err != nil {
		t.Fatalf("a read was just answered: err = %v, want nil", err)
	}
	time.Sleep(storeCheckEvery + 100*time.Millisecond)
	if err := c.err(); err == nil {
		t.Fatal("no read answered for longer than storeCheckEvery and the check timed out: err = nil, want the store judged gone")
	}
	// A verdict is an answer: not found, pruned.
	if _, err := l.State(ctx, "seller:none"); err != stream.ErrNotFound {
		t.Fatalf("State of an unknown subject: %v, want ErrNotFound", err)
	}
	if err := c.err(); err != nil {
		t.Fatalf("a not-found answer was just given: err = %v, want nil", err)
	}
}
