package hub_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/hub"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// rig is a store and a hub wired like the pipeline: commit, then publish.
type rig struct {
	t   testing.TB
	log *hub.MemLog
	h   *hub.Hub
	pub stream.Publisher // h, or a bus publisher

	mu  sync.Mutex
	lsn stream.LSN
}

func hubCodecs() []hub.Codec {
	var cs []hub.Codec
	for _, c := range wire.Codecs() {
		cs = append(cs, c)
	}
	return cs
}

func newRig(t testing.TB, cfg hub.Config) *rig {
	log := hub.NewMemLog("epoch-1", 0x1000)
	h := hub.New(hub.Options{Log: log, Codecs: hubCodecs(), Config: cfg})
	m, _ := log.Meta(context.Background())
	h.Reset(m)
	return &rig{t: t, log: log, h: h, pub: h, lsn: 0x1000}
}

// write commits one transaction and publishes it.
func (r *rig) write(ops ...hub.Op) stream.Txn {
	r.mu.Lock()
	defer r.mu.Unlock()
	// r.lsn is the head: the last end LSN. The next commit LSN may equal it.
	lsn := r.lsn + stream.LSN(rand.IntN(3)*rand.IntN(100))
	t, err := r.log.Commit(lsn, ops)
	if err != nil {
		r.t.Error(err)
	}
	r.lsn = lsn + 1
	r.pub.Publish(r.lsn, []stream.Txn{t})
	return t
}

// reader decodes what a connection's writer would send.
type reader struct {
	c     *hub.Conn
	codec wire.Codec
	msgs  chan wire.ServerMessage
	stop  chan struct{}
	done  chan struct{}
	pause chan bool

	caughtUp bool // pass caught_up messages on (set before anything is sent)
}

func newReader(t testing.TB, c *hub.Conn, codec wire.Codec) *reader {
	r := &reader{c: c, codec: codec, msgs: make(chan wire.ServerMessage, 1<<16), stop: make(chan struct{}), done: make(chan struct{})}
	wake := make(chan struct{}, 1)
	c.SetDrain(func() { // as the WebSocket session's drain, on one goroutine
		select {
		case wake <- struct{}{}:
		default:
		}
	})
	go func() {
		defer close(r.done)
		for {
			select {
			case <-r.stop:
				return
			case <-c.Done():
				return
			case <-wake:
			}
			for {
				b, ok := c.Next(nil)
				if !ok || b.Closed {
					break
				}
				for _, f := range b.Frames {
					m, err := codec.DecodeServer(f.Bytes)
					if err != nil {
						t.Errorf("decode: %v", err)
						return
					}
					if m.Type == wire.TypeCaughtUp && !r.caughtUp {
						continue // tests that look for it set caughtUp
					}
					r.msgs <- m
				}
			}
		}
	}()
	return r
}

// pop takes the frames queued for c, as a writer would, but caught_up
// messages.
func pop(c *hub.Conn) [][]byte {
	b, _ := c.Next(nil)
	var fs [][]byte
	for _, f := range b.Frames {
		if isCaughtUp(f.Bytes) {
			continue
		}
		fs = append(fs, f.Bytes)
	}
	return fs
}

// isCaughtUp tells a caught_up frame, in either codec.
func isCaughtUp(b []byte) bool {
	for _, c := range wire.Codecs() {
		if m, err := c.DecodeServer(b); err == nil && m.Type == wire.TypeCaughtUp {
			return true
		}
	}
	return false
}

func (r *reader) close() {
	close(r.stop)
	<-r.done
}

func (r *reader) next(t testing.TB) wire.ServerMessage {
	t.Helper()
	select {
	case m := <-r.msgs:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no message within 5s")
		return wire.ServerMessage{}
	}
}

// folder is a client's view: it checks every delta it is sent strictly
// (lsn above what it holds, version contiguous) rather than filtering.
type folder struct {
	states map[string]stream.State
	cursor stream.LSN
	seen   map[string]bool // subject@lsn
}

