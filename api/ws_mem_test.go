package api_test

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/repstream/repstream/api"
	"github.com/repstream/repstream/api/apitest"
	"github.com/repstream/repstream/api/wire"
)

// TestIdleConnectionFootprint opens many idle, subscribed connections and
// reports what each costs the server: heap and stack in use, and
// goroutines. The client side keeps only its net.Conn (its WebSocket state
// is dropped once subscribed), so the figures are nearly all the server's.
// REPSTREAM_WS_MEM_N overrides the number of connections (2000; 200 with
// -race or -short).
//
// Only one figure is asserted: an idle connection runs no goroutine (its
// socket waits in the server's poller); reading, writing and request
// handling start goroutines only while there is work.
func TestIdleConnectionFootprint(t *testing.T) {
	n := 2000
	if raceEnabled || testing.Short() {
		n = 200
	}
	if v := os.Getenv("REPSTREAM_WS_MEM_N"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("REPSTREAM_WS_MEM_N=%q", v)
		}
	}
	e := apitest.Start(t, api.Config{MaxConnections: n + 10}, nil)
	tok := apitest.Token(t, time.Hour, "*")
	d := websocket.Dialer{Subprotocols: []string{wire.SubprotocolJSON}, HandshakeTimeout: 0,
		ReadBufferSize: 256, WriteBufferSize: 256}
	codec := wire.JSON{}
	open := func(i int) net.Conn {
		ws, _, err := d.Dial(e.URL, bearerHeader(tok))
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		c := &wsClient{t: t, ws: ws, codec: codec}
		c.expect(wire.TypeWelcome)
		c.send(wire.ClientMessage{Type: wire.TypeSubscribe, ID: 1, Subjects: []string{fmt.Sprintf("seller:%d", i)}})
		c.expect(wire.TypeSubscribed)
		c.expect(wire.TypeSnapshot)
		_ = ws.SetReadDeadline(time.Time{})
		return ws.NetConn() // the client's WebSocket state is garbage from here
	}
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// Warm up (pools, codecs, server-wide loops), then measure from there.
	conns = append(conns, open(-1))
	g0, m0 := settle(t)
	d0 := api.IdleDrainers(e.Server)
	start := time.Now()
	for i := range n {
		conns = append(conns, open(i))
	}
	t.Logf("opened %d connections in %s", n, time.Since(start).Round(time.Millisecond))
	if got := e.Server.Hub().Connections(); got != n+1 {
		t.Fatalf("hub holds %d connections, want %d", got, n+1)
	}
	report := func(what string) {
		t.Helper()
		g1, m1 := settle(t)
		perConn := func(a, b uint64) float64 { return (float64(b) - float64(a)) / float64(n) }
		heap, stack := perConn(m0.HeapInuse, m1.HeapInuse), perConn(m0.StackInuse, m1.StackInuse)
		live := perConn(m0.HeapAlloc, m1.HeapAlloc)
		// The server keeps a few drain goroutines idle for all its
		// sessions; they are not the connections'.
		d1 := api.IdleDrainers(e.Server)
		goroutines := float64(g1-g0-(d1-d0)) / float64(n)
		t.Logf("per idle subscribed connection (n=%d), %s: HeapInuse %.0f B + StackInuse %.0f B = %.2f KiB (live heap objects %.0f B); %.2f goroutines (and %d idle drain goroutines for the server)",
			n, what, heap, stack, (heap+stack)/1024, live, goroutines, d1)
		if goroutines > 0.01 {
			t.Errorf("%s: %.2f goroutines per idle connection, want none", what, goroutines)
		}
	}
	report("subscribed")
	// Each client answers a ping (an unsolicited pong, as far as the server
	// knows; masked, empty) and sends a ping of its own: control frames the
	// server's reader handles while it waits for a message.
	for _, frame := range []struct {
		what string
		b    []byte
	}{
		{"after a pong from each client", []byte{0x8a, 0x80, 1, 2, 3, 4}},
		{"after a ping from each client", []byte{0x89, 0x80, 1, 2, 3, 4}},
	} {
		for _, c := range conns[1:] {
			if _, err := c.Write(frame.b); err != nil {
				t.Fatal(err)
			}
		}
		report(frame.what)
	}
}

// settle waits for the goroutine count to stop moving, collects garbage and
// returns the goroutines and memory in use.
func settle(t *testing.T) (int, runtime.MemStats) {
	t.Helper()
	prev, stable := -1, 0
	for deadline := time.Now().Add(10 * time.Second); stable < 5 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		if g := runtime.NumGoroutine(); g == prev {
			stable++
		} else {
			prev, stable = g, 0
		}
	}
	var ms runtime.MemStats
	for range 3 {
		runtime.GC()
	}
	runtime.ReadMemStats(&ms)
	return runtime.NumGoroutine(), ms
}
