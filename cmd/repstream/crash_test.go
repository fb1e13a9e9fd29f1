package main

import (
	"context"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/repstream/repstream/cdc/localpg"
	"github.com/repstream/repstream/stream/streamtest"
)

func testSeed(t *testing.T) uint64 {
	if s := os.Getenv("REPSTREAM_TEST_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("REPSTREAM_TEST_SEED: %v", err)
		}
		return n
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d (rerun with REPSTREAM_TEST_SEED=%d)", seed, seed)
	return seed
}

// TestKill9Converges runs a randomized workload against pre-existing rows
// while the service, a real process, is killed with SIGKILL again and again
// (including during its first snapshot load). Afterwards the derived state
// equals a SQL recomputation subject by subject, and the delta log has no
// gap and no duplicate.
func TestKill9Converges(t *testing.T) {
	seed := testSeed(t)
	rnd := rand.New(rand.NewPCG(seed, 1))
	dbURL, name := localpg.NewDatabase(t)
	ctx := context.Background()
	conn := streamtest.Connect(t, dbURL)
	streamtest.Exec(t, conn, streamtest.Schema)
	if err := streamtest.Seed(ctx, conn, 3000, 500); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, dbURL, name, "")

	// The application keeps writing the whole time.
	wctx, stopWriter := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var wl *streamtest.Workload
	var werr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		wconn, err := pgx.Connect(ctx, dbURL)
		if err != nil {
			werr = err
			return
		}
		defer wconn.Close(ctx)
		wl = streamtest.NewWorkload(seed)
		for i := 0; wctx.Err() == nil; i++ {
			if i == 400 {
				if werr = wl.Truncate(ctx, wconn); werr != nil {
					return
				}
				continue
			}
			if werr = wl.Step(ctx, wconn); werr != nil {
				return
			}
		}
	}()

	const kills = 6
	p := killRepeatedly(t, cfg, rnd, kills, 200*time.Millisecond)
	time.Sleep(time.Second)
	stopWriter()
	wg.Wait()
	if werr != nil {
		t.Fatalf("writer: %v", werr)
	}
	t.Logf("killed %d times; workload: %v", kills, wl.Ops)
	if wl.Ops["truncate"] != 1 {
		t.Fatalf("the workload did not reach its TRUNCATE (ops %v); make it run longer", wl.Ops)
	}
	streamtest.WaitConverged(t, conn, 60*time.Second)
	streamtest.CheckLog(t, conn)
	var subjects int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM repstream.subjects`).Scan(&subjects); err != nil || subjects == 0 {
		t.Fatalf("no subjects derived (err %v)", err)
	}
	if err := p.stop(30 * time.Second); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	// After a clean stop the slot has confirmed the checkpoint.
	var checkpoint, confirmed string
	err := conn.QueryRow(ctx, `SELECT m.checkpoint_lsn::text, s.confirmed_flush_lsn::text FROM repstream.meta m, pg_replication_slots s WHERE s.slot_name = $1`, name).Scan(&checkpoint, &confirmed)
	if err != nil {
		t.Fatal(err)
	}
	var behind bool
	if err := conn.QueryRow(ctx, `SELECT $1::pg_lsn > $2::pg_lsn`, checkpoint, confirmed).Scan(&behind); err != nil {
		t.Fatal(err)
	}
	if behind {
		t.Fatalf("slot confirmed %s, behind the committed checkpoint %s after a clean stop", confirmed, checkpoint)
	}
}

// killRepeatedly starts serve and kills it with -9 n times, each a random
// least to least+1.5 s after its start; it returns the instance left running.
func killRepeatedly(t *testing.T, cfg string, rnd *rand.Rand, n int, least time.Duration) *proc {
	t.Helper()
	p := start(t, nil, "serve", "--config", cfg)
	for range n {
		time.Sleep(least + time.Duration(rnd.IntN(1500))*time.Millisecond)
		p.kill9()
		p = start(t, nil, "serve", "--config", cfg)
	}
	return p
}
