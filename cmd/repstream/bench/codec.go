package bench

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/stream"
)

// SampleDelta is a representative delta: a seller with a five-star
// histogram after one more review.
func SampleDelta() stream.Delta {
	at := time.Date(2026, 11, 26, 21, 0, 0, 123456000, time.UTC)
	after := stream.State{Subject: "seller:42", Count: 18, Sum: 76_000000, Mean: 4.222222, Bayes: 3.857143,
		Hist: []int64{0, 1, 2, 5, 10}, Version: 18, LSN: 0x16B3800, UpdatedAt: at}
	return stream.Delta{Subject: "seller:42", LSN: 0x16B3800, Version: 18, After: after,
		Change: stream.Change{Count: 1, Sum: 5_000000, Mean: 0.045752, Bayes: 0.064286}, Coalesced: 1}
}

// codec compares the JSON and protobuf encodings of a delta.
func (e *env) codec(context.Context) error {
	d := SampleDelta()
	type res struct {
		bytes int
		ns    float64
	}
	var out [2]res
	for i, c := range []wire.Codec{wire.JSON{}, wire.Proto{}} {
		out[i].bytes = len(c.Delta(&d))
		var ns []float64
		for r := 0; r < e.runs; r++ {
			b := testing.Benchmark(func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					_ = c.Delta(&d)
				}
			})
			ns = append(ns, float64(b.NsPerOp()))
		}
		out[i].ns = median(ns)
	}
	e.add(row{Measurement: "delta encoding: bytes per delta", Baseline: fmt.Sprintf("JSON %d B", out[0].bytes),
		Result: fmt.Sprintf("protobuf %d B", out[1].bytes), Ratio: fmt.Sprintf("%.2f", float64(out[1].bytes)/float64(out[0].bytes)), Target: "report", Verdict: "reported"})
	e.add(row{Measurement: "delta encoding: encode time (one delta, once per transaction and codec)", Baseline: fmt.Sprintf("JSON %.0f ns", out[0].ns),
		Result: fmt.Sprintf("protobuf %.0f ns", out[1].ns), Ratio: fmt.Sprintf("%.2f", out[1].ns/out[0].ns), Target: "report", Verdict: "reported"})
	return nil
}
