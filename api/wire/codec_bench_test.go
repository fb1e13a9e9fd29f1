package wire_test

import (
	"testing"
	"time"

	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/stream"
)

func benchDelta() stream.Delta {
	at := time.Date(2026, 11, 26, 21, 0, 0, 123456000, time.UTC)
	after := stream.State{Subject: "seller:42", Count: 18, Sum: 76_000000, Mean: 4.222222, Bayes: 3.857143,
		Hist: []int64{0, 1, 2, 5, 10}, Version: 18, LSN: 0x16B3800, UpdatedAt: at}
	return stream.Delta{Subject: "seller:42", LSN: 0x16B3800, Version: 18, After: after,
		Change: stream.Change{Count: 1, Sum: 5_000000, Mean: 0.045752, Bayes: 0.064286}, Coalesced: 1}
}

// BenchmarkEncodeDelta encodes one delta frame per codec; the bytes/delta
// metric is the frame size.
func BenchmarkEncodeDelta(b *testing.B) {
	d := benchDelta()
	for _, c := range wire.Codecs() {
		b.Run(c.Name(), func(b *testing.B) {
			b.ReportAllocs()
			b.ReportMetric(float64(len(c.Delta(&d))), "bytes/delta")
			for b.Loop() {
				_ = c.Delta(&d)
			}
		})
	}
}

// BenchmarkEncodeDeltas joins ten encoded deltas into one frame (a
// transaction touching ten of a connection's subjects).
func BenchmarkEncodeDeltas(b *testing.B) {
	d := benchDelta()
	for _, c := range wire.Codecs() {
		frames := make([][]byte, 10)
		for i := range frames {
			frames[i] = c.Delta(&d)
		}
		b.Run(c.Name(), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = c.Deltas(frames)
			}
		})
	}
}

// BenchmarkDecodeDelta is the client side: decode one delta frame.
func BenchmarkDecodeDelta(b *testing.B) {
	d := benchDelta()
	for _, c := range wire.Codecs() {
		f := c.Delta(&d)
		b.Run(c.Name(), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.DecodeServer(f); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
