package hub_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
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

// pruneAfterFirstPage prunes the log up to upto right after the first page
// of deltas is read, as retention may while a client-paced replay runs.
type pruneAfterFirstPage struct {
	*hub.MemLog
	once sync.Once
	upto stream.LSN
}

func (p *pruneAfterFirstPage) Deltas(ctx context.Context, sel stream.Selector, since, upto stream.LSN, limit int) ([]stream.Delta, error) {
	ds, err := p.MemLog.Deltas(ctx, sel, since, upto, limit)
	p.once.Do(func() { p.MemLog.Prune(p.upto) })
	return ds, err
}

// Pruning during a replay from the store turns into a reset: the
// subscription is answered again with a snapshot marked reset, never left
// with a gap.
func TestPruneDuringReplayResets(t *testing.T) {
	log := hub.NewMemLog("epoch-1", 0x1000)
	var lsns []stream.LSN
	lsn := stream.LSN(0x1000)
	for i := range 20 {
		if _, err := log.Commit(lsn, []hub.Op{{Subject: "seller:1", Score: stream.Micro(1+i%5) * stream.MicroUnit}}); err != nil {
			t.Fatal(err)
		}
		lsns = append(lsns, lsn)
		lsn += 0x10
	}
	pl := &pruneAfterFirstPage{MemLog: log, upto: lsns[12]}
	h := hub.New(hub.Options{Log: pl, Codecs: hubCodecs(), Config: hub.Config{RingDeltas: -1, ReplayPage: 3}})
	m, _ := log.Meta(context.Background())
	h.Reset(m)
	c := h.Connect(0)
	defer h.Disconnect(c)
	rd := newReader(t, c, wire.JSON{})
	defer rd.close()
	since := lsns[0]
	res, err := c.Subscribe(context.Background(), hub.Request{ID: 1, Sel: stream.Selector{Subjects: []string{"seller:1"}}, Since: &since})
	if err != nil {
		t.Fatal(err)
	}
	if res.Mode != hub.ModeSnapshot || !res.Reset {
		t.Fatalf("result %+v; want a snapshot with reset", res)
	}
	first := rd.expectTypes(t, "subscribed")[0]
	if first.Mode != "replay" {
		t.Fatalf("first %+v", first)
	}
	var replayed []stream.LSN
	for {
		m := rd.next(t)
		if m.Type == "subscribed" {
			if m.Mode != "snapshot" || !m.Reset || m.ID != 1 {
				t.Fatalf("second subscribed %+v; want snapshot with reset for id 1", m)
			}
			break
		}
		if m.Type != wire.TypeDelta && m.Type != wire.TypeDeltas {
			t.Fatalf("got %+v during the replay", m)
		}
		for _, d := range m.Deltas {
			replayed = append(replayed, d.LSN)
		}
	}
	for i, l := range replayed { // what was replayed had no gap
		if l != lsns[i+1] {
			t.Fatalf("replayed %v; want a prefix of %v", replayed, lsns[1:])
		}
	}
	snap := rd.expectTypes(t, "snapshot")[0]
	if len(snap.States) != 1 || snap.States[0].Version != 20 || snap.States[0].LSN != lsns[19] {
		t.Fatalf("snapshot %+v; want seller:1 at v20", snap.States)
	}
}

