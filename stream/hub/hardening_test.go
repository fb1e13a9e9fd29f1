package hub_test

import (
	"context"
	"testing"
	"time"

	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/hub"
)

// expectTypes reads messages of the given types, in order.
func (rd *reader) expectTypes(t *testing.T, types ...string) []wire.ServerMessage {
	t.Helper()
	var ms []wire.ServerMessage
	for _, want := range types {
		m := rd.next(t)
		if m.Type != want {
			t.Fatalf("got %+v, want type %s", m, want)
		}
		ms = append(ms, m)
	}
	return ms
}

// quiet checks that nothing arrives for d.
func (rd *reader) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case m := <-rd.msgs:
		t.Fatalf("unexpected %+v", m)
	case <-time.After(d):
	}
}

// A throttled subscription's held deltas of subjects unsubscribed since
// are dropped, not flushed.
func TestThrottledPendingDroppedOnPartialUnsubscribe(t *testing.T) {
	r := newRig(t, hub.Config{})
	c := r.h.Connect(0)
	defer r.h.Disconnect(c)
	rd := newReader(t, c, wire.JSON{})
	defer rd.close()
	sel := stream.Selector{Subjects: []string{"seller:1", "seller:2"}}
	if _, err := c.Subscribe(context.Background(), hub.Request{ID: 1, Sel: sel, Throttle: 300 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	rd.expectTypes(t, "subscribed", "snapshot")
	r.write(hub.Op{Subject: "seller:1", Score: 5e6}, hub.Op{Subject: "seller:2", Score: 4e6})
	if n := c.Unsubscribe(stream.Selector{Subjects: []string{"seller:2"}}); n != 1 {
		t.Fatalf("unsubscribed %d", n)
	}
	m := rd.next(t)
	if len(m.Deltas) != 1 || m.Deltas[0].Subject != "seller:1" {
		t.Fatalf("flushed %+v; want only seller:1", m)
	}
	rd.quiet(t, 400*time.Millisecond)
}
