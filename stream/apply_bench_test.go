package stream

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/repstream/repstream/cdc"
)

type nopPublisher struct{}

func (nopPublisher) Publish(LSN, []Txn) {}
func (nopPublisher) Reset(Meta)         {}

// BenchmarkApplyInserts folds a backlog of 1,000-row transactions over
// 1,000 subjects in the applier, the way the drain benchmark's second
// half does, store writes excluded: ns/change is the service's in-memory
// cost per source change (key, values, row cache, fold).
func BenchmarkApplyInserts(b *testing.B) {
	ctx := context.Background()
	w := storeWriter(b)
	r := benchRule(b)
	rel := &cdc.Relation{ID: 1, Namespace: "public", Name: "reviews", Columns: []cdc.Column{
		{Name: "id", Flags: 1}, {Name: "seller_id"}, {Name: "rating"}, {Name: "status"}}}
	a := newApplier(ApplierConfig{MaxGroupChanges: 1 << 30, MaxGroupDelay: time.Hour}, prometheus.NewHistogram(prometheus.HistogramOpts{Name: "x"}),
		slog.New(slog.NewTextHandler(io.Discard, nil)), w, []*Rule{r}, map[string][]string{"public.reviews": {"id"}},
		Prior{Mean: 3.5, Weight: 10}, nopPublisher{}, 0, func(LSN, LSN) {})
	at := time.Now()
	id, lsn := 0, LSN(1<<32)
	txn := func() []cdc.Event {
		evs := make([]cdc.Event, 0, 1002)
		lsn += 100000
		evs = append(evs, cdc.Event{Kind: cdc.EventBegin, LSN: lsn, Time: at})
		for i := range 1000 {
			id++
			evs = append(evs, cdc.Event{Kind: cdc.EventInsert, Rel: rel, New: cdc.Tuple{
				{Kind: cdc.ValueText, Data: []byte(strconv.Itoa(id))}, {Kind: cdc.ValueText, Data: []byte(strconv.Itoa(i))},
				{Kind: cdc.ValueText, Data: []byte(strconv.Itoa(1 + i%5))}, {Kind: cdc.ValueText, Data: []byte("published")}}})
		}
		return append(evs, cdc.Event{Kind: cdc.EventCommit, LSN: lsn, EndLSN: lsn + 1, Time: at})
	}
	var took time.Duration
	n := 0
	for b.Loop() {
		b.StopTimer()
		evs := txn()
		b.StartTimer()
		t0 := time.Now()
		for len(evs) > 0 {
			chunk := evs[:min(len(evs), 2048)]
			evs = evs[len(chunk):]
			if err := a.apply(ctx, chunk); err != nil {
				b.Fatal(err)
			}
		}
		took += time.Since(t0)
		n += 1000
		if a.groupRows >= 20000 {
			b.StopTimer()
			if err := a.commit(ctx); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	}
	b.ReportMetric(float64(took.Nanoseconds())/float64(n), "ns/change")
}
