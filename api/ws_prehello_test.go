package api_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/repstream/repstream/api"
	"github.com/repstream/repstream/api/apitest"
	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/stream/hub"
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

// A cursor is parsed exactly wherever a client gives one: trailing bytes,
// spaces or a half wider than 32 bits are bad_cursor, never trimmed or
// truncated.
func TestCursorParsedExactly(t *testing.T) {
	e := apitest.Start(t, api.Config{}, nil)
	e.Write(hub.Op{Subject: "seller:1", Score: 4e6})
	all := apitest.Token(t, time.Hour, "*")
	bad := []string{"0/16B3748junk", " 0/1000", "0/1000 ", "100000000/5", "0/100000000", "0x0/5"}
	c := connect(t, e, wire.JSON{}, "*")
	for i, since := range bad {
		c.send(wire.ClientMessage{Type: wire.TypeSubscribe, ID: int64(i + 1), Prefix: "seller:", Since: since, HasSince: true})
		m := c.expect(wire.TypeError)
		if m.Code != wire.CodeBadCursor || m.ID != int64(i+1) {
			t.Errorf("subscribe since %q: %+v; want bad_cursor", since, m)
		}
		status, body := get(t, e, "/v1/subjects/seller:1/deltas?since="+url.QueryEscape(since), all)
		if status != 400 || body["code"] != "bad_cursor" {
			t.Errorf("GET deltas since %q: %d %v; want 400 bad_cursor", since, status, body)
		}
	}
}

// A hello without a token is refused at once (4001), not left open until
// the hello timeout.
func TestHelloWithoutTokenClosed(t *testing.T) {
	e := apitest.Start(t, api.Config{}, nil) // hello_timeout 10 s
	c := dial(t, e, wire.JSON{}, http.Header{})
	c.sendRaw([]byte(`{"type":"hello"}`))
	start := time.Now()
	c.expectClose(api.CloseUnauthenticated, 5*time.Second)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("closed after %s", d)
	}
}
