package api_test

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/repstream/repstream/api"
	"github.com/repstream/repstream/api/apitest"
	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/stream/hub"
)

// BenchmarkFanout publishes single-delta transactions to conns
// connections that all subscribe to them, and reports deliveries (deltas
// received by a client) per second. Clients and server share the process,
// so the figure is a comparison, not the server's capacity.
//
// With lockstep, each transaction is published only once every client has
// the previous one: every frame finds its connection idle (no batching), as
// at a modest rate per connection.
func BenchmarkFanout(b *testing.B) {
	for _, conns := range []int{50, 500} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) { benchFanout(b, conns, false) })
	}
	for _, conns := range []int{1, 50} {
		b.Run(fmt.Sprintf("lockstep-conns=%d", conns), func(b *testing.B) { benchFanout(b, conns, true) })
	}
}

func benchFanout(b *testing.B, conns int, lockstep bool) {
	e := apitest.Start(b, api.Config{MaxConnections: conns + 1}, nil)
	tok := apitest.Token(b, time.Hour, "*")
	d := websocket.Dialer{Subprotocols: []string{wire.SubprotocolJSON}}
	got := make([]atomic.Int64, conns)
	var pending atomic.Int64            // lockstep: deliveries of this round still to come
	roundDone := make(chan struct{}, 1) // lockstep: the round is complete
	var wg sync.WaitGroup
	var wss []*websocket.Conn
	for i := range conns {
		ws, _, err := d.Dial(e.URL, bearerHeader(tok))
		if err != nil {
			b.Fatal(err)
		}
		wss = append(wss, ws)
		c := &wsClient{t: b, ws: ws, codec: wire.JSON{}}
		c.expect(wire.TypeWelcome)
		c.send(wire.ClientMessage{Type: wire.TypeSubscribe, ID: 1, Prefix: "seller:"})
		c.expect(wire.TypeSubscribed)
		c.expect(wire.TypeSnapshot)
		_ = ws.SetReadDeadline(time.Time{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				_, p, err := ws.ReadMessage()
				if err != nil {
					return
				}
				k := int64(bytes.Count(p, []byte(`"type":"delta",`)))
				got[i].Add(k)
				if lockstep && k > 0 && pending.Add(-k) == 0 {
					roundDone <- struct{}{}
				}
			}
		}()
	}
	defer func() {
		for _, ws := range wss {
			ws.Close()
		}
		wg.Wait()
	}()
	slowest := func() int64 {
		m := got[0].Load()
		for i := range got {
			m = min(m, got[i].Load())
		}
		return m
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for n := range b.N {
		// Stay within a few thousand frames of the slowest client, far
		// below the slow-consumer bound.
		for int64(n)-slowest() > 2000 {
			time.Sleep(50 * time.Microsecond)
		}
		if lockstep {
			pending.Store(int64(conns))
		}
		e.Write(hub.Op{Subject: fmt.Sprintf("seller:%d", n%100), Score: 4e6})
		if lockstep {
			<-roundDone
		}
	}
	for slowest() < int64(b.N) {
		time.Sleep(100 * time.Microsecond)
	}
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)*float64(conns)/el.Seconds(), "deliveries/s")
	b.ReportMetric(float64(el.Nanoseconds())/(float64(b.N)*float64(conns)), "ns/delivery")
}
