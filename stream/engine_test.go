package stream_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/repstream/repstream/cdc/localpg"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/streamtest"
)

func TestMain(m *testing.M) { os.Exit(localpg.Main(m)) }

// recorder is a Publisher that keeps everything it is given.
type recorder struct {
	mu     sync.Mutex
	head   stream.LSN
	txns   []stream.Txn
	resets []stream.Meta
}

func (r *recorder) Publish(head stream.LSN, txns []stream.Txn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.head = head
	r.txns = append(r.txns, txns...)
}

func (r *recorder) Reset(m stream.Meta) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.resets = append(r.resets, m)
}

// startEngine starts an engine (see runEngine) and waits until it is ready.
func startEngine(t *testing.T, url, name string, pub stream.Publisher, opts ...func(*stream.EngineConfig)) (*stream.Engine, func()) {
	t.Helper()
	e, stop := runEngine(t, url, name, pub, opts...)
	waitReadyWithin(t, e, 30*time.Second)
	return e, stop
}

func TestEngineFoldsEveryKindOfChange(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, streamtest.Schema)
	// Pre-existing rows come from the snapshot.
	streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating, status) SELECT i % 5, 1 + i % 5, CASE WHEN i % 7 = 0 THEN 'hidden' ELSE 'published' END FROM generate_series(1, 200) i`)
	streamtest.Exec(t, conn, `INSERT INTO ratings SELECT i % 3, i, i % 11 FROM generate_series(1, 50) i`)

	rec := &recorder{}
	_, stop := startEngine(t, url, name, rec)
	defer stop()
	streamtest.WaitConverged(t, conn, 20*time.Second)

	streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating) VALUES (1, 5), (1, 4), (9, 2)`)
	streamtest.Exec(t, conn, `UPDATE reviews SET rating = 1 WHERE id = 3`)                 // score change
	streamtest.Exec(t, conn, `UPDATE reviews SET seller_id = 7 WHERE id = 4`)              // moves to another subject
	streamtest.Exec(t, conn, `UPDATE reviews SET status = 'hidden' WHERE id = 5`)          // out of the filter
	streamtest.Exec(t, conn, `UPDATE reviews SET status = 'published' WHERE id = 7`)       // into the filter
	streamtest.Exec(t, conn, `UPDATE reviews SET body = repeat('x', 100000) WHERE id = 8`) // TOASTed body
	streamtest.Exec(t, conn, `UPDATE reviews SET status = 'hidden' WHERE id = 8`)          // TOAST unchanged
	streamtest.Exec(t, conn, `UPDATE reviews SET id = 10000 WHERE id = 9`)                 // key change
	streamtest.Exec(t, conn, `DELETE FROM reviews WHERE id IN (10, 11, 12)`)
	streamtest.Exec(t, conn, `UPDATE ratings SET user_id = 5 WHERE user_id = 1 AND rater_id = 1`) // composite key change
	streamtest.Exec(t, conn, `BEGIN; INSERT INTO reviews (seller_id, rating) VALUES (1, 5); ROLLBACK`)
	streamtest.Exec(t, conn, `BEGIN; INSERT INTO reviews (seller_id, rating) VALUES (2, 5); UPDATE reviews SET rating = 2 WHERE seller_id = 2; COMMIT`)
	streamtest.WaitConverged(t, conn, 20*time.Second)
	streamtest.Exec(t, conn, `TRUNCATE ratings`)
	streamtest.Exec(t, conn, `INSERT INTO ratings VALUES (1, 1, 10)`)
	streamtest.WaitConverged(t, conn, 20*time.Second)

	// One delta per subject per transaction, versions contiguous.
	rec.mu.Lock()
	defer rec.mu.Unlock()
	seen := map[string]bool{}
	last := map[string]int64{}
	var prev stream.LSN
	for _, tx := range rec.txns {
		if tx.LSN <= prev {
			t.Fatalf("txns out of order: %s after %s", tx.LSN, prev)
		}
		prev = tx.LSN
		for _, d := range tx.Deltas {
			k := d.Subject + "@" + d.LSN.String()
			if seen[k] {
				t.Fatalf("delta %s twice", k)
			}
			seen[k] = true
			if v, ok := last[d.Subject]; ok && d.Version != v+1 {
				t.Fatalf("%s: version %d after %d", d.Subject, d.Version, v)
			}
			last[d.Subject] = d.Version
		}
	}
	if len(rec.txns) < 10 {
		t.Fatalf("got %d transactions with deltas, want at least 10", len(rec.txns))
	}
	if len(rec.resets) != 1 {
		t.Fatalf("got %d resets, want 1 (the first load)", len(rec.resets))
	}
}

