package stream_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/repstream/repstream/cdc/localpg"
	"github.com/repstream/repstream/stream/streamtest"
)

// TestFirstStartWhileWriting starts the engine for the first time while
// four applications keep writing: the snapshot and the stream must meet
// exactly at the slot's consistent point, nothing missed, nothing twice.
func TestFirstStartWhileWriting(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	ctx := context.Background()
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, streamtest.Schema)
	if err := streamtest.Seed(ctx, conn, 20000, 2000); err != nil {
		t.Fatal(err)
	}
	wctx, stopWriters := context.WithCancel(ctx)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			c, err := pgx.Connect(ctx, url)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close(ctx)
			wl := streamtest.NewWorkload(seed)
			for wctx.Err() == nil {
				if err := wl.Step(wctx, c); err != nil && wctx.Err() == nil {
					errs <- err
					return
				}
			}
		}(uint64(i + 1))
	}
	time.Sleep(300 * time.Millisecond) // the writers are in full swing
	rec := &recorder{}
	_, stop := startEngine(t, url, name, rec)
	defer stop()
	time.Sleep(time.Second)
	stopWriters()
	wg.Wait()
	close(errs)
	for err := range errs {
		// Concurrent writers may deadlock or conflict on the same rows; that
		// is the application's business, not a failure of the pipeline.
		t.Logf("writer: %v", err)
	}
	streamtest.WaitConverged(t, conn, 60*time.Second)
	streamtest.CheckLog(t, conn)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.txns) == 0 {
		t.Fatal("no transactions streamed after the snapshot: the seam was not exercised")
	}
}
