package stream_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/repstream/repstream/cdc/localpg"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/streamtest"
)

// TestSlotAdvancesWhileSourcesIdle writes heavily to a table outside the
// publication (repstream's own writes count too) and checks the slot's
// confirmed position follows, so idle sources never pin WAL.
func TestSlotAdvancesWhileSourcesIdle(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	ctx := context.Background()
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, streamtest.Schema+`CREATE TABLE noise (id serial PRIMARY KEY, payload text);`)
	_, stop := startEngine(t, url, name, &recorder{})
	defer stop()

	var before int64
	if err := conn.QueryRow(ctx, `SELECT pg_current_wal_lsn() - '0/0'::pg_lsn`).Scan(&before); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		streamtest.Exec(t, conn, `INSERT INTO noise (payload) SELECT repeat('x', 200) FROM generate_series(1, 5000)`)
	}
	var target string
	var written int64
	if err := conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text, pg_current_wal_lsn() - '0/0'::pg_lsn - $1`, before).Scan(&target, &written); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var retained int64
		var passed bool
		err := conn.QueryRow(ctx, `SELECT confirmed_flush_lsn >= $2::pg_lsn, pg_current_wal_lsn() - confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1`, name, target).Scan(&passed, &retained)
		if err != nil {
			t.Fatal(err)
		}
		if passed {
			t.Logf("wrote %d bytes of WAL outside the sources; the slot now retains %d bytes past its confirmed position", written, retained)
			if retained >= written {
				t.Fatalf("slot retains %d bytes, not less than the %d written", retained, written)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot's confirmed_flush_lsn did not reach %s (%d bytes still retained of %d written)", target, retained, written)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestPostgresRestartMidStream restarts (and crash-stops) Postgres while a
// workload runs; the engine reconnects by itself and converges, with store
// commits waiting for their fsync and with async commits (a crash then
// loses recent groups, which fold again into the same deltas).
func TestPostgresRestartMidStream(t *testing.T) {
	for _, async := range []bool{false, true} {
		t.Run(fmt.Sprintf("async_commit=%v", async), func(t *testing.T) { restartMidStream(t, async) })
	}
}

func restartMidStream(t *testing.T, async bool) {
	c := localpg.TestCluster()
	if c == nil {
		t.Skip("needs the throwaway cluster (REPSTREAM_TEST_DATABASE_URL is set)")
	}
	url, name := localpg.NewDatabase(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	streamtest.Exec(t, conn, streamtest.Schema)
	if err := streamtest.Seed(ctx, conn, 500, 100); err != nil {
		t.Fatal(err)
	}
	e, stop := startEngine(t, url, name, &recorder{}, func(c *stream.EngineConfig) { c.AsyncCommit = async })
	defer stop()
	wl := streamtest.NewWorkload(7)
	for round, how := range []string{"restart", "crash"} {
		for i := 0; i < 150; i++ {
			if err := wl.Step(ctx, conn); err != nil {
				t.Fatal(err)
			}
		}
		conn.Close(ctx)
		if how == "restart" {
			err = c.Restart(ctx)
		} else {
			if err = c.Kill(ctx); err == nil {
				err = c.Start(ctx)
			}
		}
		if err != nil {
			t.Fatalf("%s: %v", how, err)
		}
		if conn, err = pgx.Connect(ctx, url); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 150; i++ {
			if err := wl.Step(ctx, conn); err != nil {
				t.Fatal(err)
			}
		}
		streamtest.WaitConverged(t, conn, 60*time.Second)
		t.Logf("round %d (%s): converged, ready=%v", round, how, (e.Readiness(context.Background()) == nil))
	}
	streamtest.CheckLog(t, conn)
	conn.Close(ctx)
}

// TestFirstStatusNeverConfirmsAnUnflushedCheckpoint: with async commits the
// stored checkpoint may be visible before it is on disk. A session that
// restarts (as after the process was killed) confirms the stored
// checkpoint in its first status report, so it must flush the store first.
func TestFirstStatusNeverConfirmsAnUnflushedCheckpoint(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	ctx := context.Background()
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, streamtest.Schema)
	// The WAL writer then leaves an async commit unflushed for seconds.
	streamtest.Exec(t, conn, `ALTER SYSTEM SET wal_writer_delay = '10s'`)
	streamtest.Exec(t, conn, `SELECT pg_reload_conf()`)
	t.Cleanup(func() {
		c, err := pgx.Connect(ctx, url)
		if err == nil {
			c.Exec(ctx, `ALTER SYSTEM RESET wal_writer_delay`) //nolint:errcheck
			c.Exec(ctx, `SELECT pg_reload_conf()`)             //nolint:errcheck
			c.Close(ctx)
		}
	})
	e, stop := startEngine(t, url, name, &recorder{}, func(c *stream.EngineConfig) { c.AsyncCommit, c.Heartbeat = true, -1 })
	defer stop()
	for round := 0; round < 2; round++ {
		streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating) VALUES (1, 5)`)
		streamtest.WaitConverged(t, conn, 20*time.Second)
		var stored, checkpoint string
		if err := conn.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text, (SELECT checkpoint_lsn::text FROM repstream.meta)`).Scan(&stored, &checkpoint); err != nil {
			t.Fatal(err)
		}
		restarts := e.Status().Restarts
		streamtest.Exec(t, conn, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
WHERE datname = current_database() AND application_name LIKE 'repstream%' AND pid <> pg_backend_pid()`)
		deadline := time.Now().Add(20 * time.Second)
		for {
			var confirmed, flushed bool
			err := conn.QueryRow(ctx, `SELECT confirmed_flush_lsn >= $3::pg_lsn, pg_current_wal_flush_lsn() >= $2::pg_lsn
FROM pg_replication_slots WHERE slot_name = $1`, name, stored, checkpoint).Scan(&confirmed, &flushed)
			if err != nil {
				t.Fatal(err)
			}
			if confirmed && e.Status().Restarts > restarts {
				if !flushed {
					t.Fatalf("round %d: the slot confirmed the stored checkpoint while the store's commit (before %s) was not flushed", round, stored)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the slot never confirmed the stored checkpoint", round)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}