func newFolder() *folder {
	return &folder{states: map[string]stream.State{}, seen: map[string]bool{}}
}

func (f *folder) apply(t testing.TB, m wire.ServerMessage) {
	t.Helper()
	switch m.Type {
	case wire.TypeSnapshot:
		for _, s := range m.States {
			f.states[s.Subject] = s
		}
		f.cursor = max(f.cursor, m.LSN)
	case wire.TypeSubscribed:
		if m.Reset {
			clear(f.states)
			f.cursor = 0
		}
	case wire.TypeTick:
		f.cursor = max(f.cursor, m.LSN)
	case wire.TypeDelta, wire.TypeDeltas:
		lsn := m.Deltas[0].LSN
		for _, d := range m.Deltas {
			if m.Type == wire.TypeDeltas && d.LSN < lsn {
				t.Errorf("deltas frame out of LSN order")
			}
			lsn = d.LSN
			k := fmt.Sprintf("%s@%s", d.Subject, d.LSN)
			if f.seen[k] {
				t.Errorf("(subject, lsn) %s sent twice", k)
			}
			f.seen[k] = true
			old, ok := f.states[d.Subject]
			n := int64(max(d.Coalesced, 1))
			if ok && (d.LSN <= old.LSN || d.Version != old.Version+n) {
				t.Errorf("%s: delta lsn %s v%d (coalesced %d) after held lsn %s v%d", d.Subject, d.LSN, d.Version, n, old.LSN, old.Version)
			}
			if !ok && d.Version != n {
				t.Errorf("%s: first delta has version %d, coalesced %d", d.Subject, d.Version, n)
			}
			f.states[d.Subject] = d.After
			f.cursor = max(f.cursor, d.LSN)
		}
	}
}

