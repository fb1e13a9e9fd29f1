package stream_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/repstream/repstream/cdc/localpg"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/streamtest"
)

// replicatorRole creates a login role with REPLICATION and no superuser
// (privileges then apply), allowed to create repstream's schema and to read
// the sources; it returns url with that role. The publication is made here,
// as the tables' owner. The role is dropped when the test ends.
func replicatorRole(t *testing.T, conn *pgx.Conn, url, name string) string {
	t.Helper()
	role := "r_" + name[max(0, len(name)-55):]
	streamtest.Exec(t, conn, fmt.Sprintf(`CREATE ROLE %q LOGIN REPLICATION; GRANT CREATE ON DATABASE %q TO %q;
GRANT SELECT ON reviews, ratings TO %q; CREATE PUBLICATION %q FOR TABLE reviews, ratings;
GRANT pg_read_all_stats TO %q`, role, name, role, role, name, role))
	t.Cleanup(func() {
		ctx := context.Background()
		c, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, fmt.Sprintf(`DROP OWNED BY %q CASCADE; DROP ROLE %q`, role, role)); err != nil {
			t.Errorf("drop role: %v", err)
		}
	})
	return strings.Replace(url, "postgres@", role+"@", 1)
}

// runEngine starts an engine without waiting for it to be ready.
func runEngine(t *testing.T, url, name string, pub stream.Publisher, opts ...func(*stream.EngineConfig)) (*stream.Engine, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cfg := stream.EngineConfig{
		DatabaseURL: url, Slot: name, Publication: name, CreatePublication: true,
		Sources: streamtest.Sources(), Prior: stream.Prior{Mean: 3.5, Weight: 10},
		Heartbeat: 200 * time.Millisecond, StatusInterval: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	for _, o := range opts {
		o(&cfg)
	}
	e, err := stream.NewEngine(ctx, cfg, pub)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	return e, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("engine: %v", err)
		}
		e.Close()
	}
}

