package client_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/repstream/repstream/api"
	"github.com/repstream/repstream/api/apitest"
	"github.com/repstream/repstream/api/client"
	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/hub"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestExactCatchUp: a prefix subscriber dropped at random moments during
// replay and live while a writer runs ends with the server's state, subject
// by subject; versions stay contiguous and no (subject, lsn) is sent twice.
func TestExactCatchUp(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   api.Config
		proto bool
	}{
		{"json-ring", api.Config{}, false},
		{"proto-ring", api.Config{}, true},
		{"json-log", api.Config{RingDeltas: 16}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := apitest.Start(t, tc.cfg, nil)
			apitest.RunExactCatchUp(t, e, e.Log, tc.proto, func(ctx context.Context) func() { return e.Writer(ctx, 30, 500*time.Microsecond) })
		})
	}
}

// TestThrottledFoldEqualsUnthrottled: the folded coalesced deltas equal the
// unthrottled fold.
func TestThrottledFoldEqualsUnthrottled(t *testing.T) {
	e := apitest.Start(t, api.Config{}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var folds []*apitest.Fold
	var clients []*client.Client
	var wg sync.WaitGroup
	coalesced := 0
	var cmu sync.Mutex
	for _, throttle := range []time.Duration{0, 50 * time.Millisecond} {
		f := apitest.NewFold(t)
		c, err := client.New(client.Options{URL: e.URL, Handler: f, Prefix: "seller:", Throttle: throttle, Proto: throttle > 0,
			Token: func(context.Context) (string, error) { return apitest.Token(t, time.Hour, "*"), nil },
			Trace: func(m wire.ServerMessage) {
				cmu.Lock()
				defer cmu.Unlock()
				for _, d := range m.Deltas {
					if d.Coalesced > 1 {
						coalesced++
					}
				}
			}})
		if err != nil {
			t.Fatal(err)
		}
		folds, clients = append(folds, f), append(clients, c)
		wg.Add(1)
		go func() { defer wg.Done(); _ = c.Run(ctx) }()
	}
	for _, c := range clients {
		for c.Stats().Connects == 0 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	time.Sleep(50 * time.Millisecond)
	wctx, wcancel := context.WithTimeout(ctx, time.Second)
	e.Writer(wctx, 8, 200*time.Microsecond)()
	wcancel()
	last := apitest.LastLSN(t, e.Log, stream.Selector{Prefix: "seller:"})
	for _, c := range clients {
		for _, cur := c.Cursor(); cur < last; _, cur = c.Cursor() {
			time.Sleep(5 * time.Millisecond)
		}
	}
	cancel()
	wg.Wait()
	folds[1].Equal(t, e.Log, stream.Selector{Prefix: "seller:"})
	folds[0].Equal(t, e.Log, stream.Selector{Prefix: "seller:"})
	if coalesced == 0 {
		t.Error("nothing was coalesced")
	}
}

func TestEpochChangeResets(t *testing.T) {
	e := apitest.Start(t, api.Config{}, nil)
	e.Write(hub.Op{Subject: "seller:1", Score: 5e6})
	f := apitest.NewFold(t)
	c, _ := client.New(client.Options{URL: e.URL, Handler: f, Subjects: []string{"seller:1"}, MinBackoff: time.Millisecond,
		Token: func(context.Context) (string, error) { return apitest.Token(t, time.Hour, "*"), nil }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	for _, cur := c.Cursor(); cur == 0; _, cur = c.Cursor() {
		time.Sleep(5 * time.Millisecond)
	}
	// The history is replaced: a new epoch whose store starts over.
	e.Log.Prune(e.Server.Hub().Head())
	e.Server.Hub().Reset(stream.Meta{Epoch: "epoch-2", Checkpoint: e.Server.Hub().Head(), LogFrom: e.Server.Hub().Head()})
	for ep, _ := c.Cursor(); ep != "epoch-2"; ep, _ = c.Cursor() {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if f.Resets() != 1 {
		t.Fatalf("%d resets", f.Resets())
	}
}

func TestTerminalErrors(t *testing.T) {
	e := apitest.Start(t, api.Config{}, nil)
	c, _ := client.New(client.Options{URL: e.URL, Handler: apitest.NewFold(t), Prefix: "seller:", MinBackoff: time.Millisecond,
		Token: func(context.Context) (string, error) { return apitest.Token(t, time.Hour, "buyer:*"), nil }})
	err := c.Run(context.Background())
	if te, ok := err.(*client.TerminalError); !ok || te.Code != wire.CodeForbidden {
		t.Fatalf("got %v", err)
	}
	c, _ = client.New(client.Options{URL: e.URL, Handler: apitest.NewFold(t), Prefix: "seller:", MinBackoff: time.Millisecond,
		Token: func(context.Context) (string, error) { return "bad", nil }})
	if err := c.Run(context.Background()); err == nil {
		t.Fatal("a bad token did not end Run")
	}
}

func TestTokenRefresh(t *testing.T) {
	e := apitest.Start(t, api.Config{}, nil)
	f := apitest.NewFold(t)
	c, _ := client.New(client.Options{URL: e.URL, Handler: f, Prefix: "seller:",
		Token: func(context.Context) (string, error) { return apitest.Token(t, 2*time.Second, "*"), nil }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	time.Sleep(4 * time.Second) // two token lifetimes
	e.Write(hub.Op{Subject: "seller:1", Score: 5e6})
	for c.Stats().Applied == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if n := c.Stats().Connects; n != 1 {
		t.Fatalf("%d connects: the session did not survive its first token", n)
	}
}

func TestBackoffFullJitter(t *testing.T) {
	var sum time.Duration
	for i := range 1000 {
		d := client.Backoff(10, 100*time.Millisecond, time.Second)
		if d < 0 || d >= time.Second {
			t.Fatalf("attempt 10: %s outside [0, cap)", d)
		}
		sum += d
		if i < 100 {
			if d0 := client.Backoff(0, 100*time.Millisecond, time.Second); d0 >= 100*time.Millisecond {
				t.Fatalf("attempt 0: %s", d0)
			}
		}
	}
	if avg := sum / 1000; avg < 400*time.Millisecond || avg > 600*time.Millisecond {
		t.Errorf("mean %s, want about half the cap", avg)
	}
	if d := client.Backoff(100, time.Second, 30*time.Second); d >= 30*time.Second {
		t.Errorf("overflowed cap: %s", d)
	}
}
