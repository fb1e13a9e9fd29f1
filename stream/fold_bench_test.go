package stream

import (
	"strconv"
	"testing"
	"time"
)

func benchRule(b *testing.B) *Rule {
	rules, err := CompileSources([]Source{{Table: "public.reviews", Subject: "seller:{seller_id}", Score: "rating",
		Scale: []float64{1, 5}, Where: map[string]any{"status": "published"}}})
	if err != nil {
		b.Fatal(err)
	}
	return rules[0]
}

// benchVals returns a reviews row in the rule's column order.
func benchVals(r *Rule, seller int, rating string) []*string {
	by := map[string]string{"seller_id": strconv.Itoa(seller), "rating": rating, "status": "published"}
	out := make([]*string, len(r.Columns))
	for i, c := range r.Columns {
		v := by[c]
		out[i] = &v
	}
	return out
}

// BenchmarkContribute evaluates one row against its source rule (filter,
// score parse, subject template).
func BenchmarkContribute(b *testing.B) {
	r := benchRule(b)
	vals := benchVals(r, 42, "4.5")
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := r.Contribute(vals); !ok {
			b.Fatal("no contribution")
		}
	}
}

// BenchmarkFoldChange is the whole in-memory fold of one single-row
// transaction: contribute, accumulate per subject, fold into the state.
func BenchmarkFoldChange(b *testing.B) {
	r := benchRule(b)
	rows := make([][]*string, 1000)
	for i := range rows {
		rows[i] = benchVals(r, i, []string{"1", "2.5", "3", "4.5", "5"}[i%5])
	}
	states := map[string]State{}
	at := time.Now()
	prior := Prior{Mean: 3.5, Weight: 10}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		t := &txnAcc{lsn: LSN(i), at: at, subj: map[string]*acc{}}
		c, _ := r.Contribute(rows[i%len(rows)])
		t.add(c, +1, r.buckets)
		for _, s := range t.subjects() {
			a := t.subj[s]
			d := Fold(states[s], s, a.count, a.sum, a.hist, t.lsn, t.at, prior)
			states[s] = d.After
		}
		i++
	}
}
