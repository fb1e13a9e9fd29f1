package api_test

import (
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/repstream/repstream/api"
	"github.com/repstream/repstream/api/apitest"
	"github.com/repstream/repstream/api/wire"
)

// TestLivePeerKept: a client that answers the server's pings stays
// connected well past PongTimeout, and is pinged about once a heartbeat.
func TestLivePeerKept(t *testing.T) {
	e := apitest.Start(t, api.Config{Heartbeat: 200 * time.Millisecond, PongTimeout: 350 * time.Millisecond}, nil)
	c := connect(t, e, wire.JSON{}, "*")
	pings := make(chan struct{}, 100)
	c.ws.SetPingHandler(func(data string) error {
		pings <- struct{}{}
		return c.ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	done := make(chan error, 1)
	go func() {
		for {
			if _, err := c.read(5 * time.Second); err != nil {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		t.Fatalf("a live peer was dropped: %v", err)
	case <-time.After(2 * time.Second):
	}
	if n := len(pings); n < 6 || n > 12 {
		t.Errorf("%d pings in 2s with a 200ms heartbeat", n)
	}
	if got := e.Server.Hub().Connections(); got != 1 {
		t.Fatalf("%d connections", got)
	}
	c.ws.Close()
	<-done
}

// TestClientPingAnswered: a client's WebSocket ping gets a pong with its
// payload (written by the session's drain, not its reader).
func TestClientPingAnswered(t *testing.T) {
	forCodecs(t, func(t *testing.T, codec wire.Codec) {
		e := apitest.Start(t, api.Config{}, nil)
		c := connect(t, e, codec, "*")
		pong := make(chan string, 1)
		c.ws.SetPongHandler(func(data string) error {
			pong <- data
			return nil
		})
		if err := c.ws.WriteControl(websocket.PingMessage, []byte("abc"), time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		c.send(wire.ClientMessage{Type: wire.TypePing, ID: 1})
		c.expect(wire.TypePong) // the pong control frame is handled while reading
		select {
		case data := <-pong:
			if data != "abc" {
				t.Fatalf("pong %q", data)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no pong")
		}
	})
}
