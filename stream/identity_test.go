package stream_test

import (
	"context"
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

// itemsSource is the one source of the identity tests: table items with a
// subject column seller, a score rating and a boolean filter.
func itemsSource(c *stream.EngineConfig) {
	c.Sources = []stream.Source{{Table: "items", Subject: "seller:{seller}", Score: "rating", Scale: []float64{1, 5}}}
	c.SchemaCheck = 100 * time.Millisecond
}

const itemsTruth = `SELECT 'seller:' || seller, count(*)::bigint, (sum(rating) * 1000000)::bigint FROM items
WHERE seller IS NOT NULL AND rating BETWEEN 1 AND 5 GROUP BY 1`

func waitItems(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(20 * time.Second)
	last := ""
	for {
		truth, err := streamtest.Figures(ctx, conn, itemsTruth)
		if err != nil {
			t.Fatal(err)
		}
		derived, err := streamtest.Derived(ctx, conn)
		if err != nil {
			t.Fatal(err)
		}
		if last = streamtest.Diff(truth, derived); last == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not converged: %s", last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPrimaryKeyChangeReloads: after DROP CONSTRAINT ..., ADD PRIMARY KEY
// (other columns), rows are followed by the new key (the recipe
// counted 4 where SQL says 2).
func TestPrimaryKeyChangeReloads(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, `CREATE TABLE items (id int PRIMARY KEY, code int NOT NULL, seller int, rating int);
CREATE PUBLICATION "`+name+`" FOR TABLE items;
INSERT INTO items VALUES (1, 10, 1, 5), (2, 20, 1, 3)`)
	rec := &recorder{}
	e, stop := startEngine(t, url, name, rec, itemsSource)
	defer stop()
	waitItems(t, conn)
	streamtest.Exec(t, conn, `ALTER TABLE items DROP CONSTRAINT items_pkey, ADD PRIMARY KEY (code)`)
	streamtest.Exec(t, conn, `UPDATE items SET id = 7, rating = 4 WHERE code = 10`)
	streamtest.Exec(t, conn, `UPDATE items SET id = 8 WHERE code = 20`)
	streamtest.Exec(t, conn, `INSERT INTO items VALUES (1, 30, 1, 1)`)
	streamtest.Exec(t, conn, `DELETE FROM items WHERE code = 30`)
	waitProblemOrReset(t, e, rec, 2)
	waitReady(t, e)
	waitItems(t, conn)
	streamtest.Exec(t, conn, `UPDATE items SET id = 9 WHERE code = 10`)
	streamtest.Exec(t, conn, `DELETE FROM items WHERE code = 20`)
	waitItems(t, conn)
}

// waitProblemOrReset waits for the n-th reset (a reload).
func waitProblemOrReset(t *testing.T, e *stream.Engine, rec *recorder, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		rec.mu.Lock()
		got := len(rec.resets)
		rec.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d resets, want %d; problems %+v", got, n, e.Problems())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReplicaIdentityUsingIndex: the identity is the index's columns, so
// deletes and key changes through it give exact deltas, without a restart.
func TestReplicaIdentityUsingIndex(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, `CREATE TABLE items (id int PRIMARY KEY, ext uuid NOT NULL UNIQUE, seller int, rating int);
ALTER TABLE items REPLICA IDENTITY USING INDEX items_ext_key;
INSERT INTO items SELECT i, gen_random_uuid(), i % 3, 1 + i % 5 FROM generate_series(1, 30) i`)
	e, stop := startEngine(t, url, name, &recorder{}, itemsSource)
	defer stop()
	waitItems(t, conn)
	streamtest.Exec(t, conn, `DELETE FROM items WHERE id % 4 = 0`)
	streamtest.Exec(t, conn, `UPDATE items SET rating = 1 WHERE id % 3 = 0`)
	streamtest.Exec(t, conn, `UPDATE items SET ext = gen_random_uuid(), seller = 7 WHERE id % 5 = 0`)
	streamtest.Exec(t, conn, `UPDATE items SET id = id + 100 WHERE id % 7 = 0`)
	streamtest.Exec(t, conn, `INSERT INTO items VALUES (1000, gen_random_uuid(), 2, 5)`)
	streamtest.Exec(t, conn, `DELETE FROM items WHERE id = 1000`)
	waitItems(t, conn)
	if n := e.Status().Restarts; n != 0 {
		t.Fatalf("%d restarts with REPLICA IDENTITY USING INDEX", n)
	}
}

// TestReplicaIdentityFull: a FULL table is published without a column
// list, so the application's UPDATE and DELETE keep working after a column
// is added; and keys swapped under a DEFERRABLE primary key stay exact.
func TestReplicaIdentityFull(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, `CREATE TABLE items (id int PRIMARY KEY DEFERRABLE, seller int, rating int, note text);
ALTER TABLE items REPLICA IDENTITY FULL;
INSERT INTO items SELECT i, i % 3, 1 + i % 5, 'x' FROM generate_series(1, 20) i`)
	rec := &recorder{}
	e, stop := startEngine(t, url, name, rec, itemsSource)
	defer stop()
	waitItems(t, conn)
	streamtest.Exec(t, conn, `ALTER TABLE items ADD COLUMN extra int`)
	streamtest.Exec(t, conn, `UPDATE items SET rating = 2, extra = 1 WHERE id = 1`) // rejected with a column list
	streamtest.Exec(t, conn, `DELETE FROM items WHERE id = 2`)
	waitItems(t, conn)
	// Swaps in one statement, and over several under deferred constraints.
	streamtest.Exec(t, conn, `UPDATE items SET id = CASE id WHEN 3 THEN 4 ELSE 3 END WHERE id IN (3, 4)`)
	streamtest.Exec(t, conn, `UPDATE items SET id = CASE id WHEN 5 THEN 6 WHEN 6 THEN 7 ELSE 5 END WHERE id IN (5, 6, 7)`)
	// Rows 8 (seller 2, rating 4) and 9 (seller 0, rating 5) share key 9 for a while.
	streamtest.Exec(t, conn, `BEGIN; SET CONSTRAINTS ALL DEFERRED;
UPDATE items SET id = 9 WHERE id = 8;
UPDATE items SET rating = 1 WHERE id = 9 AND seller = 2;
UPDATE items SET seller = 5 WHERE id = 9 AND seller = 0;
UPDATE items SET id = 8 WHERE id = 9 AND seller = 5;
DELETE FROM items WHERE id = 10;
INSERT INTO items VALUES (10, 4, 4, 'y');
COMMIT`)
	waitItems(t, conn)
	if n := e.Status().Restarts; n != 0 {
		t.Fatalf("%d restarts", n)
	}
}

// TestDeferrableKeyNeedsFull: with a DEFERRABLE primary key and DEFAULT
// identity Postgres rejects the application's UPDATE once published; the
// start is refused with the fix.
func TestDeferrableKeyNeedsFull(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, `CREATE TABLE items (id int PRIMARY KEY DEFERRABLE, seller int, rating int)`)
	cfg := stream.EngineConfig{DatabaseURL: url, Slot: name, Publication: name, CreatePublication: true,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))}
	itemsSource(&cfg)
	e, err := stream.NewEngine(context.Background(), cfg, &recorder{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	err = e.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), `ALTER TABLE "public"."items" REPLICA IDENTITY FULL`) {
		t.Fatalf("got %v, want a refusal with the fix", err)
	}
}

