package stream_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/repstream/repstream/cdc/localpg"
	"github.com/repstream/repstream/stream"
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

const demoSchema = `
CREATE TABLE reviews (
  id bigserial PRIMARY KEY,
  seller_id int,
  rating numeric(3,1),
  status text NOT NULL DEFAULT 'published',
  body text
);
CREATE TABLE ratings (
  user_id int NOT NULL,
  rater_id int NOT NULL,
  score int,
  PRIMARY KEY (user_id, rater_id)
);`

func demoSources() []stream.Source {
	return []stream.Source{
		{Table: "public.reviews", Subject: "seller:{seller_id}", Score: "rating", Scale: []float64{1, 5}, Where: map[string]any{"status": "published"}},
		{Table: "public.ratings", Subject: "user:{user_id}", Score: "score", Scale: []float64{0, 10}},
	}
}

// recompute is the SQL truth the derived state must equal.
const recompute = `
SELECT subject, count(*)::bigint, (sum(score) * 1000000)::bigint FROM (
  SELECT 'seller:' || seller_id AS subject, rating AS score FROM reviews
   WHERE status = 'published' AND seller_id IS NOT NULL AND rating BETWEEN 1 AND 5
  UNION ALL
  SELECT 'user:' || user_id, score FROM ratings WHERE score BETWEEN 0 AND 10
) s GROUP BY subject`

type fig struct {
	count int64
	sum   int64
}

func truth(t testing.TB, conn *pgx.Conn) map[string]fig {
	t.Helper()
	rows, err := conn.Query(context.Background(), recompute)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]fig{}
	for rows.Next() {
		var s string
		var f fig
		if err := rows.Scan(&s, &f.count, &f.sum); err != nil {
			t.Fatal(err)
		}
		out[s] = f
	}
	return out
}

func derived(t testing.TB, conn *pgx.Conn) map[string]fig {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT subject, count, (sum * 1000000)::bigint FROM repstream.reputation WHERE count <> 0`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]fig{}
	for rows.Next() {
		var s string
		var f fig
		if err := rows.Scan(&s, &f.count, &f.sum); err != nil {
			t.Fatal(err)
		}
		out[s] = f
	}
	return out
}

func diff(a, b map[string]fig) string {
	for k, v := range a {
		if b[k] != v {
			return fmt.Sprintf("%s: derived %+v, truth %+v", k, b[k], v)
		}
	}
	for k, v := range b {
		if a[k] != v {
			return fmt.Sprintf("%s: derived %+v, truth %+v", k, v, a[k])
		}
	}
	return ""
}

// waitConverged waits until the derived state equals the SQL truth.
func waitConverged(t testing.TB, conn *pgx.Conn, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		d := diff(truth(t, conn), derived(t, conn))
		if d == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("derived state did not converge: %s", d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func exec(t testing.TB, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func startEngine(t *testing.T, url, name string, pub stream.Publisher) (*stream.Engine, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	e, err := stream.NewEngine(ctx, stream.EngineConfig{
		DatabaseURL: url, Slot: name, Publication: name, CreatePublication: true,
		Sources: demoSources(), Prior: stream.Prior{Mean: 3.5, Weight: 10},
		Heartbeat: 200 * time.Millisecond, StatusInterval: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}, pub)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for !e.Ready() {
		select {
		case err := <-done:
			t.Fatalf("engine stopped before it was ready: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("engine not ready after 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return e, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("engine: %v", err)
		}
		e.Close()
	}
}

func TestEngineFoldsEveryKindOfChange(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	exec(t, conn, demoSchema)
	// Pre-existing rows come from the snapshot.
	exec(t, conn, `INSERT INTO reviews (seller_id, rating, status) SELECT i % 5, 1 + i % 5, CASE WHEN i % 7 = 0 THEN 'hidden' ELSE 'published' END FROM generate_series(1, 200) i`)
	exec(t, conn, `INSERT INTO ratings SELECT i % 3, i, i % 11 FROM generate_series(1, 50) i`)

	rec := &recorder{}
	_, stop := startEngine(t, url, name, rec)
	defer stop()
	waitConverged(t, conn, 20*time.Second)

	exec(t, conn, `INSERT INTO reviews (seller_id, rating) VALUES (1, 5), (1, 4), (9, 2)`)
	exec(t, conn, `UPDATE reviews SET rating = 1 WHERE id = 3`)                // score change
	exec(t, conn, `UPDATE reviews SET seller_id = 7 WHERE id = 4`)             // moves to another subject
	exec(t, conn, `UPDATE reviews SET status = 'hidden' WHERE id = 5`)         // out of the filter
	exec(t, conn, `UPDATE reviews SET status = 'published' WHERE id = 7`)      // into the filter
	exec(t, conn, `UPDATE reviews SET body = repeat('x', 100000) WHERE id = 8`) // TOASTed body
	exec(t, conn, `UPDATE reviews SET status = 'hidden' WHERE id = 8`)         // TOAST unchanged
	exec(t, conn, `UPDATE reviews SET id = 10000 WHERE id = 9`)                // key change
	exec(t, conn, `DELETE FROM reviews WHERE id IN (10, 11, 12)`)
	exec(t, conn, `UPDATE ratings SET user_id = 5 WHERE user_id = 1 AND rater_id = 1`) // composite key change
	exec(t, conn, `BEGIN; INSERT INTO reviews (seller_id, rating) VALUES (1, 5); ROLLBACK`)
	exec(t, conn, `BEGIN; INSERT INTO reviews (seller_id, rating) VALUES (2, 5); UPDATE reviews SET rating = 2 WHERE seller_id = 2; COMMIT`)
	waitConverged(t, conn, 20*time.Second)
	exec(t, conn, `TRUNCATE ratings`)
	exec(t, conn, `INSERT INTO ratings VALUES (1, 1, 10)`)
	waitConverged(t, conn, 20*time.Second)

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