func (f *folder) equal(t testing.TB, log stream.Log, sel stream.Selector) {
	t.Helper()
	want, _, err := log.States(context.Background(), sel, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(want) != len(f.states) {
		t.Errorf("client holds %d subjects, server %d", len(f.states), len(want))
	}
	for _, w := range want {
		g := f.states[w.Subject]
		if g.Version != w.Version || g.LSN != w.LSN || g.Count != w.Count || g.Sum != w.Sum {
			t.Errorf("%s: client %+v server %+v", w.Subject, g, w)
		}
	}
}

func TestPublishFrames(t *testing.T) {
	r := newRig(t, hub.Config{})
	c := r.h.Connect(0)
	defer r.h.Disconnect(c)
	rd := newReader(t, c, wire.JSON{})
	defer rd.close()
	ctx := context.Background()
	if _, err := c.Subscribe(ctx, hub.Request{ID: 1, Sel: stream.Selector{Prefix: "seller:"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Subscribe(ctx, hub.Request{ID: 2, Sel: stream.Selector{Subjects: []string{"seller:1", "buyer:1"}}}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"subscribed", "snapshot", "subscribed", "snapshot"} {
		if m := rd.next(t); m.Type != want {
			t.Fatalf("got %s want %s", m.Type, want)
		}
	}
	r.write(hub.Op{Subject: "seller:1", Score: 5e6}, hub.Op{Subject: "seller:2", Score: 4e6}, hub.Op{Subject: "buyer:1", Score: 1e6}, hub.Op{Subject: "other:1", Score: 1e6})
	m := rd.next(t)
	if m.Type != wire.TypeDeltas || len(m.Deltas) != 3 {
		t.Fatalf("want one deltas frame of 3 (seller:1 once though two subscriptions select it), got %+v", m)
	}
	r.write(hub.Op{Subject: "seller:2", Score: 4e6})
	if m := rd.next(t); m.Type != wire.TypeDelta || m.Deltas[0].Subject != "seller:2" {
		t.Fatalf("got %+v", m)
	}
	if n := c.Unsubscribe(stream.Selector{Prefix: "seller:"}); n != 1 {
		t.Fatalf("unsubscribed %d", n)
	}
	r.write(hub.Op{Subject: "seller:2", Score: 4e6}, hub.Op{Subject: "seller:1", Score: 4e6})
	if m := rd.next(t); m.Type != wire.TypeDelta || m.Deltas[0].Subject != "seller:1" {
		t.Fatalf("got %+v", m)
	}
}

// TestUnsubscribeSubjects: unsubscribing some of a subscription's subjects
// (named twice, in any order, with one it never held) stops exactly those;
// the last one ends the subscription.
func TestUnsubscribeSubjects(t *testing.T) {
	r := newRig(t, hub.Config{})
	c := r.h.Connect(0)
	defer r.h.Disconnect(c)
	rd := newReader(t, c, wire.JSON{})
	defer rd.close()
	sel := stream.Selector{Subjects: []string{"seller:3", "seller:1", "seller:2", "seller:1"}}
	if _, err := c.Subscribe(context.Background(), hub.Request{ID: 1, Sel: sel}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"subscribed", "snapshot"} {
		if m := rd.next(t); m.Type != want {
			t.Fatalf("got %s want %s", m.Type, want)
		}
	}
	subjectsOf := func(m wire.ServerMessage) []string {
		var out []string
		for _, d := range m.Deltas {
			out = append(out, d.Subject)
		}
		return out
	}
	all := []hub.Op{{Subject: "seller:1", Score: 5e6}, {Subject: "seller:2", Score: 4e6}, {Subject: "seller:3", Score: 3e6}}
	if n := c.Unsubscribe(stream.Selector{Subjects: []string{"seller:2", "seller:9", "seller:2"}}); n != 1 {
		t.Fatalf("unsubscribed %d subjects, want 1", n)
	}
	r.write(all...)
	if m := rd.next(t); !slices.Equal(subjectsOf(m), []string{"seller:1", "seller:3"}) {
		t.Fatalf("after unsubscribing seller:2: %+v", m)
	}
	if n := c.Subscriptions(); n != 1 {
		t.Fatalf("%d subscriptions, want 1", n)
	}
	if n := c.Unsubscribe(stream.Selector{Subjects: []string{"seller:3", "seller:1"}}); n != 2 {
		t.Fatalf("unsubscribed %d subjects, want 2", n)
	}
	if n := c.Subscriptions(); n != 0 {
		t.Fatalf("%d subscriptions after unsubscribing every subject, want 0", n)
	}
	if n := r.h.Subscriptions(); n != 0 {
		t.Fatalf("the hub counts %d subscriptions, want 0", n)
	}
	// Nothing more arrives for the connection: a new subscription's own
	// frames come next.
	r.write(all...)
	if _, err := c.Subscribe(context.Background(), hub.Request{ID: 2, Sel: stream.Selector{Subjects: []string{"buyer:1"}}}); err != nil {
		t.Fatal(err)
	}
	if m := rd.next(t); m.Type != wire.TypeSubscribed || m.ID != 2 {
		t.Fatalf("got %+v, want subscribed 2", m)
	}
}

// TestDeltaLSNMarksSingleDeltaFrames: the writer joins only frames the hub
// marks as holding one delta (a connection's whole share of a transaction);
// subscribed, snapshot and multi-delta frames carry no mark.
func TestDeltaLSNMarksSingleDeltaFrames(t *testing.T) {
	r := newRig(t, hub.Config{})
	c := r.h.Connect(0)
	defer r.h.Disconnect(c)
	if _, err := c.Subscribe(context.Background(), hub.Request{ID: 1, Sel: stream.Selector{Prefix: "seller:"}}); err != nil {
		t.Fatal(err)
	}
	one := r.write(hub.Op{Subject: "seller:1", Score: 4e6})
	two := r.write(hub.Op{Subject: "seller:1", Score: 3e6}, hub.Op{Subject: "seller:2", Score: 5e6})
	b, _ := c.Next(nil)
	var got []string
	for _, f := range b.Frames {
		m, err := wire.JSON{}.DecodeServer(f.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s:%s", m.Type, f.DeltaLSN))
	}
	want := fmt.Sprintf("[subscribed:0/0 snapshot:0/0 caught_up:0/0 delta:%s deltas:0/0]", one.LSN)
	if fmt.Sprint(got) != want {
		t.Fatalf("frames %v, want %s (the two-delta transaction %s unmarked)", got, want, two.LSN)
	}
}

func TestSharedEncoding(t *testing.T) {
	r := newRig(t, hub.Config{})
	ctx := context.Background()
	var conns []*hub.Conn
	for range 3 {
		c := r.h.Connect(1)
		defer r.h.Disconnect(c)
		if _, err := c.Subscribe(ctx, hub.Request{Sel: stream.Selector{Prefix: "s"}}); err != nil {
			t.Fatal(err)
		}
		pop(c)
		conns = append(conns, c)
	}
	r.write(hub.Op{Subject: "s1", Score: 1e6})
	var first []byte
	for _, c := range conns {
		fs := pop(c)
		if len(fs) != 1 {
			t.Fatalf("%d frames", len(fs))
		}
		if first == nil {
			first = fs[0]
		} else if &first[0] != &fs[0][0] {
			t.Error("each connection got its own encoding; want the same bytes")
		}
	}
}

func TestCursorRules(t *testing.T) {
	r := newRig(t, hub.Config{RingDeltas: 4})
	ctx := context.Background()
	var lsns []stream.LSN
	for i := range 10 {
		lsns = append(lsns, r.write(hub.Op{Subject: fmt.Sprintf("seller:%d", i%3), Score: 3e6}).LSN)
	}
	sub := func(since stream.LSN, epoch string) (hub.Result, []wire.ServerMessage, error) {
		c := r.h.Connect(0)
		defer r.h.Disconnect(c)
		res, err := c.Subscribe(ctx, hub.Request{ID: 3, Sel: stream.Selector{Prefix: "seller:"}, Since: &since, Epoch: epoch})
		var ms []wire.ServerMessage
		for _, f := range pop(c) {
			m, _ := wire.JSON{}.DecodeServer(f)
			ms = append(ms, m)
		}
		return res, ms, err
	}
	// In the ring.
	res, ms, err := sub(lsns[8], "")
	if err != nil || res.Mode != hub.ModeReplay || len(ms) != 2 || ms[1].Deltas[0].LSN != lsns[9] {
		t.Fatalf("ring replay: %+v %v %+v", res, err, ms)
	}
	// Older than the ring, retained by the log.
	res, ms, err = sub(lsns[1], "")
	if err != nil || res.Mode != hub.ModeReplay || len(ms) != 9 || ms[1].Deltas[0].LSN != lsns[2] {
		t.Fatalf("log replay: %+v %v %d", res, err, len(ms))
	}
	// At the head: nothing to replay.
	res, ms, err = sub(lsns[9], "")
	if err != nil || res.Mode != hub.ModeReplay || len(ms) != 1 || ms[0].LSN != lsns[9] {
		t.Fatalf("head: %+v %v %+v", res, err, ms)
	}
	// Older than the retained log: snapshot with reset.
	r.log.Prune(lsns[4])
	res, ms, err = sub(lsns[1], "")
	if err != nil || res.Mode != hub.ModeSnapshot || !res.Reset || !ms[0].Reset || ms[1].Type != wire.TypeSnapshot || len(ms[1].States) != 3 {
		t.Fatalf("too old: %+v %v %+v", res, err, ms)
	}
	// Another epoch: snapshot with reset.
	res, _, err = sub(lsns[9], "epoch-0")
	if err != nil || res.Mode != hub.ModeSnapshot || !res.Reset {
		t.Fatalf("other epoch: %+v %v", res, err)
	}
	// Ahead of the server.
	_, ms, err = sub(lsns[9]+1, "")
	var he *hub.Error
	if !asHubError(err, &he) || he.Code != hub.CodeBadCursor || len(ms) != 0 {
		t.Fatalf("future cursor: %v %+v", err, ms)
	}
	// The store fails: internal, and the subscription is gone.
	r.log.SetFail(fmt.Errorf("boom"))
	c := r.h.Connect(0)
	since := lsns[0]
	_, err = c.Subscribe(ctx, hub.Request{Sel: stream.Selector{Prefix: "seller:"}, Since: &since})
	if !asHubError(err, &he) || he.Code != hub.CodeInternal || c.Subscriptions() != 0 {
		t.Fatalf("store down: %v, %d subscriptions", err, c.Subscriptions())
	}
	r.h.Disconnect(c)
	r.log.SetFail(nil)
}

// lastLSN is the greatest lsn of the selected states: a subscriber has
// everything once its cursor reaches it.
func lastLSN(log stream.Log, sel stream.Selector) stream.LSN {
	var last stream.LSN
	all, _, _ := log.States(context.Background(), sel, "", 0)
	for _, s := range all {
		last = max(last, s.LSN)
	}
	return last
}

func asHubError(err error, target **hub.Error) bool {
	e, ok := err.(*hub.Error)
	if ok {
		*target = e
	}
	return ok
}

func TestSubscriptionLimits(t *testing.T) {
	r := newRig(t, hub.Config{MaxSubscriptions: 3, MaxSubjects: 4})
	c := r.h.Connect(0)
	defer r.h.Disconnect(c)
	ctx := context.Background()
	var he *hub.Error
	if _, err := c.Subscribe(ctx, hub.Request{Sel: stream.Selector{Subjects: []string{"a", "b", "c", "d", "e"}}}); !asHubError(err, &he) || he.Code != hub.CodeTooManySubscriptions {
		t.Fatalf("too many subjects: %v", err)
	}
	for i := range 3 {
		if _, err := c.Subscribe(ctx, hub.Request{Sel: stream.Selector{Prefix: fmt.Sprint(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Subscribe(ctx, hub.Request{Sel: stream.Selector{Prefix: "x"}}); !asHubError(err, &he) || he.Code != hub.CodeTooManySubscriptions {
		t.Fatalf("too many subscriptions: %v", err)
	}
	if _, err := c.Subscribe(ctx, hub.Request{Sel: stream.Selector{}}); !asHubError(err, &he) || he.Code != hub.CodeBadRequest {
		t.Fatalf("empty selector: %v", err)
	}
	if r.h.Subscriptions() != 3 {
		t.Fatalf("%d subscriptions", r.h.Subscriptions())
	}
}

// TestExactCatchUp drops a prefix subscriber at random moments during
// replay and live while a writer runs, for each catch-up path, and checks
// the client's fold against the store.
func TestExactCatchUp(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  hub.Config
	}{
		{"ring", hub.Config{}},
		{"log", hub.Config{RingDeltas: 8, ReplayPage: 7}},
		{"no-ring", hub.Config{RingDeltas: -1, ReplayPage: 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, tc.cfg)
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					r.write(hub.RandomOps(20)...)
					time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
				}
			}()
			f := newFolder()
			var since *stream.LSN
			for round := range 40 {
				c := r.h.Connect(round % 2)
				rd := newReader(t, c, wire.Codecs()[round%2])
				res, err := c.Subscribe(ctx, hub.Request{ID: int64(round), Sel: stream.Selector{Prefix: "seller:"}, Since: since})
				if err != nil {
					t.Fatal(err)
				}
				if since != nil && res.Mode != hub.ModeReplay {
					t.Fatalf("round %d: mode %s", round, res.Mode)
				}
				deadline := time.After(time.Duration(rand.IntN(20)) * time.Millisecond)
			read:
				for {
					select {
					case m := <-rd.msgs:
						f.apply(t, m)
					case <-deadline:
						break read
					}
				}
				r.h.Disconnect(c)
				rd.close()
				if cur := f.cursor; cur > 0 {
					since = &cur
				}
			}
			cancel()
			wg.Wait()
			// Final catch-up to the head.
			c := r.h.Connect(0)
			rd := newReader(t, c, wire.JSON{})
			if _, err := c.Subscribe(context.Background(), hub.Request{Sel: stream.Selector{Prefix: "seller:"}, Since: since}); err != nil {
				t.Fatal(err)
			}
			last := lastLSN(r.log, stream.Selector{Prefix: "seller:"})
			for f.cursor < last {
				f.apply(t, rd.next(t))
				if t.Failed() {
					break
				}
			}
			r.h.Disconnect(c)
			rd.close()
			f.equal(t, r.log, stream.Selector{Prefix: "seller:"})
			if len(f.seen) < 100 {
				t.Errorf("only %d deltas seen", len(f.seen))
			}
		})
	}
}

// TestSnapshotHandoff subscribes for snapshots while the writer runs.
func TestSnapshotHandoff(t *testing.T) {
	r := newRig(t, hub.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			r.write(hub.RandomOps(10)...)
			time.Sleep(time.Duration(rand.IntN(100)) * time.Microsecond)
		}
	}()
	for range 20 {
		f := newFolder()
		c := r.h.Connect(1)
		rd := newReader(t, c, wire.Proto{})
		if _, err := c.Subscribe(ctx, hub.Request{Sel: stream.Selector{Prefix: "seller:"}}); err != nil {
			t.Fatal(err)
		}
		for range 50 {
			f.apply(t, rd.next(t))
		}
		r.h.Disconnect(c)
		rd.close()
	}
	cancel()
	wg.Wait()
}

func TestSlowConsumer(t *testing.T) {
	r := newRig(t, hub.Config{QueueBytes: 16 << 10})
	ctx := context.Background()
	stuck := r.h.Connect(0)
	defer r.h.Disconnect(stuck)
	healthy := r.h.Connect(0)
	defer r.h.Disconnect(healthy)
	rd := newReader(t, healthy, wire.JSON{})
	defer rd.close()
	for _, c := range []*hub.Conn{stuck, healthy} {
		if _, err := c.Subscribe(ctx, hub.Request{Sel: stream.Selector{Prefix: "seller:"}}); err != nil {
			t.Fatal(err)
		}
	}
	rd.next(t)
	rd.next(t)
	for i := range 500 {
		start := time.Now()
		r.write(hub.Op{Subject: "seller:1", Score: 5e6})
		if d := time.Since(start); d > 100*time.Millisecond {
			t.Fatalf("publish %d took %s", i, d)
		}
		if m := rd.next(t); m.Type != wire.TypeDelta {
			t.Fatalf("healthy got %+v", m)
		}
	}
	closed, code, _ := stuck.Closed()
	if !closed || code != hub.CloseSlowConsumer {
		t.Fatalf("stuck: closed %v code %d", closed, code)
	}
	if closed, _, _ := healthy.Closed(); closed {
		t.Fatal("healthy closed")
	}
}

func TestThrottleEqualsUnthrottled(t *testing.T) {
	r := newRig(t, hub.Config{})
	ctx := context.Background()
	plain, throttled := r.h.Connect(0), r.h.Connect(1)
	defer r.h.Disconnect(plain)
	defer r.h.Disconnect(throttled)
	rp, rt := newReader(t, plain, wire.JSON{}), newReader(t, throttled, wire.Proto{})
	defer rp.close()
	defer rt.close()
	if _, err := plain.Subscribe(ctx, hub.Request{Sel: stream.Selector{Prefix: "seller:"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := throttled.Subscribe(ctx, hub.Request{Sel: stream.Selector{Prefix: "seller:"}, Throttle: 20 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	fp, ft := newFolder(), newFolder()
	for range 300 {
		r.write(hub.RandomOps(5)...)
		if rand.IntN(20) == 0 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	head := lastLSN(r.log, stream.Selector{Prefix: "seller:"})
	var frames, coalesced int
	for fp.cursor < head || ft.cursor < head {
		select {
		case m := <-rp.msgs:
			fp.apply(t, m)
		case m := <-rt.msgs:
			ft.apply(t, m)
			if m.Type == wire.TypeDelta || m.Type == wire.TypeDeltas {
				frames++
				for _, d := range m.Deltas {
					if d.Coalesced > 1 {
						coalesced++
					}
				}
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("stalled: plain at %s throttled at %s head %s", fp.cursor, ft.cursor, head)
		}
	}
	if coalesced == 0 {
		t.Error("nothing was coalesced")
	}
	for s, want := range fp.states {
		got := ft.states[s]
		if got.Version != want.Version || got.LSN != want.LSN || got.Sum != want.Sum || got.Count != want.Count {
			t.Errorf("%s: throttled %+v plain %+v", s, got, want)
		}
	}
	t.Logf("300 txns in %d throttled frames, %d coalesced deltas", frames, coalesced)
}

func TestTicks(t *testing.T) {
	r := newRig(t, hub.Config{Heartbeat: 40 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.h.Run(ctx) }()
	defer func() { cancel(); <-done }()
	c := r.h.Connect(0)
	defer r.h.Disconnect(c)
	rd := newReader(t, c, wire.JSON{})
	defer rd.close()
	r.pub.Publish(0x9000, nil) // idle advance
	// Not admitted (not welcomed yet): no tick tells it the position.
	select {
	case m := <-rd.msgs:
		t.Fatalf("a connection not admitted got %+v", m)
	case <-time.After(200 * time.Millisecond):
	}
	c.Admit()
	m := rd.next(t)
	if m.Type != wire.TypeTick || m.LSN != 0x8FFF {
		t.Fatalf("got %+v", m)
	}
}

func TestEpochChangeClosesConnections(t *testing.T) {
	r := newRig(t, hub.Config{})
	c := r.h.Connect(0)
	defer r.h.Disconnect(c)
	r.h.Reset(stream.Meta{Epoch: "epoch-1", Checkpoint: 0x2000}) // same epoch: kept
	if closed, _, _ := c.Closed(); closed {
		t.Fatal("closed on same-epoch reset")
	}
	r.h.Reset(stream.Meta{Epoch: "epoch-2", Checkpoint: 0x10})
	if closed, code, _ := c.Closed(); !closed || code != hub.CloseGoingAway {
		t.Fatalf("closed %v code %d", closed, code)
	}
	if r.h.Epoch() != "epoch-2" || r.h.Head() != 0xF {
		t.Fatalf("epoch %s head %s", r.h.Epoch(), r.h.Head())
	}
}

// TestReplayFromLoadCursor resumes from the cursor of a snapshot taken
// before the first transaction (the load's position, head-1): the log
// still holds every delta above it, so it is a replay, not a reset.
func TestReplayFromLoadCursor(t *testing.T) {
	r := newRig(t, hub.Config{RingDeltas: -1})
	ctx := context.Background()
	c := r.h.Connect(0)
	res, err := c.Subscribe(ctx, hub.Request{Sel: stream.Selector{Prefix: "seller:"}})
	r.h.Disconnect(c)
	if err != nil {
		t.Fatal(err)
	}
	r.write(hub.Op{Subject: "seller:1", Score: 5e6})
	r.write(hub.Op{Subject: "seller:2", Score: 5e6})
	c = r.h.Connect(0)
	defer r.h.Disconnect(c)
	since := res.LSN
	res, err = c.Subscribe(ctx, hub.Request{Sel: stream.Selector{Prefix: "seller:"}, Since: &since})
	if err != nil {
		t.Fatal(err)
	}
	if res.Mode != hub.ModeReplay || res.Reset || res.Sent != 2 {
		t.Fatalf("resume from %s: %+v, want a replay of 2 deltas", since, res)
	}
}