// TestEngineRefusesWhatCannotWork: a missing table, a table without a
// primary key and a missing column are refused at start with the key named.
func TestEngineRefusesWhatCannotWork(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	ctx := context.Background()
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, `CREATE TABLE nokey (seller_id int, rating int); CREATE TABLE reviews (id int PRIMARY KEY, seller_id int, rating int)`)
	good := stream.Source{Table: "reviews", Subject: "s:{seller_id}", Score: "rating", Scale: []float64{1, 5}}
	cases := []struct {
		src      stream.Source
		noPubDDL bool // the publication is missing and may not be created
		want     string
	}{
		{stream.Source{Table: "public.missing", Subject: "s:{a}", Score: "b", Scale: []float64{1, 5}}, false, "sources[0].table: table public.missing does not exist"},
		{stream.Source{Table: "nokey", Subject: "s:{seller_id}", Score: "rating", Scale: []float64{1, 5}}, false, "sources[0].table: table public.nokey has no primary key"},
		{stream.Source{Table: "reviews", Subject: "s:{seller}", Score: "rating", Scale: []float64{1, 5}}, false, `sources[0]: column "seller" does not exist`},
		{good, true, `it does not exist. Fix (as the publication's owner): CREATE PUBLICATION "` + name + `" FOR TABLE "public"."reviews" ("id", "rating", "seller_id")`},
	}
	var version int
	if err := conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&version); err != nil {
		t.Fatal(err)
	}
	if version < 150000 { // no column lists: the whole table is published
		cases[3].want = `it does not exist. Fix (as the publication's owner): CREATE PUBLICATION "` + name + `" FOR TABLE "public"."reviews" WITH`
	}
	for _, c := range cases {
		e, err := stream.NewEngine(ctx, stream.EngineConfig{DatabaseURL: url, Slot: name, Publication: name,
			CreatePublication: !c.noPubDDL, Sources: []stream.Source{c.src},
			Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))}, &recorder{})
		if err != nil {
			t.Fatal(err)
		}
		err = e.Run(ctx)
		e.Close()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error containing %q", c.src.Table, err, c.want)
		}
	}
	var slots int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, name).Scan(&slots); err != nil || slots != 0 {
		t.Fatalf("a refused start left %d slots (err %v)", slots, err)
	}
}

