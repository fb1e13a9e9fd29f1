package hub_test

import (
	"context"
	"net"
	"reflect"
	"sync"
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
	m := hub.Message{Prev: 0x10, Head: 0x20, Txns: []stream.Txn{txn}}
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

// testBus runs the replication node's publisher into bus and two follower
// hubs, and checks a subscriber of each sees every delta; then it loses a
// message and checks the followers resync.
func testBus(t *testing.T, bus hub.Bus) {
	log := hub.NewMemLog("epoch-1", 0x1000)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	pub := hub.NewBusPublisher(bus, 0, nil)
	wg.Add(1)
	go func() { defer wg.Done(); _ = pub.Run(ctx) }()

	var hubs []*hub.Hub
	for range 2 {
		h := hub.New(hub.Options{Log: log, Codecs: hubCodecs()})
		hubs = append(hubs, h)
		wg.Add(1)
		go func() { defer wg.Done(); _ = h.Follow(ctx, bus) }()
	}
	time.Sleep(100 * time.Millisecond) // followers subscribed
	m, _ := log.Meta(ctx)
	pub.Reset(m)
	r := &rig{t: t, log: log, pub: pub, lsn: 0x1000}

	var readers []*reader
	var conns []*hub.Conn
	for _, h := range hubs {
		deadline := time.Now().Add(5 * time.Second)
		for h.Epoch() != "epoch-1" && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		c := h.Connect(0)
		defer h.Disconnect(c)
		rd := newReader(t, c, wire.JSON{})
		defer rd.close()
		if _, err := c.Subscribe(ctx, hub.Request{Sel: stream.Selector{Prefix: "seller:"}}); err != nil {
			t.Fatal(err)
		}
		readers = append(readers, rd)
		conns = append(conns, c)
	}
	for range 50 {
		r.write(hub.RandomOps(5)...)
	}
	last := lastLSN(log, stream.Selector{Prefix: "seller:"})
	for _, rd := range readers {
		f := newFolder()
		for f.cursor < last {
			f.apply(t, rd.next(t))
		}
		f.equal(t, log, stream.Selector{Prefix: "seller:"})
	}
	// A lost message: the followers see Prev above their head and close
	// their connections so clients resume from the store.
	if err := bus.Publish(ctx, hub.Message{Prev: r.lsn + 10, Head: r.lsn + 20}); err != nil {
		t.Fatal(err)
	}
	r.lsn += 20
	for _, c := range conns {
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("connection not closed after a bus gap")
		}
	}
	for _, h := range hubs {
		deadline := time.Now().Add(5 * time.Second)
		for h.Head() != hub.Position(r.lsn) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if h.Head() != hub.Position(r.lsn) {
			t.Errorf("follower head %s, want %s", h.Head(), hub.Position(r.lsn))
		}
	}
}

func TestMemoryBus(t *testing.T) { testBus(t, &hub.MemoryBus{}) }

func TestRedisBus(t *testing.T) {
	conn, err := net.DialTimeout("tcp", "127.0.0.1:6379", time.Second)
	if err != nil {
		t.Skip("Redis is not reachable on 127.0.0.1:6379; start it (redis-server) to run the Redis bus test:", err)
	}
	conn.Close()
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer client.Close()
	key := "repstream:test:" + t.Name() + ":" + time.Now().Format("150405.000000")
	defer client.Del(context.Background(), key)
	testBus(t, &hub.RedisBus{Client: client, Key: key})
}
