package stream_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/repstream/repstream/cdc/localpg"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/streamtest"
)

// TestLoadedRowsRetractExactly is issue 10's recipe: rows that exist before
// the first start load through a boolean where and a char(n) key, and a later
// UPDATE or DELETE of them retracts exactly what they added. A second table
// has a composite uuid+timestamptz key, an inet subject, an enum where and a
// domain score.
func TestLoadedRowsRetractExactly(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, `
CREATE TABLE items (sku char(6) PRIMARY KEY, seller int, rating int, published boolean NOT NULL);
INSERT INTO items VALUES ('a1',1,5,true),('a2',1,3,true),('a3',2,4,false),('a4',2,2,true);
CREATE TYPE vote_state AS ENUM ('draft', 'live');
CREATE DOMAIN points AS numeric(4,2) CHECK (VALUE >= 0);
CREATE TABLE votes (id uuid, at timestamptz, host inet, st vote_state, pts points, PRIMARY KEY (id, at));
INSERT INTO votes VALUES
  ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-01-01 10:00+02', '10.0.0.1/32', 'live', 7.5),
  ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-01-02 10:00+02', '10.0.0.1', 'live', 2),
  ('b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12', '2024-01-01 10:00+02', '10.0.0.0/8', 'draft', 9),
  ('c0eebc99-9c0b-4ef8-bb6d-6bb9bd380a13', '2024-01-01 10:00+02', '::1', 'live', 4.25);`)
	const truth = `
SELECT subject, count(*)::bigint, (sum(score) * 1000000)::bigint FROM (
  SELECT concat('seller:', seller) AS subject, rating AS score FROM items
   WHERE published AND seller IS NOT NULL AND rating BETWEEN 1 AND 5
  UNION ALL
  SELECT concat('host:', host), pts FROM votes WHERE st = 'live' AND host IS NOT NULL AND pts BETWEEN 0 AND 10
) s GROUP BY subject`
	_, stop := startEngine(t, url, name, &recorder{}, func(c *stream.EngineConfig) {
		c.Sources = []stream.Source{
			{Table: "items", Subject: "seller:{seller}", Score: "rating", Scale: []float64{1, 5}, Where: map[string]any{"published": true}},
			{Table: "votes", Subject: "host:{host}", Score: "pts", Scale: []float64{0, 10}, Where: map[string]any{"st": "live"}},
		}
	})
	defer stop()
	streamtest.WaitConvergedTo(t, conn, truth, 20*time.Second)
	checkShadow(t, conn)

	streamtest.Exec(t, conn, `UPDATE items SET rating = 1 WHERE sku = 'a1'`)
	streamtest.Exec(t, conn, `DELETE FROM items WHERE sku = 'a2'`)
	streamtest.Exec(t, conn, `UPDATE items SET published = true WHERE sku = 'a3'`)
	streamtest.Exec(t, conn, `UPDATE items SET published = false WHERE sku = 'a4'`)
	streamtest.Exec(t, conn, `UPDATE votes SET pts = 1.5 WHERE id = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11' AND at = '2024-01-01 08:00+00'`)
	streamtest.Exec(t, conn, `DELETE FROM votes WHERE id = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11' AND at = '2024-01-02 08:00+00'`)
	streamtest.Exec(t, conn, `UPDATE votes SET st = 'live' WHERE host = '10.0.0.0/8'`)
	streamtest.Exec(t, conn, `UPDATE votes SET host = '10.0.0.1' WHERE host = '::1'`)
	streamtest.WaitConvergedTo(t, conn, truth, 20*time.Second)
	checkShadow(t, conn)

	// The retractions leave seller:1 with a1 alone.
	var count int64
	var sum string
	if err := conn.QueryRow(context.Background(), `SELECT count, sum::float8::text FROM repstream.reputation WHERE subject = 'seller:1'`).Scan(&count, &sum); err != nil {
		t.Fatal(err)
	}
	if count != 1 || sum != "1" {
		t.Fatalf("seller:1 = count %d, sum %s; want 1 and 1", count, sum)
	}
}

// checkShadow: the row shadow holds each source row once, under the key the
// stream sends for it.
func checkShadow(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	var bad string
	err := conn.QueryRow(context.Background(), `
SELECT concat_ws(', ',
  (SELECT 'items: ' || count(*) || ' rows, ' || (SELECT count(*) FROM repstream.rows WHERE source = 0) || ' in the shadow' FROM items
    HAVING count(*) <> (SELECT count(*) FROM repstream.rows WHERE source = 0)),
  (SELECT 'votes: ' || count(*) || ' rows, ' || (SELECT count(*) FROM repstream.rows WHERE source = 1) || ' in the shadow' FROM votes
    HAVING count(*) <> (SELECT count(*) FROM repstream.rows WHERE source = 1)),
  (SELECT 'shadow keys not in items: ' || string_agg(format('%L', key), ' ') FROM repstream.rows r
    WHERE source = 0 AND NOT EXISTS (SELECT 1 FROM items WHERE concat(sku) = r.key)))`).Scan(&bad)
	if err != nil {
		t.Fatal(err)
	}
	if bad != "" {
		t.Fatal(bad)
	}
}

