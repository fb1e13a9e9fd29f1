package stream_test

import (
	"context"
	"errors"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/repstream/repstream/cdc"
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

func watchHeap() *heapPeak {
	h := &heapPeak{stop: make(chan struct{}), done: make(chan uint64, 1)}
	go func() {
		s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		var peak uint64
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(s)
			peak = max(peak, s[0].Value.Uint64())
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
// Go heap: the row cache forgets, the queue from the reader is bounded by
// bytes, and pending shadow rows spill into the group's store transaction.
// Holding the rows of one transaction (the bug this guards against) grew
// the heap by 18-21 MiB for each 100k-row shape but deletes; it stays
// within 8 MiB here, and the bound is 12 MiB.
func TestHugeTransactionMemoryIsBounded(t *testing.T) {
	const rows = 100_000
	const bound = 12 << 20
	url, name := localpg.NewDatabase(t)
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, streamtest.Schema)
	_, stop := startEngine(t, url, name, &recorder{}, func(c *stream.EngineConfig) {
		c.Applier.CacheRows, c.Applier.MaxGroupChanges = 1000, 2000
	})
	defer stop()
	base := liveHeap()
	steps := []struct{ name, sql string }{
		{"insert", `INSERT INTO reviews (seller_id, rating) SELECT i % 1000, 1 + i % 5 FROM generate_series(1, $1::int) i`},
		{"update", `UPDATE reviews SET rating = 6 - rating WHERE id <= $1`},
		{"delete", `DELETE FROM reviews WHERE id <= $1 / 2`},
		{"mixed", `WITH d AS (DELETE FROM reviews WHERE id % 4 = 0 AND id <= $1),
u AS (UPDATE reviews SET seller_id = seller_id + 1 WHERE id % 4 = 1 AND id <= $1)
INSERT INTO reviews (seller_id, rating) SELECT i % 1000, 1 + i % 5 FROM generate_series(1, $1::int / 2) i`},
	}
	for _, s := range steps {
		h := watchHeap()
		start := time.Now()
		streamtest.Exec(t, conn, s.sql, rows)
		streamtest.WaitConverged(t, conn, 2*time.Minute)
		peak := h.end()
		after := liveHeap()
		top := max(peak, after)
		grew := top - min(base, top)
		t.Logf("%s of %d rows in one transaction: %s; live heap %d MiB before, peak %d MiB, %d MiB after",
			s.name, rows, time.Since(start).Round(time.Millisecond), base>>20, peak>>20, after>>20)
		if grew > bound {
			t.Errorf("%s: the live heap grew by %d MiB during one transaction; want at most %d MiB", s.name, grew>>20, bound>>20)
		}
	}
	streamtest.CheckLog(t, conn)
}

// TestReaderQueueIsBoundedByBytes streams one transaction of wide rows to a
// consumer that does not keep up: the reader stops delivering once the
// events not yet released hold QueueBytes, however few they are, and goes
// on as the consumer releases them. A row larger than the whole bound
// still passes, alone.
func TestReaderQueueIsBoundedByBytes(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const (
		rows       = 300
		wide       = 64 << 10 // bytes of body per row
		queueBytes = 1 << 20
	)
	url, name := localpg.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, `CREATE TABLE wide (id int PRIMARY KEY, body text);
CREATE PUBLICATION `+name+` FOR TABLE wide`)
	rconn, err := cdc.ConnectReplication(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer rconn.Close(context.Background())
	slot, err := cdc.CreateSlot(ctx, rconn, name)
	if err != nil {
		t.Fatal(err)
	}
	streamtest.Exec(t, conn, `INSERT INTO wide SELECT i, repeat(md5(i::text), $1::int / 32) FROM generate_series(1, $2::int) i
UNION ALL SELECT 0, repeat('x', $3::int)`, wide, rows, 3*queueBytes)

	r := cdc.NewReader(rconn, cdc.ReaderConfig{Slot: name, Publication: name, QueueBytes: queueBytes,
		StatusInterval: 100 * time.Millisecond})
	out := make(chan cdc.Event, 10*rows) // the count never binds here
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx, slot.ConsistentPoint, out) }()
	defer func() {
		stop()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("reader: %v", err)
		}
	}()

	// Wait until the reader stops delivering.
	n, still := 0, time.Now()
	for time.Since(still) < 500*time.Millisecond {
		time.Sleep(20 * time.Millisecond)
		if len(out) != n {
			n, still = len(out), time.Now()
		}
	}
	var held int64
	inserts := 0
	for range n {
		ev := <-out
		held += ev.Footprint
		if ev.Kind == cdc.EventInsert {
			inserts++
			if ev.Footprint < wide {
				t.Errorf("an insert of a %d-byte row counts %d bytes", wide, ev.Footprint)
			}
		}
		r.Release(ev.Footprint)
	}
	if n == 0 || n > queueBytes/wide+2 || held > queueBytes {
		t.Fatalf("a stalled consumer holds %d events of %d bytes; want at most %d bytes", n, held, queueBytes)
	}
	// Released, the rest comes, the row larger than the bound included.
	for {
		var ev cdc.Event
		select {
		case ev = <-out:
		case <-ctx.Done():
			t.Fatalf("got %d of %d inserts: %v", inserts, rows+1, ctx.Err())
		}
		r.Release(ev.Footprint)
		if ev.Kind == cdc.EventInsert {
			inserts++
		}
		if ev.Kind == cdc.EventCommit {
			break
		}
	}
	if inserts != rows+1 {
		t.Fatalf("got %d inserts, want %d", inserts, rows+1)
	}
}

