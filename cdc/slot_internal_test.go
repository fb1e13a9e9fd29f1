package cdc

import (
	"testing"

	"github.com/jackc/pglogrepl"
)

// A history file names each ancestor timeline with the position where the
// new one left it; a position up to there is the same history.
func TestHistoryContinues(t *testing.T) {
	content := "1\t0/3000148\tno recovery target specified\n\n2\t0/5000000\tno recovery target specified\n"
	for _, c := range []struct {
		from int32
		lsn  string
		want bool
	}{
		{1, "0/3000148", true},
		{1, "0/3000149", false},
		{1, "0/1000000", true},
		{2, "0/4FFFFFF", true},
		{2, "0/5000001", false},
		{3, "0/1", false}, // not an ancestor
	} {
		lsn, _ := pglogrepl.ParseLSN(c.lsn)
		if got := historyContinues(content, c.from, lsn); got != c.want {
			t.Errorf("from %d at %s = %v, want %v", c.from, c.lsn, got, c.want)
		}
	}
}