// TestKeyChangeKeepsAppWrites: under the publication repstream created, a
// new primary key outside its column list would make Postgres reject the
// application's UPDATE; repstream publishes the table again with the new
// key, and reloads.
func TestKeyChangeKeepsAppWrites(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, `CREATE TABLE items (id int PRIMARY KEY, code int NOT NULL, seller int, rating int);
INSERT INTO items VALUES (1, 10, 1, 5), (2, 20, 1, 3)`)
	rec := &recorder{}
	e, stop := startEngine(t, url, name, rec, itemsSource)
	defer stop()
	waitItems(t, conn)
	streamtest.Exec(t, conn, `ALTER TABLE items DROP CONSTRAINT items_pkey, ADD PRIMARY KEY (code)`)
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := conn.Exec(context.Background(), `UPDATE items SET rating = 4 WHERE code = 10`)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the application's UPDATE is still rejected: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	streamtest.Exec(t, conn, `UPDATE items SET id = 8 WHERE code = 20`)
	streamtest.Exec(t, conn, `DELETE FROM items WHERE code = 10`)
	waitProblemOrReset(t, e, rec, 2)
	waitReady(t, e)
	waitItems(t, conn)
}

// TestFullIdentityLaterKeepsAppWrites: a source switched to REPLICA
// IDENTITY FULL under the publication repstream created (a column list)
// would have the application's UPDATE rejected; repstream publishes it
// again without a column list, and reloads.
func TestFullIdentityLaterKeepsAppWrites(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, `CREATE TABLE items (id int PRIMARY KEY, seller int, rating int, note text);
INSERT INTO items VALUES (1, 1, 5, 'a'), (2, 1, 3, 'b')`)
	rec := &recorder{}
	e, stop := startEngine(t, url, name, rec, itemsSource)
	defer stop()
	waitItems(t, conn)
	streamtest.Exec(t, conn, `ALTER TABLE items REPLICA IDENTITY FULL`)
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := conn.Exec(context.Background(), `UPDATE items SET rating = 4 WHERE id = 1`)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the application's UPDATE is still rejected: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	streamtest.Exec(t, conn, `DELETE FROM items WHERE id = 2`)
	waitProblemOrReset(t, e, rec, 2)
	waitReady(t, e)
	waitItems(t, conn)
}
