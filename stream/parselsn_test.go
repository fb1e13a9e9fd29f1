package stream

import "testing"

// A cursor is read exactly: anything but ^[0-9A-F]{1,8}/[0-9A-F]{1,8}$ is
// refused, never silently truncated or trimmed.
func TestParseLSNExact(t *testing.T) {
	good := map[string]LSN{
		"0/0":               0,
		"0/16B3748":         0x16B3748,
		"1/5":               1<<32 | 5,
		"FFFFFFFF/FFFFFFFF": 0xFFFFFFFFFFFFFFFF,
		"00000000/00000001": 1,
	}
	for s, want := range good {
		got, err := ParseLSN(s)
		if err != nil || got != want {
			t.Errorf("ParseLSN(%q) = %s, %v; want %s", s, got, err, want)
		}
	}
	for _, s := range []string{
		"", "/", "0/", "/5", "0/16B3748junk", " 0/16B3748", "0/16B3748 ", "0 /1",
		"100000000/5", "0/100000000", "+1/5", "-1/5", "0x1/5", "1/2/3", "0/1\n", "G/1", "0/16b3748",
	} {
		if got, err := ParseLSN(s); err == nil {
			t.Errorf("ParseLSN(%q) = %s; want an error", s, got)
		}
	}
}
