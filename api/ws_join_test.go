package api_test

import (
	"testing"

	"github.com/repstream/repstream/api"
	"github.com/repstream/repstream/api/apitest"
	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/hub"
)

// TestDeltaFramesJoined: transactions published faster than the client
// reads may reach it joined into "deltas" frames; every delta still
// arrives once, in LSN order, and no transaction is split across frames.
func TestDeltaFramesJoined(t *testing.T) {
	forCodecs(t, func(t *testing.T, codec wire.Codec) {
		e := apitest.Start(t, api.Config{}, nil)
		c := connect(t, e, codec, "*")
		c.send(wire.ClientMessage{Type: wire.TypeSubscribe, ID: 1, Prefix: "seller:"})
		c.expect(wire.TypeSubscribed)
		c.expect(wire.TypeSnapshot)
		want := 0
		const txns = 2000
		for range txns {
			var ops []hub.Op
			for _, op := range hub.RandomOps(50) {
				if len(op.Subject) > 7 && op.Subject[:7] == "seller:" {
					ops = append(ops, op)
				}
			}
			if len(ops) > 0 {
				want += len(e.Write(ops...).Deltas)
			}
		}
		frameOf := map[stream.LSN]int{}
		var last stream.LSN
		got, frames := 0, 0
		for got < want {
			m := c.next()
			if m.Type != wire.TypeDelta && m.Type != wire.TypeDeltas {
				continue // a tick
			}
			frames++
			for _, d := range m.Deltas {
				if d.LSN < last {
					t.Fatalf("delta at %s after %s", d.LSN, last)
				}
				if f, ok := frameOf[d.LSN]; ok && f != frames {
					t.Fatalf("the transaction at %s arrived in frames %d and %d", d.LSN, f, frames)
				}
				frameOf[d.LSN], last = frames, d.LSN
				got++
			}
		}
		if got != want {
			t.Fatalf("%d deltas arrived, %d published", got, want)
		}
		t.Logf("%d deltas of %d transactions in %d frames", got, len(frameOf), frames)
	})
}
