package api_test

import (
	"testing"
	"time"

	"github.com/repstream/repstream/api"
	"github.com/repstream/repstream/api/apitest"
	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/stream/hub"
)

// A hello refresh with a narrower token stops every subscription the new
// token no longer covers, each answered with error forbidden for its id;
// the covered ones keep streaming.
func TestRefreshNarrowsSubscriptions(t *testing.T) {
	forCodecs(t, func(t *testing.T, codec wire.Codec) {
		e := apitest.Start(t, api.Config{}, nil)
		c := connect(t, e, codec, "*")
		c.send(wire.ClientMessage{Type: wire.TypeSubscribe, ID: 1, Prefix: "seller:"})
		c.expect(wire.TypeSubscribed)
		c.expect(wire.TypeSnapshot)
		c.send(wire.ClientMessage{Type: wire.TypeSubscribe, ID: 2, Subjects: []string{"buyer:1", "seller:9"}})
		c.expect(wire.TypeSubscribed)
		c.expect(wire.TypeSnapshot)
		c.send(wire.ClientMessage{Type: wire.TypeSubscribe, ID: 3, Prefix: "buyer:"})
		c.expect(wire.TypeSubscribed)
		c.expect(wire.TypeSnapshot)
		c.send(wire.ClientMessage{Type: wire.TypeHello, Token: apitest.Token(t, time.Hour, "seller:*")})
		lost := map[int64]bool{}
		for range 2 {
			m := c.expect(wire.TypeError)
			if m.Code != wire.CodeForbidden {
				t.Fatalf("error %+v; want forbidden", m)
			}
			lost[m.ID] = true
		}
		if !lost[2] || !lost[3] {
			t.Fatalf("forbidden for %v; want ids 2 and 3", lost)
		}
		e.Write(hub.Op{Subject: "buyer:1", Score: 1e6})
		e.Write(hub.Op{Subject: "seller:1", Score: 5e6})
		m := c.next()
		if len(m.Deltas) != 1 || m.Deltas[0].Subject != "seller:1" {
			t.Fatalf("after the refresh got %+v; want only seller:1's delta", m)
		}
		if n := e.Server.Hub().Subscriptions(); n != 1 {
			t.Fatalf("%d subscriptions left; want 1", n)
		}
		// A subscribe the new token does not cover is refused.
		c.send(wire.ClientMessage{Type: wire.TypeSubscribe, ID: 4, Subjects: []string{"buyer:1"}})
		c.expectError(wire.CodeForbidden)
	})
}
