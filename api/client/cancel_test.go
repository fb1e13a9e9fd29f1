package client_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/repstream/repstream/api/client"
	"github.com/repstream/repstream/api/wire"
)

// Run returns once its context ends even while the server keeps sending:
// the end of the context must not be undone by the read deadline set for
// the next frame (a busy stream kept a canceled client reading forever).
func TestRunEndsWhileFramesKeepComing(t *testing.T) {
	stop := make(chan struct{})
	var served sync.WaitGroup
	up := websocket.Upgrader{Subprotocols: []string{wire.SubprotocolJSON}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		defer served.Done()
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"welcome","epoch":"E","lsn":"0/900","heartbeat_ms":15000}`))
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"tick","lsn":"0/900"}`)); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	defer served.Wait()
	defer close(stop)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var once sync.Once
	c, err := client.New(client.Options{URL: "ws" + strings.TrimPrefix(srv.URL, "http"), Handler: nopHandler{}, Prefix: "seller:",
		// The context ends between two frames, and the client's own
		// reaction to it runs before the loop reads on.
		Trace: func(m wire.ServerMessage) {
			if m.Type == wire.TypeTick {
				once.Do(func() { cancel(); time.Sleep(100 * time.Millisecond) })
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(20 * time.Second): // frames every 1 ms: without the fix it never returns
		t.Fatal("Run still reading 20 s after its context ended, while the server kept sending")
	}
}
