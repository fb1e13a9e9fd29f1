package wire_test

import (
	"bytes"
	"testing"

	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/stream"
)

// A board frame round-trips in both codecs; in JSON each entry carries its
// rank and a move off or onto the board is null.
func TestBoardFrame(t *testing.T) {
	entries := []stream.State{{Subject: "seller:2", Count: 3, Sum: 12 * stream.MicroUnit, Mean: 4, Bayes: 3.7, Version: 3, LSN: 0x20},
		{Subject: "seller:1", Count: 1, Sum: 5 * stream.MicroUnit, Mean: 5, Bayes: 3.6, Version: 1, LSN: 0x10}}
	moves := []stream.Move{{Subject: "seller:2", From: 0, To: 1}, {Subject: "seller:1", From: 1, To: 2}, {Subject: "seller:9", From: 2, To: 0}}
	for _, c := range wire.Codecs() {
		b := c.Board(7, 0x20, "bayes", entries, moves)
		m, err := c.DecodeServer(b)
		if err != nil {
			t.Fatalf("%s: %v", c.Name(), err)
		}
		if m.Type != wire.TypeBoard || m.ID != 7 || m.LSN != 0x20 || m.Order != "bayes" || len(m.States) != 2 || len(m.Moves) != 3 {
			t.Fatalf("%s: %+v", c.Name(), m)
		}
		for i := range entries {
			g, w := m.States[i], entries[i]
			if g.Subject != w.Subject || g.Count != w.Count || g.Sum != w.Sum || g.Bayes != w.Bayes || g.Version != w.Version || g.LSN != w.LSN {
				t.Fatalf("%s: entry %d %+v; want %+v", c.Name(), i, g, w)
			}
		}
		for i := range moves {
			if m.Moves[i] != moves[i] {
				t.Fatalf("%s: move %d %+v; want %+v", c.Name(), i, m.Moves[i], moves[i])
			}
		}
	}
	b := wire.JSON{}.Board(7, 0x20, "bayes", entries, moves)
	for _, want := range []string{`"entries":[{"rank":1,"subject":"seller:2"`, `{"rank":2,"subject":"seller:1"`,
		`{"subject":"seller:2","from":null,"to":1}`, `{"subject":"seller:9","from":2,"to":null}`} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("JSON board %s lacks %s", b, want)
		}
	}
	if b := (wire.JSON{}).Board(1, 0, "count", nil, nil); !bytes.Contains(b, []byte(`"entries":[],"moves":[]`)) {
		t.Errorf("empty board %s; want empty arrays", b)
	}
}

// A subscribe's top and order travel in both codecs; a leaderboard without
// a prefix is a bad request.
func TestSubscribeTop(t *testing.T) {
	for _, c := range wire.Codecs() {
		b, err := c.EncodeClient(wire.ClientMessage{Type: wire.TypeSubscribe, ID: 3, Prefix: "seller:", Top: 10, Order: "mean"})
		if err != nil {
			t.Fatal(err)
		}
		m, err := c.DecodeClient(b)
		if err != nil || m.Top != 10 || m.Order != "mean" || m.Prefix != "seller:" {
			t.Fatalf("%s: %+v %v", c.Name(), m, err)
		}
		b, _ = c.EncodeClient(wire.ClientMessage{Type: wire.TypeSubscribe, ID: 3, Subjects: []string{"a"}, Top: 10})
		if _, err := c.DecodeClient(b); err == nil {
			t.Fatalf("%s: a leaderboard of subjects was accepted", c.Name())
		}
	}
}