// After a subscription's "subscribed" (at H), the only frames at or below
// H its connection gets are the subscription's own replay: the other
// subscriptions' live frames at or below H all came before it. Its
// catch-up ends with caught_up, after everything it was owed.
func TestSubscribedSeparatesReplayFromOthersLive(t *testing.T) {
	for _, ring := range []int{0, -1} {
		r := newRig(t, hub.Config{RingDeltas: ring, ReplayPage: 7})
		c := r.h.Connect(0)
		rd := newReader(t, c, wire.JSON{})
		rd.caughtUp = true
		ctx, cancel := context.WithCancel(context.Background())
		if _, err := c.Subscribe(ctx, hub.Request{ID: 1, Sel: stream.Selector{Prefix: "seller:"}}); err != nil {
			t.Fatal(err)
		}
		rd.expectTypes(t, "subscribed", "snapshot", "caught_up")
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; ctx.Err() == nil; i++ {
				r.write(hub.Op{Subject: fmt.Sprintf("seller:%d", i%7), Score: 4e6}, hub.Op{Subject: fmt.Sprintf("buyer:%d", i%3), Score: 2e6})
				time.Sleep(100 * time.Microsecond)
			}
		}()
		for id := int64(2); id < 20; id++ {
			since := r.h.Head() - stream.LSN(id%5)*0x40
			if _, err := c.Subscribe(ctx, hub.Request{ID: id, Sel: stream.Selector{Prefix: "buyer:"}, Since: &since}); err != nil {
				t.Fatal(err)
			}
			var H stream.LSN
			for {
				m := rd.next(t)
				if m.Type == wire.TypeSubscribed && m.ID == id {
					H = m.LSN
					break
				}
			}
			for {
				m := rd.next(t)
				if m.Type == wire.TypeCaughtUp && m.ID == id {
					if m.LSN < H {
						t.Fatalf("caught_up at %s below H %s", m.LSN, H)
					}
					break
				}
				for _, d := range m.Deltas {
					if d.LSN <= H && !strings.HasPrefix(d.Subject, "buyer:") {
						t.Fatalf("ring %d, subscription %d: after subscribed at %s, %s's delta at %s", ring, id, H, d.Subject, d.LSN)
					}
				}
			}
			c.Unsubscribe(stream.Selector{Prefix: "buyer:"})
		}
		cancel()
		<-done
		rd.close()
		r.h.Disconnect(c)
	}
}

