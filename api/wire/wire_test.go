package wire

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/repstream/repstream/stream"
)

func sampleDelta(subject string, lsn stream.LSN, v int64) stream.Delta {
	at := time.Date(2026, 11, 26, 21, 0, 0, 123e6, time.UTC)
	return stream.Delta{Subject: subject, LSN: lsn, Version: v, Coalesced: 1,
		After:  stream.State{Subject: subject, Count: 17, Sum: 71_000_000, Mean: 4.176471, Bayes: 3.93, Hist: []int64{0, 1, 2, 5, 9}, Version: v, LSN: lsn, UpdatedAt: at},
		Change: stream.Change{Count: 1, Sum: 5_000_000, Mean: 0.046, Bayes: 0.06}}
}

// Both codecs pass the same cases.
func forCodecs(t *testing.T, f func(t *testing.T, c Codec)) {
	for _, c := range Codecs() {
		t.Run(c.Name(), func(t *testing.T) { f(t, c) })
	}
}

func TestServerRoundTrip(t *testing.T) {
	d1, d2 := sampleDelta("seller:42", 0x16B3800, 18), sampleDelta("seller:43", 0x16B3800, 3)
	forCodecs(t, func(t *testing.T, c Codec) {
		cases := []struct {
			frame []byte
			want  ServerMessage
		}{
			{c.Welcome("e1", 0x16B3748, 15*time.Second, "repstream/test"), ServerMessage{Type: TypeWelcome, Epoch: "e1", LSN: 0x16B3748, HeartbeatMs: 15000, Server: "repstream/test"}},
			{c.Subscribed(7, 0x10, "replay", false), ServerMessage{Type: TypeSubscribed, ID: 7, LSN: 0x10, Mode: "replay"}},
			{c.Subscribed(8, 0x10, "snapshot", true), ServerMessage{Type: TypeSubscribed, ID: 8, LSN: 0x10, Mode: "snapshot", Reset: true}},
			{c.Snapshot(7, 0x16B3800, []stream.State{d1.After, d2.After}, true), ServerMessage{Type: TypeSnapshot, ID: 7, LSN: 0x16B3800, States: []stream.State{d1.After, d2.After}, More: true}},
			{c.Delta(&d1), ServerMessage{Type: TypeDelta, Deltas: []stream.Delta{d1}}},
			{c.Deltas([][]byte{c.Delta(&d1), c.Delta(&d2)}), ServerMessage{Type: TypeDeltas, Deltas: []stream.Delta{d1, d2}}},
			{c.Tick(0x1_0000_0001), ServerMessage{Type: TypeTick, LSN: 0x1_0000_0001}},
			{c.Pong(9), ServerMessage{Type: TypePong, ID: 9}},
			{c.Error(7, CodeForbidden, "no"), ServerMessage{Type: TypeError, ID: 7, Code: CodeForbidden, Message: "no"}},
			{c.Unsubscribed(8), ServerMessage{Type: TypeUnsubscribed, ID: 8}},
		}
		for _, tc := range cases {
			got, err := c.DecodeServer(tc.frame)
			if err != nil {
				t.Fatalf("%s: %v", tc.want.Type, err)
			}
			if got.Type == TypeSnapshot && len(got.States) == 0 {
				got.States = nil
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("%s:\n got %+v\nwant %+v", tc.want.Type, got, tc.want)
			}
		}
	})
}