// TestScoresRoundOncePerRow: the README's rule. A score counts as the text
// Postgres prints for it, rounded to 6 decimals half away from zero, and
// only if that rounded value lies within the scale; the view then equals
// the SQL that applies the rule to each row, for numeric, float8 and float4
// scores, loaded or streamed.
func TestScoresRoundOncePerRow(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, `
CREATE TABLE sn (id serial PRIMARY KEY, subj int, score numeric);
CREATE TABLE s8 (id serial PRIMARY KEY, subj int, score float8);
CREATE TABLE s4 (id serial PRIMARY KEY, subj int, score float4);`)
	values := []string{"4.1234565", "0.0000005", "-0.0000005", "-0.0000004", "5.0000004", "5.0000005", "2.4999995",
		"1.0000015", "0.00000149", "1e-07", "2.5e-06", "3.99999949999", "0.12345650000000001", "1.1", "4.999999500"}
	insert := func(subj int) {
		for i, v := range values {
			for _, tbl := range []string{"sn", "s8", "s4"} {
				streamtest.Exec(t, conn, "INSERT INTO "+tbl+" (subj, score) VALUES ($1, $2::text::numeric)", subj+i%3, v)
			}
		}
	}
	insert(0)
	const truth = `
SELECT subject, count(*)::bigint, (sum(r) * 1000000)::bigint FROM (
  SELECT concat('n:', subj) AS subject, round(score::text::numeric, 6) AS r FROM sn
  UNION ALL SELECT concat('f8:', subj), round(score::text::numeric, 6) FROM s8
  UNION ALL SELECT concat('f4:', subj), round(score::text::numeric, 6) FROM s4
) s WHERE r BETWEEN 0 AND 5 GROUP BY subject`
	_, stop := startEngine(t, url, name, &recorder{}, func(c *stream.EngineConfig) {
		c.Sources = []stream.Source{
			{Table: "sn", Subject: "n:{subj}", Score: "score", Scale: []float64{0, 5}},
			{Table: "s8", Subject: "f8:{subj}", Score: "score", Scale: []float64{0, 5}},
			{Table: "s4", Subject: "f4:{subj}", Score: "score", Scale: []float64{0, 5}},
		}
	})
	defer stop()
	streamtest.WaitConvergedTo(t, conn, truth, 20*time.Second)

	insert(10)
	streamtest.Exec(t, conn, `UPDATE sn SET score = score + 0.0000001 WHERE id % 2 = 0`)
	streamtest.Exec(t, conn, `UPDATE s8 SET score = score * 1.0000001 WHERE id % 2 = 0`)
	streamtest.Exec(t, conn, `DELETE FROM s4 WHERE id % 3 = 0`)
	streamtest.WaitConvergedTo(t, conn, truth, 20*time.Second)

	// The rule is not the sum's rounding: per row, two half-millionths are two millionths.
	var got string
	if err := conn.QueryRow(context.Background(), `SELECT sum::float8::text FROM repstream.reputation WHERE subject = 'n:1'`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	var naive string
	if err := conn.QueryRow(context.Background(), `SELECT sum(score)::float8::text FROM sn WHERE subj = 1 AND score BETWEEN 0 AND 5`).Scan(&naive); err != nil {
		t.Fatal(err)
	}
	if got == naive {
		t.Fatalf("n:1 sums to %s, as the unrounded scores do: the values do not exercise the rule", got)
	}
}

// TestSumOverflowStopsLoudly: a subject whose sum would wrap around (past
// MaxSubjectRatings ratings at its scale's far end; here a state set near
// the limit) stops the pipeline with a sum_overflow problem instead of
// storing a wrong sum.
func TestSumOverflowStopsLoudly(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	ctx := context.Background()
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, streamtest.Schema)
	streamtest.Exec(t, conn, `INSERT INTO ratings VALUES (1, 1, 10)`)
	_, stop := startEngine(t, url, name, &recorder{})
	streamtest.WaitConverged(t, conn, 20*time.Second)
	stop()

	const near = 9223372036854000000
	streamtest.Exec(t, conn, `UPDATE repstream.subjects SET sum_micro = $1 WHERE subject = 'user:1'`, int64(near))
	e, stop := startEngine(t, url, name, &recorder{})
	defer stop()
	streamtest.Exec(t, conn, `INSERT INTO ratings VALUES (1, 2, 10)`)
	deadline := time.Now().Add(20 * time.Second)
	for {
		var found *stream.Problem
		for _, p := range e.Problems() {
			if p.Code == "sum_overflow" {
				found = &p
			}
		}
		if found != nil {
			if !strings.Contains(found.Reason, "user:1") {
				t.Errorf("reason %q does not name the subject", found.Reason)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no sum_overflow problem; problems: %v", e.Problems())
		}
		time.Sleep(50 * time.Millisecond)
	}
	var sum int64
	if err := conn.QueryRow(ctx, `SELECT sum_micro FROM repstream.subjects WHERE subject = 'user:1'`).Scan(&sum); err != nil || sum != near {
		t.Fatalf("user:1 sum_micro = %d (err %v), want it left at %d", sum, err, int64(near))
	}
	if err := e.Readiness(ctx); err == nil || !strings.Contains(err.Error(), "overflow") {
		t.Fatalf("readiness %v with a sum_overflow problem open", err)
	}
}
