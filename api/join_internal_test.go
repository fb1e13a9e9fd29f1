package api

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/stream"
)

func TestDeltaLSN(t *testing.T) {
	for _, c := range wire.Codecs() {
		lsnOf := deltaLSNFunc(c)
		for _, subject := range []string{"seller:1", `we"ird\subject"lsn":"1/2`, "ü", ""} {
			for _, lsn := range []stream.LSN{0, 0x16B3748, 0xFFFFFFFF_FFFFFFFF, 0xA_0000000B} {
				d := stream.Delta{Subject: subject, LSN: lsn, Version: 3, After: stream.State{Subject: subject, LSN: lsn}}
				got, ok := lsnOf(c.Delta(&d))
				if !ok || got != lsn {
					t.Errorf("%s %q: lsn %s %v, want %s", c.Name(), subject, got, ok, lsn)
				}
			}
		}
		d := stream.Delta{Subject: "s", LSN: 5}
		for name, f := range map[string][]byte{
			"deltas":     c.Deltas([][]byte{c.Delta(&d), c.Delta(&d)}),
			"tick":       c.Tick(5),
			"subscribed": c.Subscribed(1, 5, "replay", false),
			"snapshot":   c.Snapshot(1, 5, []stream.State{{Subject: "s", LSN: 5}}, false),
			"pong":       c.Pong(1),
			"empty":      nil,
			"truncated":  c.Delta(&d)[:7],
		} {
			if _, ok := lsnOf(f); ok {
				t.Errorf("%s: %s frame taken for a delta", c.Name(), name)
			}
		}
	}
}

func TestJoinDeltas(t *testing.T) {
	for _, c := range wire.Codecs() {
		lsnOf := deltaLSNFunc(c)
		delta := func(lsn stream.LSN, n int) []byte {
			return c.Delta(&stream.Delta{Subject: fmt.Sprintf("seller:%d", n), LSN: lsn, Version: 1})
		}
		txn := c.Deltas([][]byte{delta(9, 1), delta(9, 2)})
		big := c.Delta(&stream.Delta{Subject: string(bytes.Repeat([]byte("x"), maxJoinBytes/2)), LSN: 20})
		fs := [][]byte{
			delta(1, 1), delta(2, 2), delta(2, 3), // joined
			c.Tick(2),                 // alone
			delta(5, 1),               // alone: the next is a transaction's frame
			txn,                       // alone
			delta(10, 1), delta(7, 2), // an lsn going back ends the run
			delta(8, 3), big, // the size bound ends the run before the second big one
			big, delta(30, 1), // joined
		}
		var got []wire.ServerMessage
		var spans []int
		for i := 0; i < len(fs); {
			f, j := joinDeltas(c, lsnOf, fs, i)
			if j == i+1 && !bytes.Equal(f, fs[i]) {
				t.Fatalf("%s: frame %d rewritten alone", c.Name(), i)
			}
			m, err := c.DecodeServer(f)
			if err != nil {
				t.Fatalf("%s: %v", c.Name(), err)
			}
			got = append(got, m)
			spans = append(spans, j-i)
			i = j
		}
		want := []int{3, 1, 1, 1, 1, 3, 2}
		if fmt.Sprint(spans) != fmt.Sprint(want) {
			t.Fatalf("%s: runs %v, want %v", c.Name(), spans, want)
		}
		if m := got[0]; m.Type != wire.TypeDeltas || len(m.Deltas) != 3 || m.Deltas[0].LSN != 1 || m.Deltas[2].Subject != "seller:3" {
			t.Fatalf("%s: %+v", c.Name(), m)
		}
		if m := got[5]; m.Type != wire.TypeDeltas || len(m.Deltas) != 3 || m.Deltas[1].LSN != 8 || m.Deltas[2].LSN != 20 {
			t.Fatalf("%s: %+v", c.Name(), m)
		}
		if f, j := joinDeltas(c, nil, fs, 0); j != 1 || !bytes.Equal(f, fs[0]) {
			t.Fatalf("%s: joined without an lsn reader", c.Name())
		}
	}
}
