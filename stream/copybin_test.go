package stream

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

// The binary COPY encoder writes the delta log and the row shadow of big
// groups: every value must come back from Postgres exactly as it went in,
// and deltas must come back whole whatever order the encoder wrote them in.
func TestBinaryCopyRoundTrip(t *testing.T) {
	ctx := context.Background()
	w := storeWriter(t)

	s := func(v string) *string { return &v }
	at := time.Date(2026, 11, 27, 2, 46, 11, 123456789, time.UTC)
	subjects := []string{"seller:2", "seller:10", "seller:1", "ünïcødé ★:\"q\"\\b", strings.Repeat("x", 1000), "seller:{a,b}"}
	hists := [][]int64{nil, {}, {0}, {1, -2, math.MaxInt64, math.MinInt64, 0}}
	floats := []float64{0, math.Copysign(0, -1), -1.5, 3.999999999999999, 1e-300, -1e300, math.SmallestNonzeroFloat64, math.MaxFloat64}
	times := []time.Time{at, time.Date(1999, 12, 31, 23, 59, 59, 999999999, time.UTC), time.Date(1960, 1, 1, 0, 0, 0, 1000, time.FixedZone("x", -5*3600)),
		time.Date(2262, 4, 11, 0, 0, 0, 999, time.UTC), time.Unix(0, 0)}
	var txns []Txn
	var want []Delta
	version := map[string]int64{}
	for i := range 400 {
		lsn := LSN(0x1_0000_0000*uint64(i) + 0x10)
		if i == 399 {
			lsn = LSN(math.MaxUint64 - 1)
		}
		txn := Txn{LSN: lsn, CommitAt: at}
		// Each transaction touches subjects in its own order, as callers
		// other than the applier may.
		for j := range subjects {
			subject := subjects[(i+j*7)%len(subjects)]
			if (i+j)%3 == 0 {
				continue
			}
			version[subject]++
			k := i*len(subjects) + j
			sign := int64(1 - 2*(k%2))
			d := Delta{Subject: subject, LSN: lsn, Version: version[subject], Coalesced: 1,
				After: State{Subject: subject, Count: sign * int64(k) * 1_000_000_007, Sum: Micro(sign * math.MaxInt64 / int64(k+1)),
					Mean: floats[k%len(floats)], Bayes: -floats[(k+3)%len(floats)], Hist: hists[k%len(hists)],
					Version: version[subject], LSN: lsn, UpdatedAt: times[k%len(times)]},
				Change: Change{Count: -sign * int64(k), Sum: Micro(sign * math.MinInt64 / int64(k+2)), Mean: floats[(k+5)%len(floats)], Bayes: floats[(k+1)%len(floats)]},
			}
			txn.Deltas = append(txn.Deltas, d)
			want = append(want, d)
		}
		txns = append(txns, txn)
	}
	if countDeltas(txns) <= copyAbove {
		t.Fatalf("%d deltas do not take the COPY path", countDeltas(txns))
	}

	rows := map[rowKey][]*string{
		{0, "1"}:                       {s("42"), s("4.5"), s("published")},
		{0, "ünï ★"}:                   {nil, s(""), s("NULL"), s("null")},
		{1, `["a","b"]`}:               {s(`a "quoted" word`), s(`back\slash`), s(`\"`), s(`trailing\`)},
		{-32768, "min source"}:         {s("{braces}"), s("a,b"), s(" spaced "), s("line\nbreak\ttab")},
		{32767, "empty vals"}:          {},
		{2, "all null"}:                {nil, nil},
		{2, strings.Repeat("k", 5000)}: {s(strings.Repeat("v", 70000))},
	}
	dirty := map[rowKey]shadowRow{}
	for k, v := range rows {
		dirty[k] = shadowRow{vals: v}
	}
	for i := range copyAbove { // enough rows for the COPY path
		k := rowKey{3, fmt.Sprintf("k%d-é", i)}
		v := []*string{s(k.key), nil}
		rows[k], dirty[k] = v, shadowRow{vals: v}
	}
	// Rows the group deletes or inserts and deletes go nowhere near the COPY.
	dirty[rowKey{0, "gone"}] = shadowRow{}

	if _, err := w.commitGroup(ctx, dirty, nil, txns, LSN(math.MaxUint64-1)); err != nil {
		t.Fatal(err)
	}

	r, err := w.conn.Query(ctx, `SELECT `+deltaCols+` FROM repstream.deltas ORDER BY lsn, subject`)
	if err != nil {
		t.Fatal(err)
	}
	var got []Delta
	for r.Next() {
		d, err := scanDelta(r)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, d)
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(want, func(a, b Delta) int {
		if a.LSN != b.LSN {
			if a.LSN < b.LSN {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Subject, b.Subject)
	})
	if len(got) != len(want) {
		t.Fatalf("%d deltas came back, want %d", len(got), len(want))
	}
	same := func(a, b float64) bool { return math.Float64bits(a) == math.Float64bits(b) }
	for i := range want {
		g, w := got[i], want[i]
		if g.Subject != w.Subject || g.LSN != w.LSN || g.Version != w.Version ||
			g.After.Count != w.After.Count || g.After.Sum != w.After.Sum || !same(g.After.Mean, w.After.Mean) || !same(g.After.Bayes, w.After.Bayes) ||
			(g.After.Hist == nil) != (w.After.Hist == nil) || !slices.Equal(g.After.Hist, w.After.Hist) ||
			g.Change.Count != w.Change.Count || g.Change.Sum != w.Change.Sum || !same(g.Change.Mean, w.Change.Mean) || !same(g.Change.Bayes, w.Change.Bayes) ||
			!g.After.UpdatedAt.Equal(w.After.UpdatedAt.Truncate(time.Microsecond)) {
			t.Fatalf("delta %d came back as\n%+v\nwant\n%+v", i, g, w)
		}
	}

	r, err = w.conn.Query(ctx, `SELECT source, key, vals FROM repstream.rows`)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for r.Next() {
		var k rowKey
		var vals []*string
		if err := r.Scan(&k.source, &k.key, &vals); err != nil {
			t.Fatal(err)
		}
		n++
		v, ok := rows[k]
		if !ok {
			t.Fatalf("row %v was never written", k)
		}
		if vals == nil || !slices.EqualFunc(vals, v, func(a, b *string) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }) {
			t.Errorf("row %v came back as %q, want %q", k, deref(vals), deref(v))
		}
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	if n != len(rows) {
		t.Errorf("%d shadow rows came back, want %d", n, len(rows))
	}
}

// deltasBySubject orders a group's deltas by subject, then by the order
// of their transactions, and loses none.
func TestDeltasBySubject(t *testing.T) {
	txns := []Txn{
		{LSN: 1, Deltas: []Delta{{Subject: "b", LSN: 1}, {Subject: "a", LSN: 1}, {Subject: "c", LSN: 1}}},
		{LSN: 2},
		{LSN: 3, Deltas: []Delta{{Subject: "c", LSN: 3}}},
		{LSN: 4, Deltas: []Delta{{Subject: "a", LSN: 4}, {Subject: "b", LSN: 4}, {Subject: "aa", LSN: 4}}},
	}
	var got []string
	for _, d := range deltasBySubject(txns) {
		got = append(got, d.Subject+"@"+d.LSN.String())
	}
	want := []string{"a@0/1", "a@0/4", "aa@0/4", "b@0/1", "b@0/4", "c@0/1", "c@0/3"}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if got := deltasBySubject(nil); len(got) != 0 {
		t.Errorf("no transactions: got %d deltas", len(got))
	}
}