func waitReadyWithin(t *testing.T, e *stream.Engine, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := e.Readiness(context.Background())
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("engine not ready after %s: %v", within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func storedEpoch(t *testing.T, conn *pgx.Conn) string {
	t.Helper()
	var epoch string
	if err := conn.QueryRow(context.Background(), `SELECT epoch FROM repstream.meta`).Scan(&epoch); err != nil {
		t.Fatal(err)
	}
	return epoch
}

func slotExists(t *testing.T, conn *pgx.Conn, name string) bool {
	t.Helper()
	var n int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0
}

// waitSlotInactive waits for the walsender of a stopped engine to let go.
func waitSlotInactive(t *testing.T, conn *pgx.Conn, name string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var active bool
		if err := conn.QueryRow(context.Background(), `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, name).Scan(&active); err != nil {
			t.Fatal(err)
		}
		if !active {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the slot is still active 10s after the engine stopped")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *recorder) epochs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, m := range r.resets {
		out = append(out, m.Epoch)
	}
	return out
}

func (r *recorder) published() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.txns)
}

func hasProblem(e *stream.Engine, code, source string) bool {
	for _, p := range e.Problems() {
		if p.Code == code && p.Source == source {
			return true
		}
	}
	return false
}

// TestLoadThatCannotSucceedNeverStreamsFromTheOldCheckpoint is the DBA's
// recipe: SELECT revoked on one source and repstream's own table not
// writable, the slot dropped while stopped, rows written, start. The
// engine must not stream from the old checkpoint, must say why with the
// fix, must not create the slot on every retry, and once granted it
// reloads under a new epoch and converges.
func TestLoadThatCannotSucceedNeverStreamsFromTheOldCheckpoint(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	ctx := context.Background()
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, streamtest.Schema)
	if err := streamtest.Seed(ctx, conn, 300, 100); err != nil {
		t.Fatal(err)
	}
	roleURL := replicatorRole(t, conn, url, name)
	role := strings.SplitN(strings.TrimPrefix(roleURL, "postgres://"), "@", 2)[0]
	_, stop := startEngine(t, roleURL, name, &recorder{})
	streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating) VALUES (1, 5)`)
	streamtest.WaitConverged(t, conn, 20*time.Second)
	stop()
	old := storedEpoch(t, conn)

	streamtest.Exec(t, conn, fmt.Sprintf(`REVOKE SELECT ON ratings FROM %q`, role))
	waitSlotInactive(t, conn, name)
	streamtest.Exec(t, conn, `SELECT pg_drop_replication_slot($1)`, name)
	streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating) VALUES (1, 1), (2, 2); UPDATE ratings SET score = 0 WHERE user_id = 1`)

	rec := &recorder{}
	e, stop := runEngine(t, roleURL, name, rec)
	defer stop()
	deadline := time.Now().Add(20 * time.Second)
	for e.Status().Restarts < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("the engine retried %d times in 20s", e.Status().Restarts)
		}
		if slotExists(t, conn, name) {
			t.Fatal("the slot was created for a load that cannot succeed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Its own tables stop being writable too (serve's start checks them,
	// but not a revoke once it runs).
	streamtest.Exec(t, conn, fmt.Sprintf(`REVOKE INSERT ON repstream.rows FROM %q`, role))
	for r := e.Status().Restarts; e.Status().Restarts < r+2; {
		if time.Now().After(deadline.Add(20 * time.Second)) {
			t.Fatal("the engine stopped retrying")
		}
		if slotExists(t, conn, name) {
			t.Fatal("the slot was created for a load that cannot succeed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !hasProblem(e, stream.ProblemSourceNotReadable, "public.ratings") || !hasProblem(e, stream.ProblemStoreNotWritable, "") {
		t.Fatalf("problems %v, want %s on public.ratings and %s", e.Problems(), stream.ProblemSourceNotReadable, stream.ProblemStoreNotWritable)
	}
	err := e.Readiness(ctx)
	if err == nil || !strings.Contains(err.Error(), "GRANT") {
		t.Fatalf("readiness %v, want the reason with its fix", err)
	}
	if n := rec.published(); n != 0 {
		t.Fatalf("published %d transactions while the load could not succeed", n)
	}

	streamtest.Exec(t, conn, fmt.Sprintf(`GRANT SELECT ON ratings TO %q`, role))
	time.Sleep(2 * time.Second)
	if slotExists(t, conn, name) || e.Readiness(ctx) == nil {
		t.Fatal("loaded while repstream's own table is not writable")
	}
	streamtest.Exec(t, conn, fmt.Sprintf(`GRANT INSERT ON repstream.rows TO %q`, role))
	waitReadyWithin(t, e, 60*time.Second)
	streamtest.WaitConverged(t, conn, 20*time.Second)
	if got := rec.epochs(); len(got) != 1 || got[0] == old || got[0] != storedEpoch(t, conn) {
		t.Fatalf("resets %v, want one to a new epoch (old %s)", got, old)
	}
	if len(e.Problems()) != 0 {
		t.Fatalf("problems left open: %v", e.Problems())
	}
}

// TestFailedLoadIsRedone: a load that fails after creating the slot (as a
// crash mid-load would) leaves the store marked, so the next session loads
// again instead of streaming from the old checkpoint on the new slot.
func TestFailedLoadIsRedone(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, streamtest.Schema)
	_, stop := startEngine(t, url, name, &recorder{})
	streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating) VALUES (1, 5)`)
	streamtest.WaitConverged(t, conn, 20*time.Second)
	stop()
	old := storedEpoch(t, conn)

	waitSlotInactive(t, conn, name)
	streamtest.Exec(t, conn, `SELECT pg_drop_replication_slot($1)`, name)
	streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating) VALUES (1, 1), (2, 2)`)
	// The load's shadow rows fail at the store, after the slot was made.
	streamtest.Exec(t, conn, `CREATE FUNCTION public.fail() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION 'disk on fire'; END$$;
