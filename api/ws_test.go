package api_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/repstream/repstream/api"
	"github.com/repstream/repstream/api/apitest"
	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/hub"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type wsClient struct {
	t     testing.TB
	ws    *websocket.Conn
	codec wire.Codec

	caughtUp bool // read returns caught_up messages (else skips them)
}

func dial(t testing.TB, e *apitest.Env, codec wire.Codec, h http.Header) *wsClient {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{codec.Name()}, HandshakeTimeout: 5 * time.Second}
	ws, _, err := d.Dial(e.URL, h)
	if err != nil {
		t.Fatal(err)
	}
	if ws.Subprotocol() != codec.Name() {
		t.Fatalf("subprotocol %q", ws.Subprotocol())
	}
	c := &wsClient{t: t, ws: ws, codec: codec}
	t.Cleanup(func() { ws.Close() })
	return c
}

func bearerHeader(tok string) http.Header {
	return http.Header{"Authorization": {"Bearer " + tok}}
}

// connect dials with a token in the header and reads welcome.
func connect(t testing.TB, e *apitest.Env, codec wire.Codec, subjects ...string) *wsClient {
	t.Helper()
	c := dial(t, e, codec, bearerHeader(apitest.Token(t, time.Hour, subjects...)))
	c.expect(wire.TypeWelcome)
	return c
}

func (c *wsClient) send(m wire.ClientMessage) {
	c.t.Helper()
	b, err := c.codec.EncodeClient(m)
	if err != nil {
		c.t.Fatal(err)
	}
	c.sendRaw(b)
}

func (c *wsClient) sendRaw(b []byte) {
	c.t.Helper()
	mt := websocket.TextMessage
	if c.codec.Binary() {
		mt = websocket.BinaryMessage
	}
	if err := c.ws.WriteMessage(mt, b); err != nil {
		c.t.Fatal(err)
	}
}

func (c *wsClient) read(timeout time.Duration) (wire.ServerMessage, error) {
	_ = c.ws.SetReadDeadline(time.Now().Add(timeout))
	for {
		_, b, err := c.ws.ReadMessage()
		if err != nil {
			return wire.ServerMessage{}, err
		}
		m, err := c.codec.DecodeServer(b)
		if err == nil && m.Type == wire.TypeCaughtUp && !c.caughtUp {
			continue
		}
		return m, err
	}
}

func (c *wsClient) next() wire.ServerMessage {
	c.t.Helper()
	m, err := c.read(5 * time.Second)
	if err != nil {
		c.t.Fatal(err)
	}
	return m
}

func (c *wsClient) expect(typ string) wire.ServerMessage {
	c.t.Helper()
	m := c.next()
	if m.Type != typ {
		c.t.Fatalf("got %+v, want type %s", m, typ)
	}
	return m
}

func (c *wsClient) expectError(code string) {
	c.t.Helper()
	m := c.expect(wire.TypeError)
	if m.Code != code {
		c.t.Fatalf("error code %s (%s), want %s", m.Code, m.Message, code)
	}
}

// expectClose reads until the server closes and checks the code.
func (c *wsClient) expectClose(code int, within time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for {
		_, err := c.read(time.Until(deadline))
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) {
			c.t.Fatalf("want close %d, got %v", code, err)
		}
		if ce.Code != code {
			c.t.Fatalf("close code %d (%s), want %d", ce.Code, ce.Text, code)
		}
		return
	}
}

func forCodecs(t *testing.T, f func(t *testing.T, codec wire.Codec)) {
	for _, c := range wire.Codecs() {
		t.Run(c.Name(), func(t *testing.T) { f(t, c) })
	}
}

