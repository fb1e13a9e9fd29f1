package hub_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/hub"
)

func boardReq(id int64, top int, order stream.Order, throttle time.Duration) hub.Request {
	return hub.Request{ID: id, Sel: stream.Selector{Prefix: "seller:"}, Throttle: throttle, Board: &hub.BoardRequest{Top: top, Order: order}}
}

// A throttled board sends at most one board per throttle window, the
// latest, and ends equal to the store's ranking.
func TestBoardThrottle(t *testing.T) {
	r := newRig(t, hub.Config{})
	for range 20 {
		r.write(hub.RandomOps(20)...)
	}
	c := r.h.Connect(0)
	rd := newReader(t, c, wire.JSON{})
	defer rd.close()
	if _, err := c.Subscribe(context.Background(), boardReq(1, 5, stream.OrderCount, 200*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if m := rd.next(t); m.Type != wire.TypeSubscribed || m.Mode != hub.ModeBoard {
		t.Fatalf("got %+v; want subscribed mode board", m)
	}
	if m := rd.next(t); m.Type != wire.TypeBoard {
		t.Fatalf("got %+v; want board", m)
	}
	start := time.Now()
	for range 200 {
		r.write(hub.RandomOps(20)...)
	}
	want, _, _ := r.log.States(context.Background(), stream.Selector{Prefix: "seller:"}, stream.OrderCount, 5)
	var last wire.ServerMessage
	boards := 0
	for {
		m := rd.next(t)
		if m.Type != wire.TypeBoard {
			continue
		}
		boards, last = boards+1, m
		if m.LSN == r.h.Head() || sameTop(m.States, want) {
			break
		}
	}
	if !sameTop(last.States, want) {
		t.Fatalf("last board %+v; want %+v", last.States, want)
	}
	if max := int(time.Since(start)/(200*time.Millisecond)) + 1; boards > max {
		t.Fatalf("%d boards in %s with a 200ms throttle; want at most %d", boards, time.Since(start), max)
	}
	r.h.Disconnect(c)
}

func sameTop(a, b []stream.State) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Subject != b[i].Subject || a[i].Version != b[i].Version {
			return false
		}
	}
	return true
}

// A gap in what the hub was published (the head moved without the
// transactions) drops the boards and closes their subscribers with 1001,
// so they start over from the store.
func TestBoardDroppedOnGap(t *testing.T) {
	r := newRig(t, hub.Config{})
	r.write(hub.Op{Subject: "seller:1", Score: 3e6})
	c := r.h.Connect(0)
	if _, err := c.Subscribe(context.Background(), boardReq(1, 3, stream.OrderBayes, 0)); err != nil {
		t.Fatal(err)
	}
	if n := r.h.Boards(); n != 1 {
		t.Fatalf("%d boards; want 1", n)
	}
	// A restart whose checkpoint is past what was published.
	m, _ := r.log.Meta(context.Background())
	m.Checkpoint = r.h.Head() + 100
	r.h.Reset(m)
	r.mu.Lock()
	r.lsn = m.Checkpoint
	r.mu.Unlock()
	r.write(hub.Op{Subject: "seller:2", Score: 5e6})
	if closed, code, _ := c.Closed(); !closed || code != hub.CloseGoingAway {
		t.Fatalf("closed %v code %d; want 1001", closed, code)
	}
	if n := r.h.Boards(); n != 0 {
		t.Fatalf("%d boards after the gap; want 0", n)
	}
	r.h.Disconnect(c)
}

// A board over a prefix is loaded once and shared; a bad request leaves
// nothing.
func TestBoardSharedAndValidated(t *testing.T) {
	r := newRig(t, hub.Config{MaxBoardTop: 5})
	r.write(hub.Op{Subject: "seller:1", Score: 3e6})
	var conns []*hub.Conn
	for i := range 3 {
		c := r.h.Connect(i % 2)
		conns = append(conns, c)
		if _, err := c.Subscribe(context.Background(), boardReq(1, 1+i, stream.OrderBayes, 0)); err != nil {
			t.Fatal(err)
		}
	}
	if n := r.h.Boards(); n != 1 {
		t.Fatalf("%d boards; want 1 shared", n)
	}
	for _, req := range []hub.Request{boardReq(2, 6, stream.OrderBayes, 0), boardReq(2, 0, stream.OrderBayes, 0), boardReq(2, 1, stream.OrderUpdatedAt, 0),
		{ID: 2, Sel: stream.Selector{Subjects: []string{"seller:1"}}, Board: &hub.BoardRequest{Top: 1, Order: stream.OrderBayes}}} {
		var he *hub.Error
		if _, err := conns[0].Subscribe(context.Background(), req); !asHubError(err, &he) || he.Code != hub.CodeBadRequest {
			t.Fatalf("%+v: got %v; want bad_request", req.Board, err)
		}
	}
	if n := r.h.Subscriptions(); n != 3 {
		t.Fatalf("%d subscriptions; want 3", n)
	}
	for _, c := range conns {
		r.h.Disconnect(c)
	}
	if n := r.h.Boards(); n != 0 {
		t.Fatalf("%d boards after every subscriber left; want 0", n)
	}
}