CREATE TRIGGER fail BEFORE INSERT ON repstream.rows FOR EACH ROW EXECUTE FUNCTION public.fail()`)
	rec := &recorder{}
	e, stop := runEngine(t, url, name, rec)
	defer stop()
	deadline := time.Now().Add(20 * time.Second)
	for e.Status().Restarts < 1 || !slotExists(t, conn, name) {
		if time.Now().After(deadline) {
			t.Fatal("the load never failed after creating the slot")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !hasProblem(e, stream.ProblemLoadFailed, "") {
		t.Fatalf("problems %v, want %s", e.Problems(), stream.ProblemLoadFailed)
	}
	streamtest.Exec(t, conn, `DROP TRIGGER fail ON repstream.rows`)
	waitReadyWithin(t, e, 60*time.Second)
	streamtest.WaitConverged(t, conn, 20*time.Second)
	if got := rec.epochs(); len(got) != 1 || got[0] == old {
		t.Fatalf("resets %v, want one to a new epoch (old %s)", got, old)
	}
}

// TestSlotMovedBehindOurBack: a slot advanced with
// pg_replication_slot_advance, or dropped and re-created, while repstream
// was stopped skipped changes: a new epoch starts and clients reset. A
// plain restart, after the slot advanced over idle WAL, keeps the epoch.
func TestSlotMovedBehindOurBack(t *testing.T) {
	cases := []struct {
		name     string
		sql      []string
		newEpoch bool
	}{
		{"untouched", nil, false},
		{"advanced", []string{`SELECT pg_replication_slot_advance($1, pg_current_wal_lsn())`}, true},
		{"recreated", []string{`SELECT pg_drop_replication_slot($1)`, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			url, name := localpg.NewDatabase(t)
			ctx := context.Background()
			conn := streamtest.Connect(t, url)
			streamtest.Exec(t, conn, streamtest.Schema+`CREATE TABLE noise (payload text);`)
			_, stop := startEngine(t, url, name, &recorder{})
			streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating) VALUES (1, 5)`)
			streamtest.WaitConverged(t, conn, 20*time.Second)
			// Idle WAL: the slot advances over it (its position is stored first).
			streamtest.Exec(t, conn, `INSERT INTO noise SELECT repeat('x', 200) FROM generate_series(1, 20000)`)
			var target string
			streamtest.Exec(t, conn, `SELECT 1`)
			if err := conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&target); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(20 * time.Second)
			for {
				var passed bool
				if err := conn.QueryRow(ctx, `SELECT confirmed_flush_lsn >= $2::pg_lsn FROM pg_replication_slots WHERE slot_name = $1`, name, target).Scan(&passed); err != nil {
					t.Fatal(err)
				}
				if passed {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the slot did not advance over idle WAL")
				}
				time.Sleep(50 * time.Millisecond)
			}
			stop()
			old := storedEpoch(t, conn)
			streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating) VALUES (1, 1), (2, 2)`)
			waitSlotInactive(t, conn, name)
			for _, q := range c.sql {
				streamtest.Exec(t, conn, q, name)
			}
			rec := &recorder{}
			_, stop = startEngine(t, url, name, rec)
			defer stop()
			streamtest.WaitConverged(t, conn, 20*time.Second)
			got := rec.epochs()
			if len(got) != 1 || (got[0] != old) != c.newEpoch {
				t.Fatalf("resets %v (old epoch %s), want one, new epoch: %v", got, old, c.newEpoch)
			}
		})
	}
}

// TestStoreReadErrorNeverReloads: the fingerprint cannot be read (here:
// SELECT on that column revoked). The engine retries; it never starts an
// epoch for it, and goes on in the same epoch once the read works.
func TestStoreReadErrorNeverReloads(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, streamtest.Schema)
	roleURL := replicatorRole(t, conn, url, name)
	role := strings.SplitN(strings.TrimPrefix(roleURL, "postgres://"), "@", 2)[0]
	_, stop := startEngine(t, roleURL, name, &recorder{})
	streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating) VALUES (1, 5)`)
	streamtest.WaitConverged(t, conn, 20*time.Second)
	stop()
	old := storedEpoch(t, conn)

	streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating) VALUES (1, 1), (2, 2)`)
	// serve's start checks SELECT on the store's tables: the column is
	// revoked after that, while the session waits for the meta row.
	lock := streamtest.Connect(t, url)
	streamtest.Exec(t, lock, `BEGIN; LOCK TABLE repstream.meta IN ACCESS EXCLUSIVE MODE`)
	rec := &recorder{}
	e, stop := runEngine(t, roleURL, name, rec)
	defer stop()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var waiting bool
		if err := conn.QueryRow(context.Background(), `SELECT EXISTS (SELECT FROM pg_locks WHERE relation = 'repstream.meta'::regclass AND NOT granted)`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the engine never read the meta row")
		}
		time.Sleep(10 * time.Millisecond)
	}
	streamtest.Exec(t, lock, fmt.Sprintf(`REVOKE SELECT ON repstream.meta FROM %[1]q;
