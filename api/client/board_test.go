package client_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/repstream/repstream/api"
	"github.com/repstream/repstream/api/apitest"
	"github.com/repstream/repstream/api/client"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/hub"
)

// boardFold keeps the last board a client was sent.
type boardFold struct {
	*apitest.Fold
	mu      sync.Mutex
	lsn     stream.LSN
	entries []stream.State
	boards  int
}

func (b *boardFold) Board(lsn stream.LSN, entries []stream.State, _ []stream.Move) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lsn, b.entries = lsn, entries
	b.boards++
}

func (b *boardFold) last() (stream.LSN, []stream.State) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lsn, b.entries
}

// A board client ends with the store's ranking after a workload, for each
// codec.
func TestBoard(t *testing.T) {
	for _, proto := range []bool{false, true} {
		e := apitest.Start(t, api.Config{}, nil)
		for range 20 {
			e.Write(hub.RandomOps(20)...)
		}
		f := &boardFold{Fold: apitest.NewFold(t)}
		c, err := client.New(client.Options{URL: e.URL, Handler: f, Prefix: "seller:", Top: 5, Order: stream.OrderCount, Proto: proto,
			MinBackoff: time.Millisecond, Token: func(context.Context) (string, error) { return apitest.Token(t, time.Hour, "seller:*"), nil }})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		for range 100 {
			e.Write(hub.RandomOps(20)...)
		}
		head := e.Server.Hub().Head()
		want, _, _ := e.Log.States(context.Background(), stream.Selector{Prefix: "seller:"}, stream.OrderCount, 5)
		deadline := time.Now().Add(5 * time.Second)
		for {
			lsn, got := f.last()
			if lsn >= head || time.Now().After(deadline) {
				if len(got) != len(want) {
					t.Fatalf("proto %v: board %+v at %s; want %+v at %s", proto, got, lsn, want, head)
				}
				for i := range got {
					if got[i].Subject != want[i].Subject || got[i].Count != want[i].Count {
						t.Fatalf("proto %v: rank %d is %+v; want %+v", proto, i+1, got[i], want[i])
					}
				}
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

func TestBoardOptions(t *testing.T) {
	if _, err := client.New(client.Options{URL: "ws://x", Handler: apitest.NewFold(t), Prefix: "seller:", Top: 5}); err == nil {
		t.Fatal("a Handler without Board was accepted for a leaderboard")
	}
	if _, err := client.New(client.Options{URL: "ws://x", Handler: &boardFold{}, Subjects: []string{"a"}, Top: 5}); err == nil {
		t.Fatal("a leaderboard of subjects was accepted")
	}
}
