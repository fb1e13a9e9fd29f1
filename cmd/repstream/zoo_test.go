package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/repstream/repstream/cdc/localpg"
	"github.com/repstream/repstream/stream/streamtest"
)

// zooSchema has the table shapes real applications have: a char(n) key
// and a boolean filter, a composite key with a uuid and an enum filter, a
// FULL identity with a DEFERRABLE key, a REPLICA IDENTITY USING INDEX, and
// a partitioned table.
const zooSchema = `
CREATE TYPE kind AS ENUM ('public', 'private');
CREATE TABLE items (sku char(6) PRIMARY KEY, seller int, rating int, published boolean NOT NULL);
CREATE TABLE votes (user_id int, voter uuid, stars numeric(2,1), kind kind NOT NULL, PRIMARY KEY (user_id, voter));
CREATE TABLE ranks (id int PRIMARY KEY DEFERRABLE, shop int, score int, note text);
ALTER TABLE ranks REPLICA IDENTITY FULL;
CREATE TABLE tags (id bigserial PRIMARY KEY, ext uuid NOT NULL UNIQUE, seller int, score int);
ALTER TABLE tags REPLICA IDENTITY USING INDEX tags_ext_key;
CREATE TABLE reviews (id bigserial, at date NOT NULL, seller int, rating int, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE reviews_2024 PARTITION OF reviews FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE reviews_2025 PARTITION OF reviews FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO items SELECT 'a' || i, i % 7, i % 6, i % 3 <> 0 FROM generate_series(1, 300) i;
INSERT INTO votes SELECT i % 20, ('00000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid, (i % 11) / 2.0, CASE WHEN i % 4 = 0 THEN 'private'::kind ELSE 'public' END FROM generate_series(1, 300) i;
INSERT INTO ranks SELECT i, i % 9, i % 12, 'n' FROM generate_series(1, 200) i;
INSERT INTO tags (ext, seller, score) SELECT gen_random_uuid(), i % 8, i % 12 FROM generate_series(1, 200) i;
INSERT INTO reviews (at, seller, rating) SELECT date '2024-01-01' + (i * 7) % 720, i % 10, i % 6 FROM generate_series(1, 400) i;
`

const zooSources = `sources:
  - table: items
    subject: "seller:{seller}"
    score: rating
    scale: [1, 5]
    where: { published: true }
  - table: votes
    subject: "user:{user_id}"
    score: stars
    scale: [0, 5]
    where: { kind: public }
  - table: ranks
    subject: "shop:{shop}"
    score: score
    scale: [1, 10]
  - table: tags
    subject: "tag:{seller}"
    score: score
    scale: [1, 10]
  - table: reviews
    subject: "rev:{seller}"
    score: rating
    scale: [1, 5]
`

const zooTruth = `
SELECT subject, count(*)::bigint, (sum(score) * 1000000)::bigint FROM (
  SELECT 'seller:' || seller AS subject, rating::numeric AS score FROM items WHERE published AND seller IS NOT NULL AND rating BETWEEN 1 AND 5
  UNION ALL SELECT 'user:' || user_id, stars FROM votes WHERE kind = 'public' AND stars BETWEEN 0 AND 5
  UNION ALL SELECT 'shop:' || shop, score FROM ranks WHERE shop IS NOT NULL AND score BETWEEN 1 AND 10
  UNION ALL SELECT 'tag:' || seller, score FROM tags WHERE seller IS NOT NULL AND score BETWEEN 1 AND 10
  UNION ALL SELECT 'rev:' || seller, rating FROM reviews WHERE seller IS NOT NULL AND rating BETWEEN 1 AND 5
) s GROUP BY subject`

