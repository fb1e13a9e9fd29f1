package hub_test

import (
	"context"
	"errors"
	"net"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/hub"
)

func TestBusMessageRoundTrip(t *testing.T) {
	log := hub.NewMemLog("e", 0x10)
	txn, err := log.Commit(0x20, []hub.Op{{Subject: "a", Score: 4_500_000}, {Subject: "b", Score: 1e6}})
	if err != nil {
		t.Fatal(err)
	}
	txn.Deltas[0].After.UpdatedAt = time.Date(2026, 1, 2, 3, 4, 5, 678901000, time.UTC)
	m := hub.Message{Epoch: "e", Prev: 0x10, Head: 0x20, Txns: []stream.Txn{txn}}
	b, err := hub.EncodeMessage(m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := hub.DecodeMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	got.Txns[0].CommitAt = txn.CommitAt // monotonic clock reading is not carried
	for i := range got.Txns[0].Deltas {
		got.Txns[0].Deltas[i].After.UpdatedAt = got.Txns[0].Deltas[i].After.UpdatedAt.UTC()
	}
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("got  %+v\nwant %+v", got, m)
	}
}

// nodes is a replicating node (a MemLog and a BusPublisher) and serving
// nodes following the bus, each with one client subscribed to seller:.
type nodes struct {
	t      *testing.T
	ctx    context.Context
	bus    hub.Bus
	cfg    hub.FollowConfig
	log    *hub.MemLog
	pub    *hub.BusPublisher
	r      *rig
	hubs   []*hub.Hub
	conns  []*hub.Conn
	rds    []*reader
	fold   []*folder
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

var sellers = stream.Selector{Prefix: "seller:"}

func newNodes(t *testing.T, bus hub.Bus, n int, cfg hub.FollowConfig) *nodes {
	ns := &nodes{t: t, bus: bus, cfg: cfg, log: hub.NewMemLog("epoch-1", 0x1000)}
	ns.ctx, ns.cancel = context.WithCancel(context.Background())
	t.Cleanup(ns.close)
	ns.pub = hub.NewBusPublisher(bus, 0, nil)
	ns.wg.Add(1)
	go func() { defer ns.wg.Done(); _ = ns.pub.Run(ns.ctx) }()
	ns.r = &rig{t: t, log: ns.log, pub: ns.pub, lsn: 0x1000}
	for range n {
		ns.addNode()
	}
	for _, h := range ns.hubs {
		deadline := time.Now().Add(5 * time.Second)
		for !h.FollowStatus().BusUp && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
	m, _ := ns.log.Meta(ns.ctx)
	ns.pub.Reset(m)
	return ns
}

// addNode starts a serving node and subscribes a client to it from a
// snapshot.
func (ns *nodes) addNode() {
	h := hub.New(hub.Options{Log: ns.log, Codecs: hubCodecs()})
	ns.wg.Add(1)
	go func() { defer ns.wg.Done(); _ = h.Follow(ns.ctx, ns.bus, ns.cfg) }()
	c := h.Connect(0)
	rd := newReader(ns.t, c, wire.JSON{})
	if _, err := c.Subscribe(ns.ctx, hub.Request{Sel: sellers}); err != nil {
		ns.t.Fatal(err)
	}
	ns.hubs, ns.conns, ns.rds, ns.fold = append(ns.hubs, h), append(ns.conns, c), append(ns.rds, rd), append(ns.fold, newFolder())
}

func (ns *nodes) close() {
	for i, c := range ns.conns {
		ns.rds[i].close()
		ns.hubs[i].Disconnect(c)
	}
	ns.cancel()
	ns.wg.Wait()
}

// commit writes a transaction to the store without publishing it: the
// tail of a replicator killed with its queue, or an idle bus.
func (ns *nodes) commit() {
	ns.r.mu.Lock()
	defer ns.r.mu.Unlock()
	if _, err := ns.log.Commit(ns.r.lsn, hub.RandomOps(5)); err != nil {
		ns.t.Fatal(err)
	}
	ns.r.lsn++
}

// lossyBus loses the next lose messages.
type lossyBus struct {
	hub.Bus
	lose atomic.Int64
}

func (b *lossyBus) Publish(ctx context.Context, m hub.Message) error {
	if b.lose.Add(-1) >= 0 {
		return nil
	}
	return b.Bus.Publish(ctx, m)
}

// check reads every client up to the store's last seller delta: each got
// every delta, in order, none twice (the folder fails on a gap or a
// repeat), and holds the store's states.
func (ns *nodes) check() {
	ns.t.Helper()
	last := lastLSN(ns.log, sellers)
	for i, rd := range ns.rds {
		f := ns.fold[i]
		for f.cursor < last {
			f.apply(ns.t, rd.next(ns.t))
		}
		f.equal(ns.t, ns.log, sellers)
	}
	for i, c := range ns.conns {
		select {
		case <-c.Done():
			ns.t.Errorf("node %d closed its client's connection", i)
		default:
		}
	}
}

func testBus(t *testing.T, b hub.Bus) {
	bus := &lossyBus{Bus: b}
	ns := newNodes(t, bus, 2, hub.FollowConfig{Poll: time.Hour, Check: time.Hour})
	for range 50 {
		ns.r.write(hub.RandomOps(5)...)
	}
	ns.check()
	// Lost messages (a full queue, a trimmed stream): the next message
	// does not continue from the followers' heads; they read the gap from
	// the store, and their clients miss nothing.
	bus.lose.Store(20)
	for range 20 {
		ns.r.write(hub.RandomOps(5)...)
	}
	ns.r.write(hub.RandomOps(5)...)
	ns.check()
}

func TestMemoryBus(t *testing.T) { testBus(t, &hub.MemoryBus{}) }

// A message that does not continue from the follower's head is a gap,
// counted and read from the store.
func TestFollowGapCounted(t *testing.T) {
	bus := &lossyBus{Bus: &hub.MemoryBus{}}
	ns := newNodes(t, bus, 1, hub.FollowConfig{Poll: time.Hour, Check: time.Hour})
	ns.r.write(hub.RandomOps(5)...)
	ns.check()
	bus.lose.Store(3)
	for range 4 {
		ns.r.write(hub.RandomOps(5)...)
	}
	ns.check()
	if g := ns.hubs[0].FollowStatus().Gaps; g != 1 {
		t.Errorf("gaps %d, want 1", g)
	}
}

func redisClient(t *testing.T) (*redis.Client, string) {
	conn, err := net.DialTimeout("tcp", "127.0.0.1:6379", time.Second)
	if err != nil {
		t.Fatal("Redis is not reachable on 127.0.0.1:6379 (.ci/run starts it; or run redis-server):", err)
	}
	conn.Close()
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	t.Cleanup(func() { client.Close() })
	key := "repstream:test:" + t.Name() + ":" + time.Now().Format("150405.000000")
	t.Cleanup(func() { client.Del(context.Background(), key) })
	return client, key
}

func TestRedisBus(t *testing.T) {
	client, key := redisClient(t)
	testBus(t, &hub.RedisBus{Client: client, Key: key})
}

// A Reset ahead of the followers' heads in the same epoch (a replicator
// restarted after kill -9 lost its queue) is a gap: the followers read it
// from the store instead of jumping over it.
func TestFollowResetAheadFillsGap(t *testing.T) {
	ns := newNodes(t, &hub.MemoryBus{}, 2, hub.FollowConfig{Check: time.Hour})
	for range 10 {
		ns.r.write(hub.RandomOps(5)...)
	}
	for range 30 {
		ns.commit()
	}
	m, _ := ns.log.Meta(ns.ctx)
	restarted := hub.NewBusPublisher(ns.bus, 0, nil)
	ns.wg.Add(1)
	go func() { defer ns.wg.Done(); _ = restarted.Run(ns.ctx) }()
	restarted.Reset(m)
	ns.check()
	for _, h := range ns.hubs {
		if h.Head() != hub.Position(m.Checkpoint) {
			t.Errorf("follower head %s, want %s", h.Head(), hub.Position(m.Checkpoint))
		}
	}
}

// With nothing on the bus at all, the periodic check brings the followers
// to the store's head.
func TestFollowCheckFindsSilentGap(t *testing.T) {
	ns := newNodes(t, &hub.MemoryBus{}, 1, hub.FollowConfig{Check: 50 * time.Millisecond})
	for range 10 {
		ns.commit()
	}
	ns.check()
}

// While the bus is down the followers poll the store; when it is back they
// return to it. Clients receive everything, exactly.
func TestFollowPollsWhileBusDown(t *testing.T) {
	bus := &hub.MemoryBus{}
	ns := newNodes(t, bus, 2, hub.FollowConfig{Poll: 20 * time.Millisecond, Check: time.Hour})
	for range 10 {
		ns.r.write(hub.RandomOps(5)...)
	}
	ns.check()
	bus.SetDown(true)
	deadline := time.Now().Add(5 * time.Second)
	for ns.hubs[0].FollowStatus().BusUp && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if ns.hubs[0].FollowStatus().BusUp {
		t.Fatal("follower did not see the bus go down")
	}
	for range 30 {
		ns.r.write(hub.RandomOps(5)...)
	}
	ns.check() // delivered by polling: nothing reached the bus
	bus.SetDown(false)
	for range 30 {
		ns.r.write(hub.RandomOps(5)...)
	}
	ns.check()
	if st := ns.hubs[0].FollowStatus(); !st.BusUp {
		t.Errorf("status %+v after the bus came back", st)
	}
}

// A new epoch whose Reset never reached the followers: the periodic check
// sees it, every connection is closed with 1001 and a resubscribing client
// gets a snapshot with reset; none hangs. A client resuming on a node that
// has not noticed yet is closed, not left without an answer.
func TestFollowLostNewEpochReset(t *testing.T) {
	for _, tc := range []struct {
		name  string
		check time.Duration
	}{{"periodic check", 30 * time.Millisecond}, {"resuming subscribe", time.Hour}} {
		t.Run(tc.name, func(t *testing.T) {
			ns := newNodes(t, &hub.MemoryBus{}, 1, hub.FollowConfig{Check: tc.check})
			for range 5 {
				ns.r.write(hub.RandomOps(5)...)
			}
			ns.check()
			h := ns.hubs[0]
			ns.log.Replace("epoch-2", 0x9000) // the Reset is lost
			if tc.check == time.Hour {
				c := h.Connect(0)
				defer h.Disconnect(c)
				since := stream.LSN(0x9100) // ahead of this node: the store is asked
				_, err := c.Subscribe(ns.ctx, hub.Request{Sel: sellers, Since: &since, Epoch: "epoch-1"})
				if !errors.Is(err, hub.ErrClosed) {
					t.Fatalf("resuming subscribe: %v, want the connection closed", err)
				}
				if _, code, _ := c.Closed(); code != hub.CloseGoingAway {
					t.Errorf("close code %d, want %d", code, hub.CloseGoingAway)
				}
			}
			select {
			case <-ns.conns[0].Done():
			case <-time.After(5 * time.Second):
				t.Fatal("client of the old epoch not closed")
			}
			if h.Epoch() != "epoch-2" {
				t.Fatalf("node epoch %q, want epoch-2", h.Epoch())
			}
			c := h.Connect(0)
			defer h.Disconnect(c)
			rd := newReader(t, c, wire.JSON{})
			defer rd.close()
			since := stream.LSN(0x1005)
			res, err := c.Subscribe(ns.ctx, hub.Request{Sel: sellers, Since: &since, Epoch: "epoch-1"})
			if err != nil || !res.Reset {
				t.Fatalf("subscribe after the epoch change: %+v, %v; want a snapshot with reset", res, err)
			}
		})
	}
}

// A node started after many transactions, which it never saw on the bus,
// serves a client resuming from an old cursor exactly.
func TestFollowLateNode(t *testing.T) {
	ns := newNodes(t, &hub.MemoryBus{}, 1, hub.FollowConfig{Check: time.Hour})
	for range 40 {
		ns.r.write(hub.RandomOps(5)...)
	}
	ns.check()
	late := hub.New(hub.Options{Log: ns.log, Codecs: hubCodecs()})
	ns.wg.Add(1)
	go func() { defer ns.wg.Done(); _ = late.Follow(ns.ctx, ns.bus, ns.cfg) }()
	c := late.Connect(0)
	defer late.Disconnect(c)
	rd := newReader(t, c, wire.JSON{})
	defer rd.close()
	f := newFolder()
	since := hub.Position(0x1000) // the log's start: every delta follows
	f.cursor = since
	if _, err := c.Subscribe(ns.ctx, hub.Request{Sel: sellers, Since: &since}); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		ns.r.write(hub.RandomOps(5)...)
	}
	last := lastLSN(ns.log, sellers)
	for f.cursor < last {
		f.apply(t, rd.next(t))
	}
	f.equal(t, ns.log, sellers)
}

// Close makes Run send what is queued, then return.
func TestBusPublisherDrainsOnClose(t *testing.T) {
	bus := &hub.MemoryBus{}
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan hub.Message, 100)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Add(1)
	go func() { defer wg.Done(); _ = bus.Subscribe(ctx, collect(got)) }()
	time.Sleep(20 * time.Millisecond)
	pub := hub.NewBusPublisher(bus, 0, nil)
	pub.Reset(stream.Meta{Epoch: "e", Checkpoint: 10})
	for i := range 50 {
		pub.Publish(stream.LSN(11+i), nil)
	}
	pub.Close()
	pub.Publish(100, nil) // after Close: dropped, not a panic
	if err := pub.Run(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 51 {
		select {
		case m := <-got:
			if want := stream.LSN(10 + i); m.Head != want {
				t.Fatalf("message %d head %s, want %s", i, m.Head, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("message %d not sent", i)
		}
	}
}

type collect chan hub.Message

func (c collect) Message(m hub.Message) { c <- m }
func (c collect) Up()                   {}
func (c collect) Down(error)            {}

// While the store cannot be read, a follower that sees a gap delivers
// nothing past it (no transaction out of order); once the store answers,
// the gap is read and everything arrives, exactly.
func TestFollowStoreDown(t *testing.T) {
	bus := &lossyBus{Bus: &hub.MemoryBus{}}
	ns := newNodes(t, bus, 1, hub.FollowConfig{Poll: 30 * time.Millisecond, Check: 30 * time.Millisecond})
	for range 5 {
		ns.r.write(hub.RandomOps(5)...)
	}
	ns.check()
	head := ns.hubs[0].Head()
	ns.log.SetFail(errors.New("store down"))
	bus.lose.Store(2)
	for range 10 {
		ns.r.write(hub.RandomOps(5)...)
	}
	time.Sleep(200 * time.Millisecond)
	if h := ns.hubs[0].Head(); h != head {
		t.Errorf("head moved from %s to %s past a gap the store could not fill", head, h)
	}
	if st := ns.hubs[0].FollowStatus(); st.StoreErrs == 0 {
		t.Errorf("status %+v: no store error counted", st)
	}
	ns.log.SetFail(nil)
	ns.check()
}