// BenchmarkPublishBoard publishes transactions of 4 deltas over a prefix of
// 100,000 subjects ranked by one board with 100 subscribers (top 10): the
// cost the board adds to Publish (ns/txn), re-ranking included.
func BenchmarkPublishBoard(b *testing.B) {
	const subjects, subs = 100000, 100
	r := newRig(b, hub.Config{QueueFrames: 1 << 20, QueueBytes: 1 << 30})
	for i := 0; i < subjects; i += 1000 {
		ops := make([]hub.Op, 1000)
		for k := range ops {
			ops[k] = hub.Op{Subject: fmt.Sprintf("seller:%d", i+k), Score: stream.Micro(1+(i+k)%5) * stream.MicroUnit}
		}
		r.write(ops...)
	}
	ctx := context.Background()
	cs := make([]*hub.Conn, subs)
	for i := range cs {
		cs[i] = r.h.Connect(0)
		if _, err := cs[i].Subscribe(ctx, boardReq(1, 10, stream.OrderBayes, 0)); err != nil {
			b.Fatal(err)
		}
		cs[i].Next(nil)
	}
	defer func() {
		for _, c := range cs {
			r.h.Disconnect(c)
		}
	}()
	rng := rand.New(rand.NewPCG(1, 2))
	var took time.Duration
	for i := 0; b.Loop(); i++ {
		ops := make([]hub.Op, 4)
		for k := range ops {
			ops[k] = hub.Op{Subject: fmt.Sprintf("seller:%d", rng.IntN(subjects)), Score: stream.Micro(1+rng.IntN(5)) * stream.MicroUnit}
		}
		txn, err := r.log.Commit(r.lsn, ops)
		if err != nil {
			b.Fatal(err)
		}
		r.lsn++
		t0 := time.Now()
		r.h.Publish(r.lsn, []stream.Txn{txn})
		took += time.Since(t0)
		if i%100 == 99 {
			b.StopTimer()
			for _, c := range cs {
				c.Next(nil)
			}
			b.StartTimer()
		}
	}
	b.ReportMetric(float64(took.Nanoseconds())/float64(b.N), "ns/txn")
}

// A board subscriber that does not read is closed with 4008 when its queue
// overflows; Publish never waits for it.
func TestBoardSlowConsumer(t *testing.T) {
	r := newRig(t, hub.Config{QueueFrames: 8})
	r.write(hub.Op{Subject: "seller:1", Score: 3e6})
	c := r.h.Connect(0)
	if _, err := c.Subscribe(context.Background(), boardReq(1, 3, stream.OrderCount, 0)); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		r.write(hub.Op{Subject: fmt.Sprintf("seller:%d", i%4), Score: 3e6}) // each changes the counts
	}
	if closed, code, _ := c.Closed(); !closed || code != hub.CloseSlowConsumer {
		t.Fatalf("closed %v code %d; want 4008", closed, code)
	}
	r.h.Disconnect(c)
	if n := r.h.Boards(); n != 0 {
		t.Fatalf("%d boards; want 0", n)
	}
}

// A board's first subscriber revoked while it registers still loads the
// board, so a second subscriber waiting for it is served.
func TestBoardLoadedDespiteRevoke(t *testing.T) {
	r := newRig(t, hub.Config{})
	r.write(hub.Op{Subject: "seller:1", Score: 3e6})
	c1, c2 := r.h.Connect(0), r.h.Connect(0)
	second := make(chan error, 1)
	req := boardReq(1, 3, stream.OrderBayes, 0)
	req.Registered = func() {
		go func() {
			_, err := c2.Subscribe(context.Background(), boardReq(1, 3, stream.OrderBayes, 0))
			second <- err
		}()
		for r.h.Subscriptions() < 2 { // c2 registered, waiting for the load
			time.Sleep(time.Millisecond)
		}
		c1.Revoke(func(stream.Selector, bool) bool { return false })
	}
	if _, err := c1.Subscribe(context.Background(), req); err != hub.ErrClosed {
		t.Fatalf("revoked subscribe: %v; want ErrClosed", err)
	}
	select {
	case err := <-second:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the second subscriber still waits for the board")
	}
	r.h.Disconnect(c1)
	r.h.Disconnect(c2)
}

// Serving nodes fed by a bus that loses messages keep boards equal to the
// store's ranking, and to each other: a board is computed from what the
// hub publishes, gaps filled from the store included.
func TestBoardOnFollowers(t *testing.T) {
	bus := &lossyBus{Bus: &hub.MemoryBus{}}
	ns := newNodes(t, bus, 2, hub.FollowConfig{Poll: time.Hour, Check: time.Hour})
	for range 20 {
		ns.r.write(hub.RandomOps(20)...)
	}
	ns.check()
	var cs []*hub.Conn
	for _, h := range ns.hubs {
		c := h.Connect(0)
		if _, err := c.Subscribe(ns.ctx, boardReq(1, 5, stream.OrderBayes, 0)); err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	defer func() {
		for i, c := range cs {
			ns.hubs[i].Disconnect(c)
		}
	}()
	lastBoard := func(i int) wire.ServerMessage {
		ns.hubs[i].Boards() // waits for a fan-out in progress
		var last wire.ServerMessage
		for {
			fs := pop(cs[i])
			if len(fs) == 0 {
				return last
			}
			for _, f := range fs {
				m, err := wire.JSON{}.DecodeServer(f)
				if err != nil {
					t.Fatal(err)
				}
				if m.Type == wire.TypeBoard {
					last = m
				}
			}
		}
	}
	boards := make([]wire.ServerMessage, len(cs))
	for round := range 3 {
		bus.lose.Store(int64(3 * round))
		for range 30 {
			ns.r.write(hub.RandomOps(20)...)
		}
		ns.check()
		want, _, _ := ns.log.States(ns.ctx, sellers, stream.OrderBayes, 5)
		for i := range cs {
			if m := lastBoard(i); m.Type == wire.TypeBoard {
				boards[i] = m
			}
			if !sameTop(boards[i].States, want) {
				t.Fatalf("round %d node %d: board %+v; want %+v", round, i, boards[i].States, want)
			}
		}
	}
	if g := ns.hubs[0].FollowStatus().Gaps; g == 0 {
		t.Error("no gap was made")
	}
}