GRANT SELECT (epoch, slot, system_id, timeline, checkpoint_lsn, log_from_lsn, loaded_at) ON repstream.meta TO %[1]q; COMMIT`, role))
	for e.Status().Restarts < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the engine did not retry")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := storedEpoch(t, conn); got != old {
		t.Fatalf("a read error started epoch %s (was %s)", got, old)
	}
	streamtest.Exec(t, conn, fmt.Sprintf(`GRANT SELECT ON repstream.meta TO %q`, role))
	waitReadyWithin(t, e, 60*time.Second)
	streamtest.WaitConverged(t, conn, 20*time.Second)
	if got := rec.epochs(); len(got) != 1 || got[0] != old {
		t.Fatalf("resets %v, want one to the same epoch %s", got, old)
	}
}

// TestShapeChangesStartAnEpoch: a timeline change, a source table dropped
// and re-created (another OID), a new row filter on the publication,
// publish_via_partition_root and other key columns each start a new epoch
// when changed while repstream was stopped; a restart without any keeps it.
func TestShapeChangesStartAnEpoch(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, streamtest.Schema)
	streamtest.Exec(t, conn, fmt.Sprintf(`CREATE PUBLICATION %q FOR TABLE reviews, ratings`, name))
	cases := []struct{ what, sql string }{
		{"nothing", ``},
		{"timeline", `UPDATE repstream.meta SET timeline = timeline + 1`},
		{"table re-created", fmt.Sprintf(`DROP TABLE ratings; CREATE TABLE ratings (user_id int NOT NULL, rater_id int NOT NULL, score int, PRIMARY KEY (user_id, rater_id));
