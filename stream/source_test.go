package stream_test

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/streamtest"
)

// TestFingerprintChangesWithValueFormat: state loaded through ::text casts
// (before values were read as pgoutput prints them) is reloaded, not
// continued with keys the stream never matches.
func TestFingerprintChangesWithValueFormat(t *testing.T) {
	rules, err := stream.CompileSources(streamtest.Sources())
	if err != nil {
		t.Fatal(err)
	}
	const castText = "95e289ded525fc85" // streamtest's sources under the ::text load
	if got := stream.Fingerprint(rules, stream.Prior{Mean: 3.5, Weight: 10}); got == castText {
		t.Fatalf("Fingerprint = %s, the fingerprint of state loaded through ::text casts", got)
	}
}

// TestCompileSourcesRejectsScalesThatCanOverflow: a configuration is accepted
// only if every subject's sum stays exact in int64 millionths for
// MaxSubjectRatings ratings at the far end of the scales that can feed it;
// otherwise the error names the scale and the limit.
func TestCompileSourcesRejectsScalesThatCanOverflow(t *testing.T) {
	src := func(table, subject string, lo, hi float64) stream.Source {
		return stream.Source{Table: table, Subject: subject, Score: "score", Scale: []float64{lo, hi}}
	}
	limit := float64(math.MaxInt64/stream.MaxSubjectRatings) / stream.MicroUnit // 2147.483647
	for _, tc := range []struct {
		name    string
		srcs    []stream.Source
		wantKey string // "" means accepted
	}{
		{"stars", []stream.Source{src("a", "s:{x}", 1, 5)}, ""},
		{"at the limit", []stream.Source{src("a", "s:{x}", -limit, limit)}, ""},
		{"past the limit", []stream.Source{src("a", "s:{x}", 0, limit+0.000001)}, "sources[0].scale"},
		{"negative past the limit", []stream.Source{src("a", "s:{x}", -2148, 0)}, "sources[0].scale"},
		{"the old maximum", []stream.Source{src("a", "s:{x}", 0, 1e9)}, "sources[0].scale"},
		{"two sources into one subject", []stream.Source{src("a", "s:{x}", 0, 1000), src("b", "s:{y}", 0, 1200)}, "sources[0].scale"},
		{"template prefixes that can meet", []stream.Source{src("a", "s:{x}", 0, 1000), src("b", "s:x{y}", 0, 1200)}, "sources[0].scale"},
		{"a template with no prefix meets any", []stream.Source{src("a", "s:{x}", 0, 1000), src("b", "{y}", 0, 1200)}, "sources[0].scale"},
		{"disjoint prefixes", []stream.Source{src("a", "seller:{x}", 0, 2000), src("b", "user:{y}", 0, 2000)}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := stream.CompileSources(tc.srcs)
			if tc.wantKey == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			var ce *stream.ConfigError
			if !errors.As(err, &ce) || ce.Key != tc.wantKey {
				t.Fatalf("err = %v, want a ConfigError for %s", err, tc.wantKey)
			}
			if !strings.Contains(ce.Msg, "2147.483647") {
				t.Errorf("message %q does not state the limit", ce.Msg)
			}
			t.Log(err)
		})
	}
}

// TestMaxSubjectRatingsAtTheLimitIsExact: the largest accepted bound times
// MaxSubjectRatings still fits, folded in one delta or one by one.
func TestMaxSubjectRatingsAtTheLimitIsExact(t *testing.T) {
	top := stream.Micro(math.MaxInt64 / stream.MaxSubjectRatings)
	d := stream.Fold(stream.State{}, "s", stream.MaxSubjectRatings, top*stream.MaxSubjectRatings, nil, 1, time.Time{}, stream.Prior{})
	if d.After.Sum < 0 || d.After.Sum/stream.MaxSubjectRatings != top {
		t.Fatalf("sum %d for %d ratings of %d", d.After.Sum, int64(stream.MaxSubjectRatings), top)
	}
}
