package stream

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// AppendJSON must write exactly what encoding/json writes through the
// reflection path, for every figure a delta can hold.
func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	subjects := []string{"seller:1", "", `q"uote`, `back\slash`, "<html>&amp;", "ünï★", "tab\there", "ctl\x01", "del\x7f"}
	floats := []float64{0, 1, -1, 4.5, 1e-6, -1e-6, 1e-7, 3.14159265358979, 1e21, 1e20, -2.5e-9, 123456.000001, math.SmallestNonzeroFloat64, math.MaxFloat64}
	micros := []Micro{0, 1, -1, 999999, 1_000_000, 4_500_000, -4_500_001, 123_456_789, math.MaxInt64, math.MinInt64}
	pick := func(fs []float64) float64 {
		if r.IntN(3) == 0 {
			return (r.Float64() - 0.5) * math.Pow(10, float64(r.IntN(30)-15))
		}
		return fs[r.IntN(len(fs))]
	}
	for i := 0; i < 20000; i++ {
		var hist []int64
		if r.IntN(3) > 0 {
			hist = make([]int64, r.IntN(11))
			for j := range hist {
				hist[j] = r.Int64N(1000) - 10
			}
		}
		at := time.Unix(r.Int64N(4e9), r.Int64N(1e9)).In(time.FixedZone("X", 3600*(r.IntN(25)-12)))
		lsn := LSN(r.Uint64())
		if r.IntN(2) == 0 {
			lsn = LSN(r.Uint64N(1 << 36))
		}
		d := Delta{Subject: subjects[r.IntN(len(subjects))], LSN: lsn, Version: r.Int64N(1 << 40), Coalesced: r.IntN(4) - 1,
			After: State{Subject: subjects[r.IntN(len(subjects))], Count: r.Int64N(1e6), Sum: micros[r.IntN(len(micros))],
				Mean: pick(floats), Bayes: pick(floats), Hist: hist, Version: r.Int64N(1e9), LSN: lsn, UpdatedAt: at},
			Change: Change{Count: r.Int64N(3) - 1, Sum: micros[r.IntN(len(micros))], Mean: pick(floats), Bayes: pick(floats)}}
		want, err := d.marshalSlow()
		got, ok := d.AppendJSON([]byte("prefix"))
		if err != nil {
			if ok {
				t.Fatalf("delta %+v: AppendJSON wrote %s where encoding/json failed: %v", d, got, err)
			}
			continue
		}
		if !ok || !strings.HasPrefix(string(got), "prefix") || string(got[6:]) != string(want) {
			t.Fatalf("delta %+v:\n got %s (ok %v)\nwant %s", d, got, ok, want)
		}
	}
	for _, bad := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		d := Delta{Subject: "s", Change: Change{Bayes: bad}}
		if b, ok := d.AppendJSON(nil); ok || len(b) != 0 {
			t.Errorf("AppendJSON with %v: %q, %v; want nothing and false", bad, b, ok)
		}
		if _, err := d.MarshalJSON(); err == nil {
			t.Errorf("MarshalJSON with %v: no error", bad)
		}
	}
}

func BenchmarkDeltaJSON(b *testing.B) {
	d := Delta{Subject: "seller:123456", LSN: 0x1_6B374D48, Version: 42,
		After:  State{Subject: "seller:123456", Count: 120, Sum: 540_500000, Mean: 4.504167, Bayes: 4.449231, Hist: []int64{1, 2, 10, 30, 77}, Version: 42, LSN: 0x1_6B374D48, UpdatedAt: time.Now()},
		Change: Change{Count: 1, Sum: 5_000000, Mean: 0.004132, Bayes: 0.004523}}
	b.Run("append", func(b *testing.B) {
		buf := make([]byte, 0, 512)
		for b.Loop() {
			buf, _ = d.AppendJSON(buf[:0])
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		for b.Loop() {
			d.marshalSlow() //nolint:errcheck
		}
	})
}

// A state's JSON (the HTTP API's) carries mean and bayes at full float64
// precision, in the shortest form that reads back to the same value.
func TestStateJSONFullPrecision(t *testing.T) {
	st := State{Subject: "seller:1", Count: 17, Sum: 71 * MicroUnit, Mean: 71.0 / 17, Bayes: 1.0 / 3, LSN: 0x10}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"mean":4.176470588235294,`) || !strings.Contains(string(b), `"bayes":0.3333333333333333,`) {
		t.Fatalf("state JSON %s; want mean and bayes at full precision", b)
	}
	var back State
	if err := json.Unmarshal(b, &back); err != nil || back.Mean != st.Mean || back.Bayes != st.Bayes {
		t.Fatalf("read back %+v, %v", back, err)
	}
}