func TestSubscribeFlow(t *testing.T) {
	forCodecs(t, func(t *testing.T, codec wire.Codec) {
		e := apitest.Start(t, api.Config{}, nil)
		first := e.Write(hub.Op{Subject: "seller:1", Score: 5e6})
		c := connect(t, e, codec, "seller:*")
		c.send(wire.ClientMessage{Type: wire.TypeSubscribe, ID: 7, Prefix: "seller:"})
		sub := c.expect(wire.TypeSubscribed)
		if sub.ID != 7 || sub.Mode != "snapshot" || sub.Reset {
			t.Fatalf("%+v", sub)
		}
		snap := c.expect(wire.TypeSnapshot)
		if snap.ID != 7 || len(snap.States) != 1 || snap.States[0].LSN != first.LSN {
			t.Fatalf("%+v", snap)
		}
		txn := e.Write(hub.Op{Subject: "seller:1", Score: 4e6}, hub.Op{Subject: "seller:2", Score: 3e6})
		m := c.expect(wire.TypeDeltas)
		if len(m.Deltas) != 2 || m.Deltas[0].LSN != txn.LSN || m.Deltas[0].Version != 2 {
			t.Fatalf("%+v", m)
		}
		c.send(wire.ClientMessage{Type: wire.TypePing, ID: 9})
		if m := c.expect(wire.TypePong); m.ID != 9 {
			t.Fatalf("%+v", m)
		}
		// Resume from the first delta: replay of the second transaction.
		c2 := connect(t, e, codec, "seller:*")
		c2.send(wire.ClientMessage{Type: wire.TypeSubscribe, ID: 8, Prefix: "seller:", Since: first.LSN.String(), HasSince: true})
		if m := c2.expect(wire.TypeSubscribed); m.Mode != "replay" || m.LSN != txn.LSN {
			t.Fatalf("%+v", m)
		}
		if m := c2.expect(wire.TypeDeltas); len(m.Deltas) != 2 {
			t.Fatalf("%+v", m)
		}
		c2.send(wire.ClientMessage{Type: wire.TypeUnsubscribe, ID: 10, Prefix: "seller:"})
		if m := c2.expect(wire.TypeUnsubscribed); m.ID != 10 {
			t.Fatalf("%+v", m)
		}
		c2.send(wire.ClientMessage{Type: wire.TypePing, ID: 11})
		e.Write(hub.Op{Subject: "seller:1", Score: 1e6})
		c.expect(wire.TypeDelta)
		if m := c2.expect(wire.TypePong); m.ID != 11 {
			t.Fatalf("unsubscribed connection got %+v", m)
		}
	})
}

func TestHelloAuth(t *testing.T) {
	forCodecs(t, func(t *testing.T, codec wire.Codec) {
		e := apitest.Start(t, api.Config{}, nil)
		c := dial(t, e, codec, nil)
		c.send(wire.ClientMessage{Type: wire.TypeSubscribe, ID: 1, Prefix: "seller:"})
		c.expectError(wire.CodeUnauthenticated)
		c.send(wire.ClientMessage{Type: wire.TypeHello, Token: apitest.Token(t, time.Hour, "seller:*")})
		if m := c.expect(wire.TypeWelcome); m.Epoch != "epoch-1" || m.HeartbeatMs != 15000 || m.Server != "repstream/test" {
			t.Fatalf("%+v", m)
		}
		c.send(wire.ClientMessage{Type: wire.TypeSubscribe, ID: 2, Prefix: "seller:"})
		c.expect(wire.TypeSubscribed)
	})
}

