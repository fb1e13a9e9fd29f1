package api_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/repstream/repstream/api"
	"github.com/repstream/repstream/api/apitest"
	"github.com/repstream/repstream/api/wire"
)

// A session that has not been welcomed gets nothing but errors and its
// close: no tick leaks the server's position before authentication, and a
// ping is answered with unauthenticated, not pong.
func TestNothingButErrorsBeforeWelcome(t *testing.T) {
	e := apitest.Start(t, api.Config{Heartbeat: 100 * time.Millisecond, HelloTimeout: 1500 * time.Millisecond}, nil)
	for _, c := range wire.Codecs() {
		t.Run(c.Name(), func(t *testing.T) {
			ws := dial(t, e, c, http.Header{})
			ws.send(wire.ClientMessage{Type: wire.TypePing, ID: 3})
			var got []wire.ServerMessage
			deadline := time.Now().Add(5 * time.Second)
			for {
				m, err := ws.read(time.Until(deadline))
				if err != nil {
					break // the hello timeout's close
				}
				got = append(got, m)
			}
			if len(got) != 1 || got[0].Type != wire.TypeError || got[0].Code != wire.CodeUnauthenticated || got[0].ID != 3 {
				t.Errorf("before welcome got %+v; want only error unauthenticated for id 3", got)
			}
		})
	}
}

// Before hello a message is bounded by a small cap (8 KiB), whatever
// max_frame_bytes allows after it.
func TestPreHelloFrameCap(t *testing.T) {
	e := apitest.Start(t, api.Config{}, nil) // max_frame_bytes 64 KiB
	// A hello with a 9 KiB token before authentication: 1009.
	c := dial(t, e, wire.JSON{}, http.Header{})
	c.send(wire.ClientMessage{Type: wire.TypeHello, Token: strings.Repeat("x", 9<<10)})
	c.expectClose(api.CloseTooBig, 5*time.Second)
	// Announced but not sent: the header alone closes it.
	c = dial(t, e, wire.JSON{}, http.Header{})
	c.rawFrame(ws.Frame{Header: ws.Header{Fin: true, OpCode: ws.OpText, Length: 60 << 10}}, true)
	c.expectClose(api.CloseTooBig, 5*time.Second)
	// After hello the configured limit holds: a 9 KiB ping message is fine.
	c = dial(t, e, wire.JSON{}, http.Header{})
	c.send(wire.ClientMessage{Type: wire.TypeHello, Token: apitest.Token(t, time.Hour, "*")})
	c.expect(wire.TypeWelcome)
	c.sendRaw([]byte(`{"type":"ping","id":5,"pad":"` + strings.Repeat("x", 9<<10) + `"}`))
	if m := c.expect(wire.TypePong); m.ID != 5 {
		t.Fatalf("pong %+v", m)
	}
}