// TestTinyCachesStayExact runs with caches far smaller than a transaction,
// so rows and states are evicted while their changes are still pending.
func TestTinyCachesStayExact(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	ctx := context.Background()
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, streamtest.Schema)
	if err := streamtest.Seed(ctx, conn, 3000, 300); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	e, err := stream.NewEngine(cctx, stream.EngineConfig{
		DatabaseURL: url, Slot: name, Publication: name, CreatePublication: true,
		Sources: streamtest.Sources(), Prior: stream.Prior{Mean: 3.5, Weight: 10},
		Applier: stream.ApplierConfig{CacheRows: 50, CacheStates: 5, MaxGroupChanges: 300},
		Logger:  slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}, &recorder{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.Run(cctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		e.Close()
	}()
	// One transaction touching every row three times, then a random mix.
	streamtest.Exec(t, conn, `BEGIN;
UPDATE reviews SET rating = 6 - rating;
UPDATE reviews SET seller_id = seller_id + 1 WHERE id % 3 = 0;
UPDATE reviews SET status = 'published' WHERE id % 5 = 0;
DELETE FROM reviews WHERE id % 11 = 0;
COMMIT`)
	wl := streamtest.NewWorkload(3)
	for i := 0; i < 300; i++ {
		if err := wl.Step(ctx, conn); err != nil {
			t.Fatal(err)
		}
	}
	streamtest.WaitConverged(t, conn, 60*time.Second)
	streamtest.CheckLog(t, conn)
	if n := e.Status().Restarts; n != 0 {
		t.Fatalf("replication restarted %d times; an exact pipeline never needs to", n)
	}
}

// TestSchemaChangesMidStream adds and drops columns of a source table while
// the engine streams: Postgres re-sends the Relation and decoding goes on.
func TestSchemaChangesMidStream(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, streamtest.Schema)
	e, stop := startEngine(t, url, name, &recorder{})
	defer stop()
	streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating) VALUES (1, 5), (1, 3), (2, 4)`)
	streamtest.Exec(t, conn, `ALTER TABLE reviews ADD COLUMN helpful int DEFAULT 0`)
	streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating, helpful) VALUES (1, 1, 7)`)
	streamtest.Exec(t, conn, `UPDATE reviews SET rating = 2, helpful = 3 WHERE id = 1`)
	streamtest.Exec(t, conn, `ALTER TABLE reviews DROP COLUMN body`)
	streamtest.Exec(t, conn, `UPDATE reviews SET seller_id = 2 WHERE id = 2`)
	streamtest.Exec(t, conn, `DELETE FROM reviews WHERE id = 3`)
	streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating) VALUES (2, 4.5)`)
	streamtest.WaitConverged(t, conn, 20*time.Second)
	if n := e.Status().Restarts; n != 0 {
		t.Fatalf("replication restarted %d times across the schema changes", n)
	}
}

// TestSecondEngineWaitsForTheSlot runs two engines on one slot: the second
// is refused ("active for PID"), keeps retrying, and takes over exactly
// where the first stopped.
func TestSecondEngineWaitsForTheSlot(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	ctx := context.Background()
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, streamtest.Schema)
	_, stopA := startEngine(t, url, name, &recorder{})
	streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating) VALUES (1, 5)`)
	streamtest.WaitConverged(t, conn, 20*time.Second)

	bctx, cancelB := context.WithCancel(ctx)
	recB := &recorder{}
	b, err := stream.NewEngine(bctx, stream.EngineConfig{DatabaseURL: url, Slot: name, Publication: name,
		Sources: streamtest.Sources(), Prior: stream.Prior{Mean: 3.5, Weight: 10}, StatusInterval: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError + 1}))}, recB)
	if err != nil {
		t.Fatal(err)
	}
	doneB := make(chan error, 1)
	go func() { doneB <- b.Run(bctx) }()
	defer func() {
		cancelB()
		if err := <-doneB; err != nil {
			t.Error(err)
		}
		b.Close()
	}()
	deadline := time.Now().Add(20 * time.Second)
	for b.Status().Restarts == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the second engine never tried the slot")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if b.Readiness(context.Background()) == nil {
		t.Fatal("the second engine is ready while the first holds the slot")
	}
	// A standby says whom it waits for, and announces nothing: its Reset
	// would tell serving nodes about a stream it does not hold.
	for b.Status().WaitingFor == "" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if w := b.Status().WaitingFor; !strings.Contains(w, fmt.Sprintf("pid %d", os.Getpid())) {
		t.Errorf("standby waits for %q, want the holder's application_name naming pid %d", w, os.Getpid())
	}
	recB.mu.Lock()
	early := len(recB.resets)
	recB.mu.Unlock()
	if early != 0 {
		t.Errorf("the standby published %d Resets before it held the slot", early)
	}
	stopA()
	streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating) VALUES (1, 1), (2, 3)`)
	for b.Readiness(context.Background()) != nil {
		if time.Now().After(deadline.Add(40 * time.Second)) {
			t.Fatal("the second engine did not take over")
		}
		time.Sleep(50 * time.Millisecond)
	}
	streamtest.WaitConverged(t, conn, 30*time.Second)
	streamtest.CheckLog(t, conn)
	recB.mu.Lock()
	resets := len(recB.resets)
	recB.mu.Unlock()
	if resets != 1 || b.Status().WaitingFor != "" {
		t.Errorf("after the takeover: %d Resets (want 1), waiting for %q", resets, b.Status().WaitingFor)
	}
}

// With store.database_url, repstream's schema lives in another database:
// the source gets nothing but the slot, and the derived state is exact,
// across a restart too.
func TestStoreInAnotherDatabase(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	storeURL, _ := localpg.NewDatabase(t)
	ctx := context.Background()
	src := streamtest.Connect(t, url)
	store := streamtest.Connect(t, storeURL)
	streamtest.Exec(t, src, streamtest.Schema)
	if err := streamtest.Seed(ctx, src, 200, 100); err != nil {
		t.Fatal(err)
	}
	withStore := func(c *stream.EngineConfig) { c.StoreURL = storeURL }
	first, stop := startEngine(t, url, name, &recorder{}, withStore)
	epoch := first.Status().Meta.Epoch
	w := streamtest.NewWorkload(1)
	for range 200 {
		if err := w.Step(ctx, src); err != nil {
			t.Fatal(err)
		}
	}
	streamtest.WaitConvergedIn(t, src, store, 30*time.Second)
	stop()
	for range 100 {
		if err := w.Step(ctx, src); err != nil {
			t.Fatal(err)
		}
	}
	e, stop := startEngine(t, url, name, &recorder{}, withStore)
	defer stop()
	streamtest.WaitConvergedIn(t, src, store, 30*time.Second)
	if got := e.Status().Meta.Epoch; got != epoch || got == "" {
		t.Fatalf("epoch %q after restart, want %q resumed", got, epoch)
	}
	var inSource bool
	if err := src.QueryRow(ctx, `SELECT to_regnamespace('repstream') IS NOT NULL`).Scan(&inSource); err != nil {
		t.Fatal(err)
	}
	if inSource {
		t.Fatal("schema repstream was created in the source database")
	}
	streamtest.CheckLog(t, store)
}