ALTER PUBLICATION %q ADD TABLE ratings`, name)},
		{"row filter", fmt.Sprintf(`ALTER PUBLICATION %q SET TABLE reviews WHERE (rating > 1), ratings`, name)},
		{"publish_via_partition_root", fmt.Sprintf(`ALTER PUBLICATION %q SET (publish_via_partition_root = true)`, name)},
		{"key columns", `ALTER TABLE ratings DROP CONSTRAINT ratings_pkey, ADD PRIMARY KEY (rater_id, user_id)`},
	}
	last := ""
	for _, c := range cases {
		if c.sql != "" {
			streamtest.Exec(t, conn, c.sql)
		}
		rec := &recorder{}
		e, stop := startEngine(t, url, name, rec)
		got := rec.epochs()
		stop()
		_ = e
		if len(got) != 1 {
			t.Fatalf("%s: resets %v, want one", c.what, got)
		}
		if changed := got[0] != last; changed != (c.sql != "" || last == "") {
			t.Errorf("%s: epoch %s after %s: changed %v", c.what, got[0], last, changed)
		}
		last = got[0]
	}
}

// TestSecondEngineWaitsDuringALoad: during a load the slot is inactive; a
// second replicator started then must wait for the first (which holds the
// slot's lock across load and stream), not drop the slot and load itself.
func TestSecondEngineWaitsDuringALoad(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	ctx := context.Background()
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, streamtest.Schema)
	if err := streamtest.Seed(ctx, conn, 300000, 1000); err != nil {
		t.Fatal(err)
	}
	recA := &recorder{}
	a, stopA := runEngine(t, url, name, recA)
	defer stopA()
	deadline := time.Now().Add(30 * time.Second)
	for !slotExists(t, conn, name) {
		if time.Now().After(deadline) {
			t.Fatal("the first engine never created its slot")
		}
		time.Sleep(5 * time.Millisecond)
	}
	recB := &recorder{}
	b, stopB := runEngine(t, url, name, recB, func(c *stream.EngineConfig) {
		c.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError + 1}))
	})
	defer stopB()
	if a.Readiness(ctx) == nil {
		t.Fatal("the first engine finished its load before the second started: seed more rows")
	}
	waitReadyWithin(t, a, 60*time.Second)
	for b.Status().Restarts == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the second engine never tried the slot")
		}
		time.Sleep(20 * time.Millisecond)
	}
	streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating) VALUES (1, 5)`)
	streamtest.WaitConverged(t, conn, 30*time.Second)
	if a.Readiness(ctx) != nil || b.Readiness(ctx) == nil {
		t.Fatalf("first engine: %v, second: %v; want the first ready and the second waiting", a.Readiness(ctx), b.Readiness(ctx))
	}
	if ea, eb := recA.epochs(), recB.epochs(); len(ea) != 1 || len(eb) != 0 || ea[0] != storedEpoch(t, conn) {
		t.Fatalf("first engine's resets %v, second's %v, stored epoch %s", ea, eb, storedEpoch(t, conn))
	}
}