// TestBadInputs: every bad input gets the contract's answer while a
// healthy client on the same server keeps receiving.
func TestBadInputs(t *testing.T) {
	forCodecs(t, func(t *testing.T, codec wire.Codec) {
		e := apitest.Start(t, api.Config{HelloTimeout: 300 * time.Millisecond, MaxFrameBytes: 4096, MaxSubscriptions: 50}, nil)
		healthy := connect(t, e, codec, "*")
		healthy.send(wire.ClientMessage{Type: wire.TypeSubscribe, ID: 1, Prefix: "seller:"})
		healthy.expect(wire.TypeSubscribed)
		healthy.expect(wire.TypeSnapshot)
		stillServing := func(t *testing.T) {
			t.Helper()
			e.Write(hub.Op{Subject: "seller:1", Score: 5e6})
			healthy.expect(wire.TypeDelta)
		}
		sub := func(id int64, prefix, since string) wire.ClientMessage {
			return wire.ClientMessage{Type: wire.TypeSubscribe, ID: id, Prefix: prefix, Since: since, HasSince: since != ""}
		}
		garbage := []byte("this is not a message")
		if codec.Binary() {
			garbage = []byte{0xff, 0xff, 0xff, 0x01}
		}
		for _, tc := range []struct {
			name string
			run  func(t *testing.T)
		}{
			{"malformed frame", func(t *testing.T) {
				c := connect(t, e, codec, "*")
				c.sendRaw(garbage)
				c.expectClose(api.CloseMalformed, 5*time.Second)
			}},
			{"unknown type", func(t *testing.T) {
				c := connect(t, e, codec, "*")
				if codec.Binary() {
					c.sendRaw([]byte{0x50, 0x01}) // an unknown field: no known message
				} else {
					c.sendRaw([]byte(`{"type":"frobnicate","id":3}`))
				}
				c.expectError(wire.CodeBadRequest)
				c.send(wire.ClientMessage{Type: wire.TypePing, ID: 4})
				c.expect(wire.TypePong)
			}},
			{"missing selector", func(t *testing.T) {
				c := connect(t, e, codec, "*")
				c.send(wire.ClientMessage{Type: wire.TypeSubscribe, ID: 3})
				c.expectError(wire.CodeBadRequest)
			}},
			{"no hello", func(t *testing.T) {
				c := dial(t, e, codec, nil)
				c.expectClose(api.CloseUnauthenticated, 5*time.Second)
			}},
			{"bad signature in hello", func(t *testing.T) {
				c := dial(t, e, codec, nil)
				tok := apitest.Token(t, time.Hour, "*")
				c.send(wire.ClientMessage{Type: wire.TypeHello, Token: tok[:len(tok)-4] + "AAAA"})
				c.expectClose(api.CloseUnauthenticated, 5*time.Second)
			}},
			{"bad signature in header", func(t *testing.T) {
				tok := apitest.Token(t, time.Hour, "*")
				c := dial(t, e, codec, bearerHeader(tok[:len(tok)-4]+"AAAA"))
				c.expectClose(api.CloseUnauthenticated, 5*time.Second)
			}},
			{"alg none", func(t *testing.T) {
				c := dial(t, e, codec, nil)
				c.send(wire.ClientMessage{Type: wire.TypeHello, Token: "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWJqZWN0cyI6WyIqIl19."})
				c.expectClose(api.CloseUnauthenticated, 5*time.Second)
			}},
			{"expired token", func(t *testing.T) {
				c := dial(t, e, codec, bearerHeader(apitest.Token(t, -time.Minute, "*")))
				c.expectClose(api.CloseUnauthenticated, 5*time.Second)
			}},
			{"token not covering the subject", func(t *testing.T) {
				c := connect(t, e, codec, "seller:1", "buyer:*")
				c.send(wire.ClientMessage{Type: wire.TypeSubscribe, ID: 5, Subjects: []string{"seller:1", "seller:2"}})
				c.expectError(wire.CodeForbidden)
				c.send(sub(6, "seller:", ""))
				c.expectError(wire.CodeForbidden)
				c.send(sub(7, "buyer:x", ""))
				c.expect(wire.TypeSubscribed)
			}},
			{"malformed cursor", func(t *testing.T) {
				c := connect(t, e, codec, "*")
				c.send(sub(8, "seller:", "banana"))
				c.expectError(wire.CodeBadCursor)
				c.send(sub(8, "seller:", "0/ZZ"))
				c.expectError(wire.CodeBadCursor)
			}},
			{"future cursor", func(t *testing.T) {
				c := connect(t, e, codec, "*")
				c.send(sub(9, "seller:", (e.Server.Hub().Head() + 1000).String()))
				c.expectError(wire.CodeBadCursor)
			}},
			{"oversized frame", func(t *testing.T) {
				c := connect(t, e, codec, "*")
				c.send(wire.ClientMessage{Type: wire.TypeSubscribe, ID: 10, Prefix: strings.Repeat("x", 5000)})
				c.expectClose(api.CloseTooBig, 5*time.Second)
			}},
			{"burst of 10000 subscribes", func(t *testing.T) {
				c := connect(t, e, codec, "*")
				var wg sync.WaitGroup
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 10000 {
						b, _ := codec.EncodeClient(wire.ClientMessage{Type: wire.TypeSubscribe, ID: int64(i), Subjects: []string{fmt.Sprintf("seller:%d", i)}})
						mt := websocket.TextMessage
						if codec.Binary() {
							mt = websocket.BinaryMessage
						}
						if err := c.ws.WriteMessage(mt, b); err != nil {
							t.Error(err)
							return
						}
					}
				}()
				var subscribed, refused int
				for subscribed+refused < 10000 {
					m := c.next()
					switch {
					case m.Type == wire.TypeSubscribed:
						subscribed++
					case m.Type == wire.TypeError && m.Code == wire.CodeTooManySubscriptions:
						refused++
					case m.Type == wire.TypeSnapshot, m.Type == wire.TypeDelta:
					default:
						t.Fatalf("unexpected %+v", m)
					}
				}
				wg.Wait()
				if subscribed != 50 {
					t.Errorf("%d subscribed, want 50 (max_subscriptions)", subscribed)
				}
				c.send(wire.ClientMessage{Type: wire.TypePing, ID: 1})
				for m := c.next(); m.Type != wire.TypePong; m = c.next() {
				}
			}},
			{"origin refused", func(t *testing.T) {
				h := bearerHeader(apitest.Token(t, time.Hour, "*"))
				h.Set("Origin", "https://evil.example")
				c := dial(t, e, codec, h)
				c.expectClose(api.ClosePolicy, 5*time.Second)
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				tc.run(t)
				stillServing(t)
			})
		}
	})
}

