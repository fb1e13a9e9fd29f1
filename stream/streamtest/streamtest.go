// Package streamtest holds what every end-to-end test of the pipeline needs:
// a two-table schema, its sources, a seeded randomized workload, and the SQL
// recomputation the derived state must equal.
package streamtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/repstream/repstream/stream"
)

// Schema creates the two source tables: reviews (bigserial key, filtered by
// status) and ratings (composite key).
const Schema = `
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

// Sources maps Schema's tables to subjects.
func Sources() []stream.Source {
	return []stream.Source{
		{Table: "public.reviews", Subject: "seller:{seller_id}", Score: "rating", Scale: []float64{1, 5}, Where: map[string]any{"status": "published"}},
		{Table: "public.ratings", Subject: "user:{user_id}", Score: "score", Scale: []float64{0, 10}},
	}
}

// SourcesYAML is Sources in the configuration file's form.
const SourcesYAML = `sources:
  - table: public.reviews
    subject: "seller:{seller_id}"
    score: rating
    scale: [1, 5]
    where: { status: published }
  - table: public.ratings
    subject: "user:{user_id}"
    score: score
    scale: [0, 10]
`

// recompute is the SQL truth the derived state must equal.
const recompute = `
SELECT subject, count(*)::bigint, (sum(score) * 1000000)::bigint FROM (
  SELECT 'seller:' || seller_id AS subject, rating AS score FROM reviews
   WHERE status = 'published' AND seller_id IS NOT NULL AND rating BETWEEN 1 AND 5
  UNION ALL
  SELECT 'user:' || user_id, score FROM ratings WHERE score BETWEEN 0 AND 10
) s GROUP BY subject`

// Fig is a subject's count and sum in millionths.
type Fig struct {
	Count int64
	Sum   int64
}

func figures(ctx context.Context, conn *pgx.Conn, q string) (map[string]Fig, error) {
	rows, err := conn.Query(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]Fig{}
	for rows.Next() {
		var s string
		var f Fig
		if err := rows.Scan(&s, &f.Count, &f.Sum); err != nil {
			return nil, err
		}
		out[s] = f
	}
	return out, rows.Err()
}

// Figures reads (subject, count, sum in millionths) rows of query q.
func Figures(ctx context.Context, conn *pgx.Conn, q string) (map[string]Fig, error) {
	return figures(ctx, conn, q)
}

// Truth recomputes every subject's figures from the source tables.
func Truth(ctx context.Context, conn *pgx.Conn) (map[string]Fig, error) {
	return figures(ctx, conn, recompute)
}

// Derived reads repstream.reputation (subjects with no ratings left are omitted).
func Derived(ctx context.Context, conn *pgx.Conn) (map[string]Fig, error) {
	return figures(ctx, conn, `SELECT subject, count, (sum * 1000000)::bigint FROM repstream.reputation WHERE count <> 0`)
}

// Diff describes the first difference between two figure sets ("" if equal).
func Diff(truth, derived map[string]Fig) string {
	var keys []string
	for k := range truth {
		keys = append(keys, k)
	}
	for k := range derived {
		if _, ok := truth[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var bad []string
	for _, k := range keys {
		if truth[k] != derived[k] {
			bad = append(bad, fmt.Sprintf("%s: derived %+v, truth %+v", k, derived[k], truth[k]))
		}
	}
	if len(bad) == 0 {
		return ""
	}
	if len(bad) > 5 {
		bad = append(bad[:5], fmt.Sprintf("... and %d more", len(bad)-5))
	}
	return strings.Join(bad, "; ")
}

// WaitConverged waits until the derived state equals the SQL truth.
func WaitConverged(t testing.TB, conn *pgx.Conn, within time.Duration) {
	t.Helper()
	WaitConvergedIn(t, conn, conn, within)
}

// WaitConvergedIn waits until the derived state in store equals the SQL
// truth over the source tables in src.
func WaitConvergedIn(t testing.TB, src, store *pgx.Conn, within time.Duration) {
	t.Helper()
	waitConverged(t, src, store, recompute, within)
}

// WaitConvergedTo waits until the derived state equals what truth, a query
// returning (subject, count, sum in millionths) per subject, recomputes from
// a test's own source tables.
func WaitConvergedTo(t testing.TB, conn *pgx.Conn, truth string, within time.Duration) {
	t.Helper()
	waitConverged(t, conn, conn, truth, within)
}

func waitConverged(t testing.TB, src, store *pgx.Conn, truthSQL string, within time.Duration) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(within)
	last := ""
	for {
		truth, err := figures(ctx, src, truthSQL)
		if err != nil {
			t.Fatal(err)
		}
		derived, err := Derived(ctx, store)
		if err == nil {
			if last = Diff(truth, derived); last == "" {
				return
			}
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("derived state did not converge within %s: %s", within, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Seed inserts rows that exist before repstream first starts.
func Seed(ctx context.Context, conn *pgx.Conn, reviews, ratings int) error {
	_, err := conn.Exec(ctx, `