// zooStatement is one random statement of the zoo workload.
func zooStatement(r *rand.Rand) (string, string, []any) {
	sku := func() string { return fmt.Sprintf("%c%d", 'a'+rune(r.IntN(3)), r.IntN(400)) }
	voter := func() string { return fmt.Sprintf("00000000-0000-0000-0000-%012d", r.IntN(400)) }
	switch p := r.IntN(100); {
	case p < 8:
		return "items.upsert", `INSERT INTO items VALUES ($1, $2, $3, $4) ON CONFLICT (sku) DO UPDATE SET rating = EXCLUDED.rating, published = EXCLUDED.published`,
			[]any{sku(), r.IntN(8), r.IntN(7), r.IntN(3) > 0}
	case p < 14:
		return "items.flip", `UPDATE items SET published = NOT published WHERE sku = (SELECT sku FROM items ORDER BY random() LIMIT 1)`, nil
	case p < 18:
		return "items.rekey", `UPDATE items SET sku = $1 WHERE sku = (SELECT sku FROM items ORDER BY random() LIMIT 1) AND NOT EXISTS (SELECT 1 FROM items WHERE sku = $1)`, []any{sku()}
	case p < 22:
		return "items.delete", `DELETE FROM items WHERE sku = (SELECT sku FROM items ORDER BY random() LIMIT 1)`, nil
	case p < 30:
		return "votes.upsert", `INSERT INTO votes VALUES ($1, $2::uuid, $3, $4::kind) ON CONFLICT (user_id, voter) DO UPDATE SET stars = EXCLUDED.stars, kind = EXCLUDED.kind`,
			[]any{r.IntN(25), voter(), float64(r.IntN(11)) / 2, []string{"public", "public", "private"}[r.IntN(3)]}
	case p < 34:
		return "votes.move", `UPDATE votes SET user_id = $1 WHERE (user_id, voter) = (SELECT user_id, voter FROM votes ORDER BY random() LIMIT 1) AND NOT EXISTS (SELECT 1 FROM votes v WHERE v.user_id = $1 AND v.voter = votes.voter)`, []any{r.IntN(25)}
	case p < 38:
		return "votes.delete", `DELETE FROM votes WHERE (user_id, voter) = (SELECT user_id, voter FROM votes ORDER BY random() LIMIT 1)`, nil
	case p < 44:
		return "ranks.insert", `INSERT INTO ranks SELECT coalesce(max(id), 0) + 1, $1, $2, 'n' FROM ranks`, []any{r.IntN(10), r.IntN(12)}
	case p < 52:
		return "ranks.swap", `WITH p AS (SELECT min(id) AS a, max(id) AS b FROM (SELECT id FROM ranks ORDER BY random() LIMIT 2) x)
UPDATE ranks SET id = CASE WHEN id = p.a THEN p.b ELSE p.a END, score = score FROM p WHERE id IN (p.a, p.b)`, nil
	case p < 56:
		return "ranks.score", `UPDATE ranks SET score = $1, note = repeat('x', $2::int) WHERE id = (SELECT id FROM ranks ORDER BY random() LIMIT 1)`, []any{r.IntN(12), r.IntN(3000)}
	case p < 59:
		return "ranks.delete", `DELETE FROM ranks WHERE id = (SELECT id FROM ranks ORDER BY random() LIMIT 1)`, nil
	case p < 65:
		return "tags.insert", `INSERT INTO tags (ext, seller, score) VALUES (gen_random_uuid(), $1, $2)`, []any{r.IntN(9), r.IntN(12)}
	case p < 69:
		return "tags.reident", `UPDATE tags SET ext = gen_random_uuid(), seller = $1 WHERE id = (SELECT id FROM tags ORDER BY random() LIMIT 1)`, []any{r.IntN(9)}
	case p < 73:
		return "tags.rekey", `UPDATE tags SET id = nextval('tags_id_seq'), score = $1 WHERE id = (SELECT id FROM tags ORDER BY random() LIMIT 1)`, []any{r.IntN(12)}
	case p < 76:
		return "tags.delete", `DELETE FROM tags WHERE id = (SELECT id FROM tags ORDER BY random() LIMIT 1)`, nil
	case p < 86:
		return "reviews.insert", `INSERT INTO reviews (at, seller, rating) VALUES (date '2024-01-01' + $1::int, $2, $3)`, []any{r.IntN(720), r.IntN(12), r.IntN(7)}
	case p < 91:
		return "reviews.move", `UPDATE reviews SET at = date '2024-01-01' + $1::int WHERE (id, at) = (SELECT id, at FROM reviews ORDER BY random() LIMIT 1)`, []any{r.IntN(720)}
	case p < 95:
		return "reviews.score", `UPDATE reviews SET rating = $1 WHERE (id, at) = (SELECT id, at FROM reviews ORDER BY random() LIMIT 1)`, []any{r.IntN(7)}
	default:
		return "reviews.delete", `DELETE FROM reviews WHERE (id, at) = (SELECT id, at FROM reviews ORDER BY random() LIMIT 1)`, nil
	}
}