func TestJSONDeltaFrameIsProtocolForm(t *testing.T) {
	d := sampleDelta("seller:42", 0x16B3800, 18)
	got := string(JSON{}.Delta(&d))
	want := `{"type":"delta","subject":"seller:42","lsn":"0/16B3800","version":18,"after":{"subject":"seller:42","count":17,"sum":71,"mean":4.176471,"bayes":3.93,"hist":[0,1,2,5,9],"version":18,"lsn":"0/16B3800","updated_at":"2026-11-26T21:00:00.123Z"},"change":{"count":1,"sum":5,"mean":0.046,"bayes":0.06},"coalesced":1}`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

func TestClientRoundTrip(t *testing.T) {
	forCodecs(t, func(t *testing.T, c Codec) {
		for _, m := range []ClientMessage{
			{Type: TypeHello, Token: "abc"},
			{Type: TypeSubscribe, ID: 7, Subjects: []string{"seller:42", "seller:43"}, Since: "0/16B3748", HasSince: true, ThrottleMs: 250},
			{Type: TypeSubscribe, ID: 8, Prefix: "seller:", Epoch: "e1"},
			{Type: TypeSubscribe, ID: 9, Prefix: "seller:", Since: "", HasSince: true},
			{Type: TypeUnsubscribe, ID: 10, Subjects: []string{"seller:42"}},
			{Type: TypePing, ID: 11},
		} {
			b, err := c.EncodeClient(m)
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.DecodeClient(b)
			if err != nil {
				t.Fatalf("%+v: %v", m, err)
			}
			if !reflect.DeepEqual(got, m) {
				t.Errorf("got %+v want %+v", got, m)
			}
		}
	})
}

func TestDecodeClientErrors(t *testing.T) {
	type kind int
	const (
		malformed kind = iota
		request
	)
	jsonCases := []struct {
		in   string
		want kind
	}{
		{"not json", malformed},
		{"", malformed},
		{"[1,2]", malformed},
		{`{"type":"subscribe"`, malformed},
		{`{"type":"frobnicate","id":3}`, request},
		{`{"id":3}`, request},
		{`{"type":"subscribe","id":4}`, request},
		{`{"type":"subscribe","id":4,"subjects":["a"],"prefix":"b"}`, request},
		{`{"type":"subscribe","id":4,"subjects":5}`, request},
		{`{"type":"hello"}`, request},
		{`{"type":"subscribe","id":4,"prefix":"a","throttle_ms":-1}`, request},
	}
	for _, tc := range jsonCases {
		_, err := JSON{}.DecodeClient([]byte(tc.in))
		var re *RequestError
		switch {
		case tc.want == malformed && !errors.Is(err, ErrMalformed):
			t.Errorf("%q: want ErrMalformed, got %v", tc.in, err)
		case tc.want == request && !errors.As(err, &re):
			t.Errorf("%q: want RequestError, got %v", tc.in, err)
		}
	}
	if _, err := (Proto{}).DecodeClient([]byte{0xff, 0xff, 0xff}); !errors.Is(err, ErrMalformed) {
		t.Errorf("proto garbage: %v", err)
	}
	var re *RequestError
	if _, err := (Proto{}).DecodeClient(nil); !errors.As(err, &re) {
		t.Errorf("proto empty message: want RequestError, got %v", err)
	}
	if _, err := (Proto{}).DecodeClient([]byte{0x50, 0x01}); !errors.As(err, &re) { // field 10 varint: unknown
		t.Errorf("proto unknown field: want RequestError, got %v", err)
	}
}

// Both codecs carry every figure at full float64 precision: a JSON client
// and a protobuf client decode the same deltas and snapshots to identical
// values, equal to what the server holds (JSON in shortest round-trip form).
func TestCodecsCarryIdenticalFloats(t *testing.T) {
	figures := []float64{71.0 / 17, 2.0 / 3, 1.0 / 7, 3.5 + 1e-9, 4.1234567891, -0.046153846153846156,
		1e-7, 123456.78901234567, 5e-324, 0.1 + 0.2}
	var ds []stream.Delta
	var states []stream.State
	for i, f := range figures {
		d := sampleDelta("seller:"+string(rune('a'+i)), stream.LSN(0x100+i), int64(i+1))
		d.After.Mean, d.After.Bayes = f, f/3
		d.Change.Mean, d.Change.Bayes = -f/11, f/13
		ds = append(ds, d)
		states = append(states, d.After)
	}
	decoded := map[string][]stream.Delta{}
	decodedStates := map[string][]stream.State{}
	forCodecs(t, func(t *testing.T, c Codec) {
		var frames [][]byte
		for i := range ds {
			frames = append(frames, c.Delta(&ds[i]))
		}
		m, err := c.DecodeServer(c.Deltas(frames))
		if err != nil {
			t.Fatal(err)
		}
		s, err := c.DecodeServer(c.Snapshot(1, 0x200, states, false))
		if err != nil {
			t.Fatal(err)
		}
		for i, d := range m.Deltas {
			w := ds[i]
			if d.After.Mean != w.After.Mean || d.After.Bayes != w.After.Bayes || d.Change.Mean != w.Change.Mean || d.Change.Bayes != w.Change.Bayes {
				t.Errorf("delta %d: got after %v/%v change %v/%v; want %v/%v %v/%v", i, d.After.Mean, d.After.Bayes,
					d.Change.Mean, d.Change.Bayes, w.After.Mean, w.After.Bayes, w.Change.Mean, w.Change.Bayes)
			}
			if st := s.States[i]; st.Mean != w.After.Mean || st.Bayes != w.After.Bayes {
				t.Errorf("snapshot state %d: got %v/%v; want %v/%v", i, st.Mean, st.Bayes, w.After.Mean, w.After.Bayes)
			}
		}
		decoded[c.Name()], decodedStates[c.Name()] = m.Deltas, s.States
	})
	if !reflect.DeepEqual(decoded[SubprotocolJSON], decoded[SubprotocolProto]) {
		t.Errorf("the codecs decode different deltas:\n json %+v\nproto %+v", decoded[SubprotocolJSON], decoded[SubprotocolProto])
	}
	if !reflect.DeepEqual(decodedStates[SubprotocolJSON], decodedStates[SubprotocolProto]) {
		t.Errorf("the codecs decode different states:\n json %+v\nproto %+v", decodedStates[SubprotocolJSON], decodedStates[SubprotocolProto])
	}
}