INSERT INTO reviews (seller_id, rating, status)
SELECT i % 17, 1 + (i % 9) / 2.0, CASE WHEN i % 7 = 0 THEN 'hidden' ELSE 'published' END FROM generate_series(1, $1::int) i;
`, reviews)
	if err != nil {
		return err
	}
	_, err = conn.Exec(ctx, `INSERT INTO ratings SELECT i % 13, i, i % 11 FROM generate_series(1, $1::int) i ON CONFLICT DO NOTHING`, ratings)
	return err
}

// Workload is a seeded random mix of every kind of change the pipeline must
// fold exactly: inserts, score changes, subject moves, filter flips, key
// changes, TOAST-only updates, deletes, rollbacks and (once) a TRUNCATE.
type Workload struct {
	rnd       *rand.Rand
	truncated bool
	// Ops counts transactions committed, by kind.
	Ops map[string]int
}

// NewWorkload is a workload whose choices follow seed.
func NewWorkload(seed uint64) *Workload {
	return &Workload{rnd: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), Ops: map[string]int{}}
}

// Step runs one source transaction of 1 to 4 statements (some roll back).
func (w *Workload) Step(ctx context.Context, conn *pgx.Conn) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	n := 1 + w.rnd.IntN(4)
	kinds := make([]string, 0, n)
	for i := 0; i < n; i++ {
		kind, q, args := w.statement()
		if _, err := tx.Exec(ctx, q, args...); err != nil {
			return fmt.Errorf("%s: %w", kind, err)
		}
		kinds = append(kinds, kind)
	}
	if w.rnd.IntN(12) == 0 {
		w.Ops["rollback"]++
		return tx.Rollback(ctx)
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	for _, k := range kinds {
		w.Ops[k]++
	}
	return nil
}

// Truncate empties ratings once, in a transaction of its own.
func (w *Workload) Truncate(ctx context.Context, conn *pgx.Conn) error {
	_, err := conn.Exec(ctx, `TRUNCATE ratings`)
	if err == nil {
		w.Ops["truncate"]++
	}
	return err
}

func (w *Workload) statement() (string, string, []any) {
	r := w.rnd
	seller := r.IntN(40)
	switch p := r.IntN(100); {
	case p < 30:
		return "insert", `INSERT INTO reviews (seller_id, rating, status) VALUES ($1, $2, $3)`,
			[]any{seller, float64(1+r.IntN(9)) / 2, []string{"published", "published", "published", "hidden"}[r.IntN(4)]}
	case p < 40:
		return "rate", `INSERT INTO ratings VALUES ($1, $2, $3) ON CONFLICT (user_id, rater_id) DO UPDATE SET score = EXCLUDED.score`,
			[]any{r.IntN(20), r.IntN(200), r.IntN(12)}
	case p < 52:
		return "score", `UPDATE reviews SET rating = $1 WHERE id = (SELECT id FROM reviews ORDER BY random() LIMIT 1)`, []any{float64(1+r.IntN(9)) / 2}
	case p < 60:
		return "move", `UPDATE reviews SET seller_id = $1 WHERE id = (SELECT id FROM reviews ORDER BY random() LIMIT 1)`, []any{seller}
	case p < 70:
		return "flip", `UPDATE reviews SET status = CASE status WHEN 'published' THEN 'hidden' ELSE 'published' END WHERE id = (SELECT id FROM reviews ORDER BY random() LIMIT 1)`, nil
	case p < 75:
		return "rekey", `UPDATE reviews SET id = nextval('reviews_id_seq') WHERE id = (SELECT id FROM reviews ORDER BY random() LIMIT 1)`, nil
	case p < 82:
		return "toast", `UPDATE reviews SET body = repeat(md5(random()::text), 400 + $1::int) WHERE id = (SELECT id FROM reviews ORDER BY random() LIMIT 1)`, []any{r.IntN(400)}
	case p < 86:
		return "toast-flip", `UPDATE reviews SET status = 'published' WHERE id = (SELECT id FROM reviews WHERE body IS NOT NULL ORDER BY random() LIMIT 1)`, nil
	case p < 94:
		return "delete", `DELETE FROM reviews WHERE id = (SELECT id FROM reviews ORDER BY random() LIMIT 1)`, nil
	case p < 97:
		return "unrate", `DELETE FROM ratings WHERE (user_id, rater_id) = (SELECT user_id, rater_id FROM ratings ORDER BY random() LIMIT 1)`, nil
	default:
		return "null", `UPDATE reviews SET rating = NULL WHERE id = (SELECT id FROM reviews ORDER BY random() LIMIT 1)`, nil
	}
}

// Exec runs statements and fails the test on error.
func Exec(t testing.TB, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// CheckLog asserts the delta log's invariants: per subject, versions rise by
// one with LSN, and the last delta's figures equal the subject's state.
func CheckLog(t testing.TB, conn *pgx.Conn) {
	t.Helper()
	var bad string
	err := conn.QueryRow(context.Background(), `
WITH d AS (
  SELECT subject, lsn, version, lag(version) OVER (PARTITION BY subject ORDER BY lsn) AS prev FROM repstream.deltas
)
SELECT coalesce(string_agg(subject || '@' || lsn || ' v' || version || ' after v' || prev, ', '), '')
FROM (SELECT * FROM d WHERE prev IS NOT NULL AND version <> prev + 1 LIMIT 5) x`).Scan(&bad)
	if err != nil {
		t.Fatal(err)
	}
	if bad != "" {
		t.Fatalf("delta log versions not contiguous: %s", bad)
	}
	err = conn.QueryRow(context.Background(), `
SELECT coalesce(string_agg(s.subject, ', '), '') FROM repstream.subjects s
JOIN LATERAL (SELECT * FROM repstream.deltas d WHERE d.subject = s.subject ORDER BY lsn DESC LIMIT 1) d ON true
WHERE d.version <> s.version OR d.count <> s.count OR d.sum_micro <> s.sum_micro OR d.lsn <> s.lsn`).Scan(&bad)
	if err != nil {
		t.Fatal(err)
	}
	if bad != "" {
		t.Fatalf("last delta differs from state for: %s", bad)
	}
}

// Connect opens a connection for the test and closes it when the test ends.
func Connect(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}