// TestSchemaZoo runs a seeded random workload over the zoo's tables while
// the service is killed with SIGKILL again and again, and compares the
// derived state with the SQL recomputation. A partition TRUNCATE midway
// makes the service reload under a new epoch.
func TestSchemaZoo(t *testing.T) {
	seed := testSeed(t)
	rnd := rand.New(rand.NewPCG(seed, 2))
	dbURL, name := localpg.NewDatabase(t)
	ctx := context.Background()
	conn := streamtest.Connect(t, dbURL)
	streamtest.Exec(t, conn, zooSchema)
	cfg := filepath.Join(t.TempDir(), "repstream.yaml")
	body := fmt.Sprintf("database_url: %q\npublication: %s\nslot: %s\nlisten: 127.0.0.1:0\nheartbeat: 500ms\nauth:\n  insecure: true\n%s", dbURL, name, name, zooSources)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}

	wctx, stopWriter := context.WithCancel(ctx)
	var wg sync.WaitGroup
	ops := map[string]int{}
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
		wr := rand.New(rand.NewPCG(seed, 3))
		for i := 0; wctx.Err() == nil; i++ {
			if i == 300 {
				if _, werr = wconn.Exec(ctx, `TRUNCATE reviews_2024`); werr != nil {
					return
				}
				ops["truncate partition"]++
				continue
			}
			if werr = zooStep(ctx, wconn, wr, ops); werr != nil {
				return
			}
		}
	}()

	const kills = 6
	p := killRepeatedly(t, cfg, rnd, kills, 300*time.Millisecond)
	time.Sleep(time.Second)
	stopWriter()
	wg.Wait()
	if werr != nil {
		t.Fatalf("writer: %v", werr)
	}
	t.Logf("seed %d, killed %d times; workload: %v", seed, kills, ops)
	if ops["truncate partition"] != 1 {
		t.Fatalf("the workload did not reach its partition TRUNCATE (ops %v); make it run longer", ops)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		truth, err := streamtest.Figures(ctx, conn, zooTruth)
		if err != nil {
			t.Fatal(err)
		}
		derived, err := streamtest.Derived(ctx, conn)
		diff := ""
		if err != nil {
			diff = err.Error()
		} else {
			diff = streamtest.Diff(truth, derived)
		}
		if diff == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("seed %d: derived state did not converge: %s", seed, diff)
		}
		time.Sleep(200 * time.Millisecond)
	}
	streamtest.CheckLog(t, conn)
	if err := p.stop(30 * time.Second); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
}

// zooStep runs one transaction of one to three zoo statements; one in ten rolls back.
func zooStep(ctx context.Context, conn *pgx.Conn, r *rand.Rand, ops map[string]int) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	n := 1 + r.IntN(3)
	var kinds []string
	for i := 0; i < n; i++ {
		kind, q, args := zooStatement(r)
		if _, err := tx.Exec(ctx, q, args...); err != nil {
			return fmt.Errorf("%s: %w", kind, err)
		}
		kinds = append(kinds, kind)
	}
	if r.IntN(10) == 0 {
		ops["rollback"]++
		return tx.Rollback(ctx)
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	for _, k := range kinds {
		ops[k]++
	}
	return nil
}