// TestRowLevelSecurityIsRefused: row-level security would hide rows from
// the snapshot but not from the stream. The load is refused with the fix
// before the slot is made, and goes ahead once the role bypasses it.
func TestRowLevelSecurityIsRefused(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, streamtest.Schema)
	streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating) VALUES (1, 5), (2, 4)`)
	roleURL := replicatorRole(t, conn, url, name)
	role := strings.SplitN(strings.TrimPrefix(roleURL, "postgres://"), "@", 2)[0]
	streamtest.Exec(t, conn, fmt.Sprintf(`ALTER TABLE reviews ENABLE ROW LEVEL SECURITY; CREATE POLICY only1 ON reviews TO %q USING (seller_id = 1)`, role))
	e, stop := runEngine(t, roleURL, name, &recorder{})
	defer stop()
	deadline := time.Now().Add(20 * time.Second)
	for !hasProblem(e, stream.ProblemSourceNotReadable, "public.reviews") {
		if time.Now().After(deadline) {
			t.Fatalf("problems %v, want %s on public.reviews", e.Problems(), stream.ProblemSourceNotReadable)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := e.Readiness(context.Background()); err == nil || !strings.Contains(err.Error(), "BYPASSRLS") {
		t.Fatalf("readiness %v, want the reason with its fix", err)
	}
	if slotExists(t, conn, name) {
		t.Fatal("the slot was created for a load that cannot succeed")
	}
	streamtest.Exec(t, conn, fmt.Sprintf(`ALTER ROLE %q BYPASSRLS`, role))
	waitReadyWithin(t, e, 60*time.Second)
	streamtest.WaitConverged(t, conn, 20*time.Second)
}

// TestUpgradeFromAStoreWithoutShape: a store an older version wrote has no
// shape fingerprint, and its slot may be confirmed past the checkpoint
// (that version confirmed idle positions without storing them). That is no
// proof of skipped changes: the epoch stays, now and on later starts.
func TestUpgradeFromAStoreWithoutShape(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	ctx := context.Background()
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, streamtest.Schema+`CREATE TABLE noise (payload text);`)
	_, stop := startEngine(t, url, name, &recorder{})
	streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating) VALUES (1, 5)`)
	streamtest.WaitConverged(t, conn, 20*time.Second)
	stop()
	old := storedEpoch(t, conn)
	// As the older version left it: idle WAL confirmed, not stored.
	streamtest.Exec(t, conn, `INSERT INTO noise SELECT repeat('x', 200) FROM generate_series(1, 1000)`)
	waitSlotInactive(t, conn, name)
	streamtest.Exec(t, conn, `SELECT pg_replication_slot_advance($1, pg_current_wal_lsn())`, name)
	streamtest.Exec(t, conn, `UPDATE repstream.meta SET shape_hash = NULL`)
	for i := 0; i < 2; i++ {
		rec := &recorder{}
		_, stop := startEngine(t, url, name, rec)
		streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating) VALUES (2, 4)`)
		streamtest.WaitConverged(t, conn, 20*time.Second)
		stop()
		if got := rec.epochs(); len(got) != 1 || got[0] != old {
			t.Fatalf("start %d after the upgrade: resets %v, want the same epoch %s", i+1, got, old)
		}
		waitSlotInactive(t, conn, name)
	}
	var shape *string
	var behind bool
	if err := conn.QueryRow(ctx, `SELECT m.shape_hash, s.confirmed_flush_lsn > m.checkpoint_lsn FROM repstream.meta m, pg_replication_slots s WHERE s.slot_name = $1`, name).Scan(&shape, &behind); err != nil {
		t.Fatal(err)
	}
	if shape == nil || behind {
		t.Fatalf("after the upgrade: shape %v, checkpoint behind the slot %v", shape, behind)
	}
}

// TestSchemaWithoutUsageIsRefused: table privileges say nothing of the
// schema; without USAGE on it the snapshot would fail. The load is refused
// with the GRANT before the slot is made, and goes ahead once granted.
func TestSchemaWithoutUsageIsRefused(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, streamtest.Schema)
	streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating) VALUES (1, 5)`)
	roleURL := replicatorRole(t, conn, url, name)
	role := strings.SplitN(strings.TrimPrefix(roleURL, "postgres://"), "@", 2)[0]
	// golang-migrate needs a current schema: repstream's own.
	streamtest.Exec(t, conn, fmt.Sprintf(`REVOKE USAGE ON SCHEMA public FROM PUBLIC; CREATE SCHEMA repstream AUTHORIZATION %[1]q;
ALTER ROLE %[1]q SET search_path = repstream`, role))
	e, stop := runEngine(t, roleURL, name, &recorder{})
	defer stop()
	deadline := time.Now().Add(20 * time.Second)
	for !hasProblem(e, stream.ProblemSourceNotReadable, "public.reviews") {
		if time.Now().After(deadline) {
			t.Fatalf("problems %v, want %s on public.reviews", e.Problems(), stream.ProblemSourceNotReadable)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := e.Readiness(context.Background()); err == nil || !strings.Contains(err.Error(), "GRANT USAGE ON SCHEMA") {
		t.Fatalf("readiness %v, want the reason with its fix", err)
	}
	if slotExists(t, conn, name) {
		t.Fatal("the slot was created for a load that cannot succeed")
	}
	streamtest.Exec(t, conn, fmt.Sprintf(`GRANT USAGE ON SCHEMA public TO %q`, role))
	waitReadyWithin(t, e, 60*time.Second)
	streamtest.WaitConverged(t, conn, 20*time.Second)
}

// TestReadyWithoutReadAllStats: a role without pg_read_all_stats sees no
// sent_lsn in pg_stat_replication; the engine still becomes ready.
func TestReadyWithoutReadAllStats(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, streamtest.Schema)
	roleURL := replicatorRole(t, conn, url, name)
	role := strings.SplitN(strings.TrimPrefix(roleURL, "postgres://"), "@", 2)[0]
	streamtest.Exec(t, conn, fmt.Sprintf(`REVOKE pg_read_all_stats FROM %q`, role))
	e, stop := runEngine(t, roleURL, name, &recorder{})
	defer stop()
	waitReadyWithin(t, e, 30*time.Second)
	streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating) VALUES (1, 5)`)
	streamtest.WaitConverged(t, conn, 20*time.Second)
	waitReadyWithin(t, e, 10*time.Second)
}
