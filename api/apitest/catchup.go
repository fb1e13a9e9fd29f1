package apitest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/repstream/repstream/api/client"
	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/stream"
)

// Fold is a client.Handler that checks what it is given: versions contiguous,
// LSNs rising per subject.
type Fold struct {
	t      testing.TB
	mu     sync.Mutex
	states map[string]stream.State
	resets int
}

// NewFold returns an empty fold that reports violations on t.
func NewFold(t testing.TB) *Fold { return &Fold{t: t, states: map[string]stream.State{}} }

func (f *Fold) Reset(string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.states)
	f.resets++
}

func (f *Fold) State(s stream.State) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.states[s.Subject] = s
}

func (f *Fold) Delta(d stream.Delta) {
	f.mu.Lock()
	defer f.mu.Unlock()
	old, ok := f.states[d.Subject]
	n := int64(max(d.Coalesced, 1))
	if ok && d.Version != old.Version+n {
		f.t.Errorf("%s: version %d after %d (coalesced %d): not contiguous", d.Subject, d.Version, old.Version, n)
	}
	if !ok && d.Version != n {
		f.t.Errorf("%s: first delta version %d, coalesced %d", d.Subject, d.Version, n)
	}
	f.states[d.Subject] = d.After
}

// Equal checks the fold against the store, subject by subject.
func (f *Fold) Equal(t testing.TB, log stream.Log, sel stream.Selector) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	want, _, err := log.States(context.Background(), sel, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(want) != len(f.states) {
		t.Errorf("client holds %d subjects, server %d", len(f.states), len(want))
	}
	for _, w := range want {
		g := f.states[w.Subject]
		if g.Version != w.Version || g.LSN != w.LSN || g.Count != w.Count || g.Sum != w.Sum || fmt.Sprint(g.Hist) != fmt.Sprint(w.Hist) {
			t.Errorf("%s: client %+v server %+v", w.Subject, g, w)
		}
	}
}

// Dropper is a dialer whose connections the test can cut at any moment.
type Dropper struct {
	mu    sync.Mutex
	conn  net.Conn
	drops int
}

// Dialer returns the dialer to give the client.
func (d *Dropper) Dialer() *websocket.Dialer {
	return &websocket.Dialer{HandshakeTimeout: 5 * time.Second, NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil {
			d.mu.Lock()
			d.conn = c
			d.mu.Unlock()
		}
		return c, err
	}}
}

// Drop cuts the current connection.
func (d *Dropper) Drop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conn != nil {
		d.conn.Close()
		d.conn = nil
		d.drops++
	}
}

// RunExactCatchUp runs a prefix "seller:" client (token from Token, a
// grant of seller:*) dropped at random moments for 3s while writer runs,
// then checks its fold against log: equal subject by subject, versions
// contiguous, no (subject, lsn) sent twice, no delta ignored.
func RunExactCatchUp(t *testing.T, e *Env, log stream.Log, proto bool, writer func(ctx context.Context) (wait func())) {
	sel := stream.Selector{Prefix: "seller:"}
	f := NewFold(t)
	seen := map[string]bool{}
	var seenMu sync.Mutex
	d := &Dropper{}
	c, err := client.New(client.Options{
		URL: e.URL, Handler: f, Prefix: "seller:", Proto: proto, Dialer: d.Dialer(),
		MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond,
		Token: func(context.Context) (string, error) { return Token(t, time.Hour, "seller:*"), nil },
		Trace: func(m wire.ServerMessage) {
			seenMu.Lock()
			defer seenMu.Unlock()
			for _, dl := range m.Deltas {
				k := dl.Subject + "@" + dl.LSN.String()
				if seen[k] {
					t.Errorf("(subject, lsn) %s sent twice", k)
				}
				seen[k] = true
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	wctx, wcancel := context.WithCancel(ctx)
	wait := writer(wctx)
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(time.Duration(rand.IntN(40)) * time.Millisecond)
		d.Drop()
	}
	wcancel()
	wait()
	last := LastLSN(t, log, sel)
	for {
		if _, cur := c.Cursor(); cur >= last {
			break
		}
		if time.Now().After(deadline.Add(15 * time.Second)) {
			_, cur := c.Cursor()
			t.Fatalf("client stuck at %s, want %s", cur, last)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	f.Equal(t, log, sel)
	st := c.Stats()
	if st.Ignored != 0 {
		t.Errorf("%d deltas at or below the held state were sent", st.Ignored)
	}
	if d.drops < 20 || st.Applied < 200 {
		t.Errorf("only %d drops, %d deltas applied", d.drops, st.Applied)
	}
	t.Logf("%d drops, %d connects, %d deltas applied, %d resets", d.drops, st.Connects, st.Applied, st.Resets)
}

// LastLSN is the greatest lsn among the selected states of log.
func LastLSN(t testing.TB, log stream.Log, sel stream.Selector) stream.LSN {
	all, _, err := log.States(context.Background(), sel, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	var last stream.LSN
	for _, s := range all {
		last = max(last, s.LSN)
	}
	return last
}

// Resets returns how many times the fold was reset.
func (f *Fold) Resets() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.resets
}
