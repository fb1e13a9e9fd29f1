package stream

import (
	"context"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/repstream/repstream/cdc/localpg"
)

// The group write sends text[] and bigint[] values as array literals; every
// value must come back from Postgres exactly as it went in.
func TestArrayLiteralsRoundTrip(t *testing.T) {
	url, _ := localpg.NewDatabase(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	s := func(v string) *string { return &v }
	cases := [][]*string{
		{},
		{nil},
		{s("")},
		{s("NULL"), nil, s("null")},
		{s(`a "quoted" word`), s(`back\slash`), s(`\"`), s(`trailing\`)},
		{s("{braces}"), s("a,b"), s(" spaced "), s("ünïcødé ★"), s("line\nbreak\ttab")},
	}
	for _, vals := range cases {
		lit := string(appendTextArray(nil, vals))
		var got []*string
		if err := conn.QueryRow(ctx, `SELECT $1::text::text[]`, lit).Scan(&got); err != nil {
			t.Fatalf("%s: %v", lit, err)
		}
		if !slices.EqualFunc(got, vals, func(a, b *string) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }) {
			t.Errorf("%s came back as %q", lit, deref(got))
		}
	}
	for _, h := range [][]int64{nil, {}, {0}, {1, -2, 9223372036854775807, -9223372036854775808}} {
		var got []int64
		if err := conn.QueryRow(ctx, `SELECT $1::text::bigint[]`, int64ArrayLiteral(h)).Scan(&got); err != nil {
			t.Fatalf("%v: %v", h, err)
		}
		if (h == nil) != (got == nil) || !slices.Equal(got, h) {
			t.Errorf("%v came back as %v", h, got)
		}
	}
}

func deref(vals []*string) []string {
	out := make([]string, len(vals))
	for i, v := range vals {
		if v == nil {
			out[i] = "<NULL>"
		} else {
			out[i] = *v
		}
	}
	return out
}
