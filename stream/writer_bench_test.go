package stream

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"
)

// BenchmarkStoreWriteGroup writes one group commit the way the applier
// does after a backlog of single-row transactions over 1,000 subjects:
// row shadow, states, delta log, checkpoint, COMMIT, in one round trip. ns/change is the
// store's cost per source change. The test cluster runs with fsync off, so
// COMMIT is cheaper here than in `make bench`.
func BenchmarkStoreWriteGroup(b *testing.B) {
	ctx := context.Background()
	w := storeWriter(b)
	at := time.Now()
	seq := 0
	for _, n := range []int{1, 10, 100, 2000, 20000} {
		// group builds n single-row transactions, one delta each.
		group := func() (map[rowKey]shadowRow, []State, []Txn) {
			dirty := make(map[rowKey]shadowRow, n)
			states := map[string]State{}
			txns := make([]Txn, 0, n)
			for i := 0; i < n; i++ {
				seq++
				subject := "seller:" + strconv.Itoa(seq%1000)
				v1, v2, v3 := strconv.Itoa(seq%1000), "4.5", "published"
				dirty[rowKey{0, strconv.Itoa(seq)}] = shadowRow{vals: []*string{&v1, &v2, &v3}}
				d := Fold(states[subject], subject, 1, 4_500000, []int64{0, 0, 0, 1, 0}, LSN(seq), at, Prior{Mean: 3.5, Weight: 10})
				states[subject] = d.After
				txns = append(txns, Txn{LSN: LSN(seq), CommitAt: at, Deltas: []Delta{d}})
			}
			list := make([]State, 0, len(states))
			for _, s := range states {
				list = append(list, s)
			}
			return dirty, list, txns
		}
		b.Run(fmt.Sprintf("changes=%d", n), func(b *testing.B) {
			var took time.Duration
			for b.Loop() {
				b.StopTimer()
				dirty, states, txns := group()
				b.StartTimer()
				t0 := time.Now()
				if _, err := w.commitGroup(ctx, dirty, states, txns, LSN(seq)); err != nil {
					b.Fatal(err)
				}
				took += time.Since(t0)
			}
			b.ReportMetric(float64(took.Nanoseconds())/float64(b.N*n), "ns/change")
		})
	}
}
