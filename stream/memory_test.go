package stream_test

import (
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/repstream/repstream/cdc/localpg"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/streamtest"
)

// heapPeak samples the live Go heap (as of each garbage collection) until
// stopped, and returns the highest sample.
type heapPeak struct {
	stop chan struct{}
	done chan uint64
}

func watchHeap(tag string) *heapPeak {
	h := &heapPeak{stop: make(chan struct{}), done: make(chan uint64, 1)}
	go func() {
		s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		var peak uint64
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(s)
			if v := s[0].Value.Uint64(); v > peak+(1<<20) {
				peak = v
				if f := os.Getenv("HEAPPROF"); f != "" {
					w, _ := os.Create(f + "-" + tag)
					pprof.WriteHeapProfile(w)
					w.Close()
				}
			}
			select {
			case <-h.stop:
				h.done <- peak
				return
			case <-t.C:
			}
		}
	}()
	return h
}

func (h *heapPeak) end() uint64 {
	close(h.stop)
	return <-h.done
}

func liveHeap() uint64 {
	runtime.GC()
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestHugeTransactionMemoryIsBounded applies single source transactions far
// larger than every cache and group bound (inserts only, then updates,
// deletes and a mix in one transaction) and bounds the growth of the live
// Go heap: per-row state of an open transaction spills to the store's open
// transaction instead of accumulating. Holding every row costs about 200
// bytes a row, over 40 MiB here; the bound is 24 MiB.
func TestHugeTransactionMemoryIsBounded(t *testing.T) {
	rows := 200_000
	if testing.Short() {
		rows = 50_000
	}
	url, name := localpg.NewDatabase(t)
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, streamtest.Schema)
	_, stop := startEngine(t, url, name, &recorder{}, func(c *stream.EngineConfig) {
		c.Applier.CacheRows = 1000
	})
	defer stop()
	base := liveHeap()
	bound := uint64(24 << 20)
	if testing.Short() {
		bound = 12 << 20
	}
	steps := []struct{ name, sql string }{
		{"insert", `INSERT INTO reviews (seller_id, rating) SELECT i % 1000, 1 + i % 5 FROM generate_series(1, $1::int) i`},
		{"update", `UPDATE reviews SET rating = 6 - rating WHERE id <= $1`},
		{"delete", `DELETE FROM reviews WHERE id <= $1 / 2`},
		{"mixed", `WITH d AS (DELETE FROM reviews WHERE id % 4 = 0 AND id <= $1),
u AS (UPDATE reviews SET seller_id = seller_id + 1 WHERE id % 4 = 1 AND id <= $1)
INSERT INTO reviews (seller_id, rating) SELECT i % 1000, 1 + i % 5 FROM generate_series(1, $1::int / 2) i`},
	}
	for _, s := range steps {
		if o := os.Getenv("ONLY"); o != "" && o != s.name && s.name != "insert" {
			continue
		}
		h := watchHeap(s.name)
		start := time.Now()
		streamtest.Exec(t, conn, s.sql, rows)
		streamtest.WaitConverged(t, conn, 2*time.Minute)
		peak := h.end()
		after := liveHeap()
		grew := max(peak, after) - min(base, max(peak, after))
		t.Logf("%s of %d rows in one transaction: %s; live heap %d MiB before, peak %d MiB, %d MiB after",
			s.name, rows, time.Since(start).Round(time.Millisecond), base>>20, peak>>20, after>>20)
		if grew > bound {
			t.Errorf("%s: the live heap grew by %d MiB during one transaction; want at most %d MiB", s.name, grew>>20, bound>>20)
		}
	}
	streamtest.CheckLog(t, conn)
}
