package client_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/repstream/repstream/api/client"
	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/stream"
)

type nopHandler struct{}

func (nopHandler) Reset(string)       {}
func (nopHandler) State(stream.State) {}
func (nopHandler) Delta(stream.Delta) {}

// A `since` the user gives without an epoch is sent without one: the client
// does not vouch for it with the server's epoch. One given with an epoch
// keeps it.
func TestUserSinceNotLabelledWithServerEpoch(t *testing.T) {
	for _, tc := range []struct{ epoch, want string }{{"", ""}, {"E-server", "E-server"}} {
		subs := make(chan map[string]any, 1)
		up := websocket.Upgrader{Subprotocols: []string{wire.SubprotocolJSON}}
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ws, err := up.Upgrade(w, r, nil)
			if err != nil {
				return
			}
			defer ws.Close()
			_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"welcome","epoch":"E-server","lsn":"0/900","heartbeat_ms":15000}`))
			for {
				_, b, err := ws.ReadMessage()
				if err != nil {
					return
				}
				var m map[string]any
				_ = json.Unmarshal(b, &m)
				if m["type"] == "subscribe" {
					subs <- m
					return
				}
			}
		}))
		c, err := client.New(client.Options{URL: "ws" + strings.TrimPrefix(srv.URL, "http"), Handler: nopHandler{},
			Prefix: "seller:", Since: 0x500, Epoch: tc.epoch})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = c.Run(ctx) }()
		select {
		case m := <-subs:
			got, _ := m["epoch"].(string)
			if m["since"] != "0/500" || got != tc.want {
				t.Errorf("epoch %q: subscribe %v; want since 0/500 and epoch %q", tc.epoch, m, tc.want)
			}
		case <-time.After(5 * time.Second):
			t.Error("no subscribe")
		}
		cancel()
		<-done
		srv.Close()
	}
}
