package stream_test

import (
	"testing"

	"github.com/repstream/repstream/stream"
)

// TestParseMicroRoundsThePrintedDecimal: a score is its printed text rounded
// to 6 decimals half away from zero, exactly as SQL's
// round(score::text::numeric, 6), whether or not the text has an exponent.
func TestParseMicroRoundsThePrintedDecimal(t *testing.T) {
	for in, want := range map[string]stream.Micro{
		"12": 12_000000, "+3.5": 3_500000, ".5": 500000, "5.": 5_000000, "-0": 0, "0.000000": 0,
		"4.1234565": 4_123457, "-4.1234565": -4_123457, "4.12345649999": 4_123456, "4.5000005": 4_500001,
		"0.0000005": 1, "-0.0000005": -1, "0.00000049": 0, "0.00000050": 1,
		"5e-07": 1, "-5e-07": -1, "4.9e-07": 0, "1.5e-06": 2, "2.5e-06": 3, "1e-07": 0,
		"1245e-7": 125, "-1245e-7": -125, "2465E-7": 247, "1.2345675e+03": 1234_567500, "1.2e3": 1200_000000,
		"12.3456785e0": 12_345679, "0.00012345e+2": 12345,
	} {
		got, err := stream.ParseMicro(in)
		if err != nil || got != want {
			t.Errorf("ParseMicro(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "NaN", "Infinity", "-Infinity", "1e", "e5", "1e+", "1.2.3", "abc", "1e400", "9e12345678901", "10000000000000", "1e13", "--1", "1e-"} {
		if got, err := stream.ParseMicro(in); err == nil {
			t.Errorf("ParseMicro(%q) = %d, want an error", in, got)
		}
	}
}
