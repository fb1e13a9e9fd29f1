package api

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/hub"
)

func TestJoinDeltas(t *testing.T) {
	for _, c := range wire.Codecs() {
		delta := func(lsn stream.LSN, n int) hub.Frame {
			return hub.Frame{Bytes: c.Delta(&stream.Delta{Subject: fmt.Sprintf("seller:%d", n), LSN: lsn, Version: 1}), DeltaLSN: lsn}
		}
		txn := hub.Frame{Bytes: c.Deltas([][]byte{delta(9, 1).Bytes, delta(9, 2).Bytes})}
		big := hub.Frame{Bytes: c.Delta(&stream.Delta{Subject: string(bytes.Repeat([]byte("x"), maxJoinBytes/2)), LSN: 20}), DeltaLSN: 20}
		fs := []hub.Frame{
			delta(1, 1), delta(2, 2), delta(2, 3), // joined
			{Bytes: c.Tick(2)},        // alone
			delta(5, 1),               // alone: the next is a transaction's frame
			txn,                       // alone
			delta(10, 1), delta(7, 2), // an lsn going back ends the run
			delta(8, 3), big, // the size bound ends the run before the second big one
			big, delta(30, 1), // joined
		}
		var got []wire.ServerMessage
		var spans []int
		for i := 0; i < len(fs); {
			f, j := joinDeltas(c, fs, i)
			if j == i+1 && !bytes.Equal(f, fs[i].Bytes) {
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
		// Frames the hub did not mark as one delta are never joined.
		plain := []hub.Frame{{Bytes: fs[0].Bytes}, {Bytes: fs[1].Bytes}}
		if f, j := joinDeltas(c, plain, 0); j != 1 || !bytes.Equal(f, fs[0].Bytes) {
			t.Fatalf("%s: joined frames without a DeltaLSN", c.Name())
		}
	}
}
