package wire

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/repstream/repstream/stream"
)

// FuzzDecodeClient feeds untrusted frames to both codecs' client decoders:
// they never panic, fail only with ErrMalformed or *RequestError, and what
// they accept survives a round trip.
func FuzzDecodeClient(f *testing.F) {
	for _, c := range Codecs() {
		for _, m := range []ClientMessage{
			{Type: TypeHello, Token: "eyJhbGciOiJIUzI1NiJ9.e30.sig"},
			{Type: TypeSubscribe, ID: 7, Subjects: []string{"seller:42"}, Since: "0/16B3748", HasSince: true, ThrottleMs: 100},
			{Type: TypeSubscribe, ID: 8, Prefix: "seller:"},
			{Type: TypeUnsubscribe, ID: 9, Prefix: "seller:"},
			{Type: TypePing, ID: 10},
		} {
			b, _ := c.EncodeClient(m)
			f.Add(b)
		}
	}
	f.Add([]byte(`{"type":"subscribe","id":1e400}`))
	f.Add([]byte(`{"type":"x"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, c := range Codecs() {
			m, err := c.DecodeClient(b)
			var re *RequestError
			if err != nil {
				if !errors.Is(err, ErrMalformed) && !errors.As(err, &re) {
					t.Fatalf("%s: unexpected error type %T: %v", c.Name(), err, err)
				}
				continue
			}
			enc, err := c.EncodeClient(m)
			if err != nil {
				t.Fatalf("%s: re-encode %+v: %v", c.Name(), m, err)
			}
			m2, err := c.DecodeClient(enc)
			if err != nil {
				t.Fatalf("%s: decode re-encoded: %v", c.Name(), err)
			}
			if len(m.Subjects) == 0 {
				m.Subjects, m2.Subjects = nil, nil
			}
			if !reflect.DeepEqual(m, m2) {
				t.Fatalf("%s: round trip\n got %+v\nwant %+v", c.Name(), m2, m)
			}
		}
	})
}

// FuzzDecodeServer feeds untrusted frames to both codecs' server-message
// decoders (the Go client's input): they never panic.
func FuzzDecodeServer(f *testing.F) {
	d := stream.Delta{Subject: "seller:1", LSN: 0x10, Version: 2, After: stream.State{Subject: "seller:1", LSN: 0x10, Version: 2, UpdatedAt: time.Unix(1, 0)}}
	for _, c := range Codecs() {
		f.Add(c.Welcome("e", 1, time.Second, "s"))
		f.Add(c.Delta(&d))
		f.Add(c.Deltas([][]byte{c.Delta(&d), c.Delta(&d)}))
		f.Add(c.Snapshot(1, 2, []stream.State{d.After}, false))
		f.Add(c.Error(1, CodeBadCursor, "x"))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, c := range Codecs() {
			if _, err := c.DecodeServer(b); err != nil && !errors.Is(err, ErrMalformed) {
				t.Fatalf("%s: unexpected error type %T: %v", c.Name(), err, err)
			}
		}
	})
}