// A throttle longer than the heartbeat does not silence the connection:
// while deltas are held it gets ticks at the flushed position (below the
// first held delta), so a client's watchdog never fires.
func TestTicksWhileThrottledDeltasHeld(t *testing.T) {
	r := newRig(t, hub.Config{Heartbeat: 40 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.h.Run(ctx) }()
	defer func() { cancel(); <-done }()
	c := r.h.Connect(0)
	defer r.h.Disconnect(c)
	rd := newReader(t, c, wire.JSON{})
	defer rd.close()
	if _, err := c.Subscribe(ctx, hub.Request{ID: 1, Sel: stream.Selector{Prefix: "seller:"}, Throttle: 1500 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	c.Admit() // ticks from here on: none can come before subscribed
	rd.expectTypes(t, "subscribed", "snapshot")
	r.write(hub.Op{Subject: "seller:1", Score: 5e6}) // the first is flushed at once
	if m := rd.next(t); len(m.Deltas) != 1 {
		t.Fatalf("got %+v", m)
	}
	before := r.h.Head()
	tx := r.write(hub.Op{Subject: "seller:1", Score: 4e6})
	r.write(hub.Op{Subject: "seller:1", Score: 2e6})
	ticks := 0
	for {
		m := rd.next(t)
		if m.Type == wire.TypeTick {
			if m.LSN >= tx.LSN || m.LSN < before {
				t.Fatalf("tick at %s while a delta at %s is held (head before it %s)", m.LSN, tx.LSN, before)
			}
			ticks++
			continue
		}
		if len(m.Deltas) != 1 || m.Deltas[0].Coalesced != 2 {
			t.Fatalf("got %+v; want the coalesced delta", m)
		}
		break
	}
	if ticks < 3 {
		t.Fatalf("%d ticks during a 1.5 s throttle with a 40 ms heartbeat; want several", ticks)
	}
}

// pageLog records how states are read.
type pageLog struct {
	*hub.MemLog
	mu      sync.Mutex
	all     int // States calls without a limit
	largest int // the largest page asked for
}

func (p *pageLog) States(ctx context.Context, sel stream.Selector, order stream.Order, limit int) ([]stream.State, stream.LSN, error) {
	p.mu.Lock()
	if limit == 0 {
		p.all++
	}
	p.mu.Unlock()
	return p.MemLog.States(ctx, sel, order, limit)
}

func (p *pageLog) StatesAfter(ctx context.Context, sel stream.Selector, after string, limit int) ([]stream.State, stream.LSN, error) {
	p.mu.Lock()
	if limit == 0 {
		p.all++
	}
	p.largest = max(p.largest, limit)
	p.mu.Unlock()
	return p.MemLog.StatesAfter(ctx, sel, after, limit)
}

// A snapshot of a large prefix is read a chunk at a time, never all at
// once, and arrives whole: every state once, in chunks, the last with more
// false.
func TestSnapshotPaged(t *testing.T) {
	log := hub.NewMemLog("epoch-1", 0x1000)
	var ops []hub.Op
	for i := range 2500 {
		ops = append(ops, hub.Op{Subject: fmt.Sprintf("seller:%d", i), Score: 3e6})
	}
	if _, err := log.Commit(0x1000, ops); err != nil {
		t.Fatal(err)
	}
	pl := &pageLog{MemLog: log}
	h := hub.New(hub.Options{Log: pl, Codecs: hubCodecs(), Config: hub.Config{SnapshotChunk: 1000}})
	m, _ := log.Meta(context.Background())
	h.Reset(m)
	c := h.Connect(0)
	defer h.Disconnect(c)
	rd := newReader(t, c, wire.JSON{})
	defer rd.close()
	if _, err := c.Subscribe(context.Background(), hub.Request{ID: 1, Sel: stream.Selector{Prefix: "seller:"}}); err != nil {
		t.Fatal(err)
	}
	rd.expectTypes(t, "subscribed")
	seen := map[string]bool{}
	var sizes []int
	for {
		m := rd.expectTypes(t, "snapshot")[0]
		sizes = append(sizes, len(m.States))
		for _, s := range m.States {
			if seen[s.Subject] {
				t.Fatalf("%s twice", s.Subject)
			}
			seen[s.Subject] = true
		}
		if !m.More {
			break
		}
	}
	if len(seen) != 2500 || fmt.Sprint(sizes) != "[1000 1000 500]" {
		t.Fatalf("%d states in chunks %v; want 2500 in [1000 1000 500]", len(seen), sizes)
	}
	if pl.all != 0 || pl.largest != 1000 {
		t.Fatalf("%d reads of every state at once, largest page %d; want pages of 1000 only", pl.all, pl.largest)
	}
}

// The store commits a transaction a moment before the hub publishes it,
// so a snapshot read in that moment is at a head the hub has not fanned
// out. The snapshot subscription's "subscribed" (at that head) must still
// come after the connection's other live frames at or below it.
func TestSubscribedWaitsForTheStoresHead(t *testing.T) {
	r := newRig(t, hub.Config{})
	c := r.h.Connect(0)
	rd := newReader(t, c, wire.JSON{})
	defer rd.close()
	rd.caughtUp = true
	ctx := context.Background()
	if _, err := c.Subscribe(ctx, hub.Request{ID: 1, Sel: stream.Selector{Prefix: "seller:"}}); err != nil {
		t.Fatal(err)
	}
	rd.expectTypes(t, "subscribed", "snapshot", "caught_up")
	r.mu.Lock()
	txn, err := r.log.Commit(0x1100, []hub.Op{{Subject: "seller:1", Score: 4e6}, {Subject: "buyer:1", Score: 2e6}})
	r.lsn = 0x1101
	r.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	published := make(chan struct{})
	go func() {
		defer close(published)
		time.Sleep(50 * time.Millisecond)
		r.pub.Publish(0x1101, []stream.Txn{txn})
	}()
	res, err := c.Subscribe(ctx, hub.Request{ID: 2, Sel: stream.Selector{Prefix: "buyer:"}})
	<-published
	if err != nil {
		t.Fatal(err)
	}
	if res.LSN != 0x1100 {
		t.Fatalf("snapshot at %s, want the store's head 0/1100", res.LSN)
	}
	var order []string
	for len(order) < 2 {
		m := rd.next(t)
		switch {
		case m.Type == wire.TypeSubscribed && m.ID == 2:
			order = append(order, "subscribed")
		case len(m.Deltas) > 0 && m.Deltas[0].Subject == "seller:1":
			order = append(order, "seller:1")
		}
	}
	if order[0] != "seller:1" {
		t.Fatalf("got %v: the other subscription's live delta at 0/1100 came after subscribed at 0/1100", order)
	}
}
