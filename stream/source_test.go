package stream_test

import (
	"testing"

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