func TestTooManyConnections(t *testing.T) {
	e := apitest.Start(t, api.Config{MaxConnections: 2}, nil)
	connect(t, e, wire.JSON{}, "*")
	connect(t, e, wire.JSON{}, "*")
	c := dial(t, e, wire.JSON{}, bearerHeader(apitest.Token(t, time.Hour, "*")))
	c.expectClose(api.CloseTooManyConnections, 5*time.Second)
}

func TestAllowedOrigins(t *testing.T) {
	e := apitest.Start(t, api.Config{AllowedOrigins: []string{"https://dash.example"}}, nil)
	h := bearerHeader(apitest.Token(t, time.Hour, "*"))
	h.Set("Origin", "https://dash.example")
	c := dial(t, e, wire.JSON{}, h)
	c.expect(wire.TypeWelcome)
}

// TestStuckClient: a client that never reads is closed with 4008 while a
// healthy one keeps receiving on time.
func TestStuckClient(t *testing.T) {
	e := apitest.Start(t, api.Config{QueueBytes: 64 << 10, WriteTimeout: 30 * time.Second}, nil)
	stuck := connect(t, e, wire.JSON{}, "*")
	stuck.send(wire.ClientMessage{Type: wire.TypeSubscribe, ID: 1, Prefix: "seller:"})
	healthy := connect(t, e, wire.JSON{}, "*")
	healthy.send(wire.ClientMessage{Type: wire.TypeSubscribe, ID: 1, Prefix: "seller:"})
	healthy.expect(wire.TypeSubscribed)
	healthy.expect(wire.TypeSnapshot)
	slow := func() float64 {
		mfs, _ := e.Registry.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "repstream_hub_slow_consumer_disconnects_total" {
				return mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		return 0
	}
	ops := make([]hub.Op, 50)
	var worst time.Duration
	for i := 0; slow() == 0; i++ {
		if i > 20000 {
			t.Fatal("the stuck client was never disconnected")
		}
		for j := range ops {
			ops[j] = hub.Op{Subject: fmt.Sprintf("seller:%d", j), Score: 3e6}
		}
		start := time.Now()
		e.Write(ops...)
		m := healthy.expect(wire.TypeDeltas)
		if len(m.Deltas) != len(ops) {
			t.Fatalf("healthy got %d deltas", len(m.Deltas))
		}
		worst = max(worst, time.Since(start))
	}
	if worst > time.Second {
		t.Errorf("healthy client waited up to %s for a delta", worst)
	}
	stuck.expectClose(api.CloseSlowConsumer, 10*time.Second)
	e.Write(hub.Op{Subject: "seller:1", Score: 3e6})
	healthy.expect(wire.TypeDelta)
	t.Logf("worst healthy latency %s", worst)
}

func TestTokenExpiryAndRefresh(t *testing.T) {
	forCodecs(t, func(t *testing.T, codec wire.Codec) {
		e := apitest.Start(t, api.Config{}, nil)
		// Expires mid-session.
		c := dial(t, e, codec, nil)
		c.send(wire.ClientMessage{Type: wire.TypeHello, Token: apitest.Token(t, 1500*time.Millisecond, "*")})
		c.expect(wire.TypeWelcome)
		start := time.Now()
		c.expectClose(api.CloseUnauthenticated, 5*time.Second)
		if d := time.Since(start); d < 400*time.Millisecond {
			t.Fatalf("closed after %s, before the token expired", d)
		}
		// Refreshed in time: the session outlives the first token.
		c = dial(t, e, codec, bearerHeader(apitest.Token(t, 1500*time.Millisecond, "*")))
		c.expect(wire.TypeWelcome)
		c.send(wire.ClientMessage{Type: wire.TypeHello, Token: apitest.Token(t, time.Hour, "*")})
		// A bad refresh is refused but the session keeps its token.
		c.send(wire.ClientMessage{Type: wire.TypeHello, Token: "garbage"})
		c.expectError(wire.CodeUnauthenticated)
		time.Sleep(2500 * time.Millisecond)
		c.send(wire.ClientMessage{Type: wire.TypePing, ID: 1})
		c.expect(wire.TypePong)
	})
}

func TestShutdownCloses1001(t *testing.T) {
	e := apitest.Start(t, api.Config{}, nil)
	c := connect(t, e, wire.Proto{}, "*")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() { _ = e.Server.Shutdown(ctx) }()
	c.expectClose(api.CloseGoingAway, 5*time.Second)
}

func TestEpochChangeCloses1001(t *testing.T) {
	e := apitest.Start(t, api.Config{}, nil)
	c := connect(t, e, wire.JSON{}, "*")
	e.Server.Hub().Reset(stream.Meta{Epoch: "epoch-2", Checkpoint: 0x10})
	c.expectClose(api.CloseGoingAway, 5*time.Second)
	c = connect(t, e, wire.JSON{}, "*")
	_ = c
}

func TestMetricsRegistered(t *testing.T) {
	e := apitest.Start(t, api.Config{}, nil)
	connect(t, e, wire.JSON{}, "*")
	mfs, err := e.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"repstream_hub_connections": 1, "repstream_api_ws_sessions": 1}
	for _, mf := range mfs {
		if v, ok := want[mf.GetName()]; ok {
			if got := mf.GetMetric()[0].GetGauge().GetValue(); got != v {
				t.Errorf("%s = %v, want %v", mf.GetName(), got, v)
			}
			delete(want, mf.GetName())
		}
	}
	if len(want) > 0 {
		t.Errorf("missing metrics %v", want)
	}
}

// TestDeadPeer: a peer that stops answering pings is dropped.
func TestDeadPeer(t *testing.T) {
	e := apitest.Start(t, api.Config{Heartbeat: 200 * time.Millisecond, PongTimeout: 600 * time.Millisecond}, nil)
	c := connect(t, e, wire.JSON{}, "*") // reads welcome, then never reads again: no pongs
	_ = c
	deadline := time.Now().Add(5 * time.Second)
	for e.Server.Hub().Connections() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("a peer that never answers pings is still connected")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
