package api_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/repstream/repstream/api"
	"github.com/repstream/repstream/api/apitest"
	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/hub"
)

// A client-paced catch-up does not hold a subscribe worker: with one
// worker, a client that reads nothing while its large snapshot is sent
// does not hold up another connection's subscribe.
func TestSlowCatchUpReleasesWorker(t *testing.T) {
	e := apitest.Start(t, api.Config{SubscribeWorkers: 1, QueueBytes: 64 << 10, WriteTimeout: time.Minute}, nil)
	var ops []hub.Op
	for i := range 30000 {
		ops = append(ops, hub.Op{Subject: fmt.Sprintf("seller:%06d", i), Score: 4 * stream.MicroUnit})
	}
	e.Write(ops...)
	// The slow client: a tiny receive buffer, and it never reads.
	d := websocket.Dialer{Subprotocols: []string{wire.SubprotocolJSON}, HandshakeTimeout: 5 * time.Second,
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetReadBuffer(4096)
			}
			return c, err
		}}
	slow, _, err := d.Dial(e.URL, bearerHeader(apitest.Token(t, time.Hour, "*")))
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	b, _ := wire.JSON{}.EncodeClient(wire.ClientMessage{Type: wire.TypeSubscribe, ID: 1, Prefix: "seller:"})
	if err := slow.WriteMessage(websocket.TextMessage, b); err != nil {
		t.Fatal(err)
	}
	waitSubscriptions(t, e, 1)
	time.Sleep(300 * time.Millisecond) // its catch-up now waits on the client
	next := connect(t, e, wire.JSON{}, "*")
	start := time.Now()
	next.send(wire.ClientMessage{Type: wire.TypeSubscribe, ID: 1, Subjects: []string{"seller:000001"}})
	// Generous under -race on a busy machine; without the release it
	// waits until the slow client is dropped (pong_timeout, 35 s).
	m, err := next.read(20 * time.Second)
	if err != nil || m.Type != wire.TypeSubscribed || m.ID != 1 {
		t.Fatalf("got %+v, %v; want subscribed", m, err)
	}
	next.expect(wire.TypeSnapshot)
	t.Logf("subscribed and snapshot %s after the subscribe, the slow client's catch-up still waiting", time.Since(start))
}
