package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gorilla/websocket"

	"github.com/repstream/repstream/api"
	"github.com/repstream/repstream/api/apitest"
	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/hub"
)

// rawFrame writes one masked client frame straight onto c's socket,
// bypassing the client library, which would refuse to write a bad one.
func (c *wsClient) rawFrame(f ws.Frame, mask bool) {
	c.t.Helper()
	if mask {
		f = ws.MaskFrame(f)
	}
	if err := ws.WriteFrame(c.ws.NetConn(), f); err != nil {
		c.t.Fatal(err)
	}
}

// TestFragmentedMessage: a message sent in three fragments, with a ping
// between them (control frames may interleave, RFC 6455 5.4), is one
// message; and a burst of messages in one write is handled in order.
func TestFragmentedMessage(t *testing.T) {
	e := apitest.Start(t, api.Config{}, nil)
	c := connect(t, e, wire.JSON{}, "*")
	pong := make(chan string, 1)
	c.ws.SetPongHandler(func(s string) error { pong <- s; return nil })
	msg := []byte(`{"type":"ping","id":42}`)
	c.rawFrame(ws.NewFrame(ws.OpText, false, msg[:5]), true)
	c.rawFrame(ws.NewFrame(ws.OpContinuation, false, msg[5:12]), true)
	c.rawFrame(ws.NewPingFrame([]byte("mid")), true)
	c.rawFrame(ws.NewFrame(ws.OpContinuation, true, msg[12:]), true)
	if m := c.expect(wire.TypePong); m.ID != 42 {
		t.Fatalf("pong for id %d, want 42", m.ID)
	}
	select {
	case s := <-pong:
		if s != "mid" {
			t.Fatalf("control pong %q, want mid", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no pong for the ping between fragments")
	}

	var burst []byte
	for id := 1; id <= 50; id++ {
		b, _ := ws.CompileFrame(ws.MaskFrame(ws.NewTextFrame([]byte(`{"type":"ping","id":` + itoa(id) + `}`))))
		burst = append(burst, b...)
	}
	if _, err := c.ws.NetConn().Write(burst); err != nil {
		t.Fatal(err)
	}
	for id := 1; id <= 50; id++ {
		if m := c.expect(wire.TypePong); m.ID != int64(id) {
			t.Fatalf("pong %d, want %d", m.ID, id)
		}
	}
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

// TestProtocolErrors: frames that break RFC 6455 close the connection with
// 1002 and leave the server serving others.
func TestProtocolErrors(t *testing.T) {
	e := apitest.Start(t, api.Config{}, nil)
	for _, tc := range []struct {
		name  string
		frame ws.Frame
		mask  bool
	}{
		{"unmasked", ws.NewTextFrame([]byte(`{"type":"ping","id":1}`)), false},
		{"continuation without a start", ws.NewFrame(ws.OpContinuation, true, []byte("x")), true},
		{"reserved opcode", ws.NewFrame(ws.OpCode(0x3), true, []byte("x")), true},
		{"control frame over 125 bytes", ws.NewPingFrame([]byte(strings.Repeat("p", 126))), true},
		{"fragmented control frame", ws.NewFrame(ws.OpPing, false, nil), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := connect(t, e, wire.JSON{}, "*")
			c.rawFrame(tc.frame, tc.mask)
			c.expectClose(api.CloseProtocolError, 5*time.Second)
		})
	}
	c := connect(t, e, wire.JSON{}, "*")
	c.send(wire.ClientMessage{Type: wire.TypePing, ID: 7})
	c.expect(wire.TypePong)
}

// TestClientCloseEchoed: a client's close is answered with its code, and
// the session ends.
func TestClientCloseEchoed(t *testing.T) {
	e := apitest.Start(t, api.Config{}, nil)
	c := connect(t, e, wire.JSON{}, "*")
	got := make(chan int, 1)
	c.ws.SetCloseHandler(func(code int, _ string) error { got <- code; return nil })
	if err := c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4321, "bye"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.read(5 * time.Second); err == nil {
		t.Fatal("a message after close")
	}
	select {
	case code := <-got:
		if code != 4321 {
			t.Fatalf("close answered with %d, want 4321", code)
		}
	default:
		t.Fatal("close not answered")
	}
	waitConnections(t, e, 0)
}

func waitConnections(t *testing.T, e *apitest.Env, n int) {
	t.Helper()
	waitCount(t, "connections", e.Server.Hub().Connections, n)
}

func waitSubscriptions(t *testing.T, e *apitest.Env, n int) {
	t.Helper()
	waitCount(t, "subscriptions", e.Server.Hub().Subscriptions, n)
}

// waitCount polls count for up to 5 s until it returns want.
func waitCount(t *testing.T, what string, count func() int, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for count() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%d %s, want %d", count(), what, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestUnfinishedFrame: a client that sends half a frame and stops is
// dropped after PongTimeout, as a silent one is.
func TestUnfinishedFrame(t *testing.T) {
	e := apitest.Start(t, api.Config{Heartbeat: 200 * time.Millisecond, PongTimeout: 600 * time.Millisecond}, nil)
	c := connect(t, e, wire.JSON{}, "*")
	b, _ := ws.CompileFrame(ws.MaskFrame(ws.NewTextFrame([]byte(`{"type":"ping","id":1}`))))
	if _, err := c.ws.NetConn().Write(b[:8]); err != nil {
		t.Fatal(err)
	}
	waitConnections(t, e, 0)
}

// TestNotAnUpgrade: a plain GET of the stream gets the API's error format;
// a client that sends before the handshake's answer is refused with 1002.
func TestNotAnUpgrade(t *testing.T) {
	e := apitest.Start(t, api.Config{}, nil)
	resp, err := http.Get(strings.Replace(e.URL, "ws://", "http://", 1))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var m struct{ Code, Message string }
	if resp.StatusCode != http.StatusBadRequest || json.Unmarshal(body, &m) != nil || m.Code != wire.CodeBadRequest {
		t.Fatalf("plain GET: %d %s", resp.StatusCode, body)
	}

	u := strings.TrimPrefix(e.URL, "ws://")
	host, path, _ := strings.Cut(u, "/")
	nc, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	early, _ := ws.CompileFrame(ws.MaskFrame(ws.NewTextFrame([]byte(`{"type":"ping","id":1}`))))
	req := "GET /" + path + " HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" +
		"Authorization: Bearer " + apitest.Token(t, time.Hour, "*") + "\r\n\r\n"
	if _, err := nc.Write(append([]byte(req), early...)); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(nc)
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake answered %d", resp.StatusCode)
	}
	f, err := ws.ReadFrame(br)
	if err != nil {
		t.Fatal(err)
	}
	code, _ := ws.ParseCloseFrameData(f.Payload)
	if f.Header.OpCode != ws.OpClose || code != api.CloseProtocolError {
		t.Fatalf("frame %v code %d, want close 1002", f.Header.OpCode, code)
	}
	var ne net.Error
	if _, err := ws.ReadFrame(br); err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("after the close: %v, want the connection closed", err)
	}
}

// TestIdlePeersVanish: idle sessions whose clients go away without a close
// frame (a FIN, or a reset) end at once: the hangup wakes their socket in
// the poller.
func TestIdlePeersVanish(t *testing.T) {
	e := apitest.Start(t, api.Config{}, nil)
	var conns []*wsClient
	for range 40 {
		c := connect(t, e, wire.JSON{}, "*")
		c.send(wire.ClientMessage{Type: wire.TypeSubscribe, ID: 1, Prefix: "seller:"})
		c.expect(wire.TypeSubscribed)
		c.expect(wire.TypeSnapshot)
		conns = append(conns, c)
	}
	waitConnections(t, e, 40)
	for i, c := range conns {
		nc := c.ws.NetConn().(*net.TCPConn)
		if i%2 == 0 {
			_ = nc.SetLinger(0) // close sends a reset
		}
		nc.Close()
	}
	waitConnections(t, e, 0) // well before pong_timeout (35 s by default)
	if n := e.Server.Hub().Subscriptions(); n != 0 {
		t.Fatalf("%d subscriptions left", n)
	}
}

// gatedLog holds snapshots of the subject "slow:1" until open is closed or
// the caller gives up.
type gatedLog struct {
	*hub.MemLog
	open chan struct{}
}

func (g gatedLog) States(ctx context.Context, sel stream.Selector, order stream.Order, limit int) ([]stream.State, stream.LSN, error) {
	if slices.Contains(sel.Subjects, "slow:1") {
		select {
		case <-g.open:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
	return g.MemLog.States(ctx, sel, order, limit)
}

// TestSubscribeWorkersBound: with one subscribe worker, a subscribe stuck
// on the store holds the others in line, in order; a client that leaves
// while in line is let go at once, and its request never runs.
func TestSubscribeWorkersBound(t *testing.T) {
	log := hub.NewMemLog("epoch-1", 0x1000)
	g := gatedLog{MemLog: log, open: make(chan struct{})}
	e := apitest.StartLog(t, api.Config{SubscribeWorkers: 1}, nil, g)
	m, _ := log.Meta(context.Background())
	e.Server.Hub().Reset(m)
	subscribe := func(subject string) *wsClient {
		c := connect(t, e, wire.JSON{}, "*")
		c.send(wire.ClientMessage{Type: wire.TypeSubscribe, ID: 1, Subjects: []string{subject}})
		return c
	}
	slow := subscribe("slow:1") // takes the one worker and waits on the store
	waitSubscriptions(t, e, 1)
	next := subscribe("seller:1")
	gone := subscribe("seller:2")
	time.Sleep(200 * time.Millisecond)
	if n := e.Server.Hub().Subscriptions(); n != 1 {
		t.Fatalf("%d subscriptions while the worker is stuck, want 1: the worker bound does not hold", n)
	}
	gone.ws.NetConn().Close()
	waitConnections(t, e, 2) // it ended while the worker was still stuck
	close(g.open)
	slow.expect(wire.TypeSubscribed)
	next.expect(wire.TypeSubscribed)
	next.expect(wire.TypeSnapshot)
	time.Sleep(100 * time.Millisecond)
	if n := e.Server.Hub().Subscriptions(); n != 2 {
		t.Fatalf("%d subscriptions, want 2: the request of the client that left must not run", n)
	}
}

// TestFragmentsOverLimit: max_frame_bytes bounds a message, not each of its
// fragments.
func TestFragmentsOverLimit(t *testing.T) {
	e := apitest.Start(t, api.Config{MaxFrameBytes: 4096}, nil)
	c := connect(t, e, wire.JSON{}, "*")
	part := []byte(strings.Repeat("x", 3000))
	c.rawFrame(ws.NewFrame(ws.OpText, false, part), true)
	c.rawFrame(ws.NewFrame(ws.OpContinuation, true, part), true)
	c.expectClose(api.CloseTooBig, 5*time.Second)
}

// TestCloseUnanswered: a peer that never answers the server's close (it
// reads nothing more) is dropped after the close grace, not kept until
// pong_timeout.
func TestCloseUnanswered(t *testing.T) {
	e := apitest.Start(t, api.Config{}, nil)
	c := connect(t, e, wire.JSON{}, "*")
	c.rawFrame(ws.NewTextFrame([]byte("not a message")), true) // closed with 4000
	start := time.Now()
	waitConnections(t, e, 0)
	if d := time.Since(start); d < 500*time.Millisecond {
		t.Fatalf("dropped after %s: the peer had no time to answer the close", d)
	}
}

func (g gatedLog) StatesAfter(ctx context.Context, sel stream.Selector, after string, limit int) ([]stream.State, stream.LSN, error) {
	if slices.Contains(sel.Subjects, "slow:1") {
		select {
		case <-g.open:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
	return g.MemLog.StatesAfter(ctx, sel, after, limit)
}
