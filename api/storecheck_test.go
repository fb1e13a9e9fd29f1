package api_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/repstream/repstream/api"
	"github.com/repstream/repstream/api/apitest"
	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/hub"
)

// blackHole is a store whose reads, while cut, wait for their context's
// end: a database behind a network that drops every packet.
type blackHole struct {
	stream.Log
	cut atomic.Bool
}

func (b *blackHole) wait(ctx context.Context) error {
	if !b.cut.Load() {
		return nil
	}
	<-ctx.Done()
	return ctx.Err()
}

func (b *blackHole) Meta(ctx context.Context) (stream.Meta, error) {
	if err := b.wait(ctx); err != nil {
		return stream.Meta{}, err
	}
	return b.Log.Meta(ctx)
}

func (b *blackHole) StatesAfter(ctx context.Context, sel stream.Selector, after string, limit int) ([]stream.State, stream.LSN, error) {
	if err := b.wait(ctx); err != nil {
		return nil, 0, err
	}
	return b.Log.StatesAfter(ctx, sel, after, limit)
}

func (b *blackHole) States(ctx context.Context, sel stream.Selector, order stream.Order, limit int) ([]stream.State, stream.LSN, error) {
	if err := b.wait(ctx); err != nil {
		return nil, 0, err
	}
	return b.Log.States(ctx, sel, order, limit)
}

func (b *blackHole) Deltas(ctx context.Context, sel stream.Selector, since, upto stream.LSN, limit int) ([]stream.Delta, error) {
	if err := b.wait(ctx); err != nil {
		return nil, err
	}
	return b.Log.Deltas(ctx, sel, since, upto, limit)
}

// TestStoreGone: a node whose store stops answering refuses new streams
// and REST reads with 503 (a load balancer then sends them to another
// node), and a subscribe already on it fails within api.store_timeout and
// closes with 1011, so its client reconnects instead of waiting forever.
// Once the store answers again the node serves again.
func TestStoreGone(t *testing.T) {
	mem := hub.NewMemLog("epoch-1", 0x1000)
	store := &blackHole{Log: mem}
	e := apitest.StartLog(t, api.Config{RingDeltas: -1, StoreTimeout: 300 * time.Millisecond}, nil, store)
	e.Log = mem
	m, _ := mem.Meta(context.Background())
	e.Server.Hub().Reset(m)
	first := e.Write(hub.Op{Subject: "seller:1", Score: 5e6})
	e.Write(hub.Op{Subject: "seller:1", Score: 4e6})

	c := connect(t, e, wire.Codecs()[0], "seller:*")
	store.cut.Store(true)
	c.send(wire.ClientMessage{Type: wire.TypeSubscribe, ID: 7, Prefix: "seller:", Since: first.LSN.String(), HasSince: true})
	c.expectError(wire.CodeInternal)
	c.expectClose(api.CloseInternal, 5*time.Second)

	time.Sleep(1100 * time.Millisecond) // the last answer of the store check stands for a second
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	ws, resp, err := d.Dial(e.URL, bearerHeader(apitest.Token(t, time.Hour, "seller:*")))
	if err == nil {
		ws.Close()
		t.Fatal("a WebSocket upgrade succeeded on a node without its store")
	}
	checkUnavailable(t, "upgrade", resp)
	req, _ := http.NewRequest(http.MethodGet, e.Base+"/v1/subjects?prefix=seller:", nil)
	req.Header = bearerHeader(apitest.Token(t, time.Hour, "seller:*"))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	checkUnavailable(t, "GET /v1/subjects", resp)

	store.cut.Store(false)
	time.Sleep(1100 * time.Millisecond)
	c = connect(t, e, wire.Codecs()[0], "seller:*")
	c.send(wire.ClientMessage{Type: wire.TypeSubscribe, ID: 8, Prefix: "seller:", Since: first.LSN.String(), HasSince: true})
	if sub := c.expect(wire.TypeSubscribed); sub.Mode != "replay" {
		t.Fatalf("after the store came back: %+v, want a replay", sub)
	}
	if got := c.expect(wire.TypeDelta); len(got.Deltas) != 1 || got.Deltas[0].Version != 2 {
		t.Fatalf("after the store came back: %+v, want seller:1's second delta", got)
	}
}

func checkUnavailable(t *testing.T, what string, resp *http.Response) {
	t.Helper()
	if resp == nil {
		t.Fatalf("%s: no HTTP answer", what)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var e struct{ Code, Message string }
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("%s: %d %q: %v", what, resp.StatusCode, body, err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable || e.Code != wire.CodeUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("%s: %d %s (Retry-After %q), want 503 unavailable with Retry-After", what, resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
	t.Logf("%s: %d %s", what, resp.StatusCode, e.Message)
}