// TestHugeTransactionStoppedMidwayLeavesNothing stops the engine while it
// applies a source transaction whose shadow rows already spilled into the
// group's store transaction: nothing of it is committed (shadow and
// checkpoint as before), and the next start applies it exactly.
func TestHugeTransactionStoppedMidwayLeavesNothing(t *testing.T) {
	const rows = 100_000
	url, name := localpg.NewDatabase(t)
	ctx := context.Background()
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, streamtest.Schema)
	small := func(c *stream.EngineConfig) { c.Applier.MaxGroupChanges = 500 }
	_, stop := startEngine(t, url, name, &recorder{}, small)
	streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating) VALUES (1, 5)`)
	streamtest.WaitConverged(t, conn, 20*time.Second)
	shadow := func() (n int64, checkpoint string) {
		t.Helper()
		if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM repstream.rows), (SELECT checkpoint_lsn::text FROM repstream.meta)`).Scan(&n, &checkpoint); err != nil {
			t.Fatal(err)
		}
		return n, checkpoint
	}
	n0, _ := shadow()

	streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating) SELECT i % 1000, 1 + i % 5 FROM generate_series(1, $1::int) i`, rows)
	// Wait for the writer to hold an open group: the spill has begun.
	deadline := time.Now().Add(time.Minute)
	for {
		var open bool
		if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_stat_activity WHERE datname = current_database()
  AND application_name LIKE 'repstream-writer%' AND state LIKE 'idle in transaction%')`).Scan(&open); err != nil {
			t.Fatal(err)
		}
		if open {
			break
		}
		switch n, _ := shadow(); {
		case n == n0+rows || time.Now().After(deadline):
			t.Fatal("the transaction was applied before its group was seen open; nothing was tested")
		case n != n0:
			t.Fatalf("%d of its %d shadow rows committed while the source transaction was being applied", n-n0, rows)
		}
		time.Sleep(2 * time.Millisecond)
	}
	stop()
	// Nothing of the transaction is stored. The checkpoint may have moved
	// to an idle position its WAL passed before its commit arrived (safe:
	// Postgres still sends a transaction that commits after the start), but
	// never to its commit.
	n, cp := shadow()
	if n != n0 {
		t.Fatalf("after a stop mid-transaction: %d shadow rows, want %d (half a source transaction committed)", n, n0)
	}

	_, stop = startEngine(t, url, name, &recorder{}, small)
	defer stop()
	streamtest.WaitConverged(t, conn, 2*time.Minute)
	streamtest.CheckLog(t, conn)
	if n, _ := shadow(); n != n0+rows {
		t.Fatalf("%d shadow rows, want %d", n, n0+rows)
	}
	var below bool
	if err := conn.QueryRow(ctx, `SELECT $1::pg_lsn < (SELECT max(lsn) FROM repstream.deltas)`, cp).Scan(&below); err != nil {
		t.Fatal(err)
	}
	if !below {
		t.Fatalf("the stop left checkpoint %s at or past the transaction's commit", cp)
	}
}
