package api_test

import (
	"net/http"
	"testing"
	"time"

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
