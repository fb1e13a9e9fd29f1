package stream_test

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/repstream/repstream/cdc/localpg"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/streamtest"
)

func fastSchemaCheck(c *stream.EngineConfig) { c.SchemaCheck = 100 * time.Millisecond }

// waitProblem waits until the engine reports a problem with code on source,
// and checks readiness says so.
func waitProblem(t *testing.T, e *stream.Engine, code, source string) stream.Problem {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		for _, p := range e.Problems() {
			if p.Code == code && p.Source == source {
				if err := e.Readiness(context.Background()); err == nil {
					t.Fatalf("ready while problem %s is open", code)
				}
				if p.Fix == "" {
					t.Fatalf("problem %s has no fix", code)
				}
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no problem %s for %s; open: %+v", code, source, e.Problems())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitReady waits until no problem is open and the engine is ready.
func waitReady(t *testing.T, e *stream.Engine) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := e.Readiness(context.Background())
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func derivedNow(t *testing.T, conn *pgx.Conn) map[string]streamtest.Fig {
	t.Helper()
	d, err := streamtest.Derived(context.Background(), conn)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestDDLStopsTheSourceLoudly: DDL that takes away what a source reads
// stops that source with a problem naming the fix; nothing is folded while
// it lasts; once fixed, the service reloads under a new epoch and is exact.
func TestDDLStopsTheSourceLoudly(t *testing.T) {
	admin := streamtest.Connect(t, localpg.AdminURL())
	var version int
	if err := admin.QueryRow(context.Background(), `SELECT current_setting('server_version_num')::int`).Scan(&version); err != nil {
		t.Fatal(err)
	}
	admin.Close(context.Background())
	if version < 150000 {
		t.Skip("the cases re-add tables with column lists, which PostgreSQL 14 lacks")
	}
	cases := []struct {
		name, ddl, code, fix string
		want                 string // in the problem's fix
	}{
		{"rename score column", `ALTER TABLE reviews RENAME COLUMN rating TO stars`, "source_column_missing",
			`ALTER TABLE reviews RENAME COLUMN stars TO rating`, `ALTER TABLE "public"."reviews" RENAME COLUMN "stars" TO "rating";`},
		{"rename subject column", `ALTER TABLE reviews RENAME COLUMN seller_id TO seller`, "source_column_missing",
			`ALTER TABLE reviews RENAME COLUMN seller TO seller_id`, `ALTER TABLE "public"."reviews" RENAME COLUMN "seller" TO "seller_id";`},
		// The key is read from the catalog: a renamed key reloads by itself.
		{"rename key column", `ALTER TABLE reviews RENAME COLUMN id TO review_id`, "", "", ""},
		{"drop where column cascade", `ALTER TABLE reviews DROP COLUMN status CASCADE`, "source_column_missing",
			`ALTER TABLE reviews ADD COLUMN status text NOT NULL DEFAULT 'published'; ALTER PUBLICATION %PUB% ADD TABLE reviews (id, rating, seller_id, status)`,
			`ALTER TABLE "public"."reviews" ADD COLUMN "status" text;`},
		{"rename table", `ALTER TABLE reviews RENAME TO reviews_old`, "source_table_renamed",
			`ALTER TABLE reviews_old RENAME TO reviews`, `ALTER TABLE "public"."reviews_old" RENAME TO "reviews"`},
		{"drop table", `DROP TABLE reviews`, "source_table_missing",
			`CREATE TABLE reviews (id bigserial PRIMARY KEY, seller_id int, rating numeric(3,1), status text NOT NULL DEFAULT 'published', body text);
			 INSERT INTO reviews (seller_id, rating) VALUES (1, 4), (2, 5), (3, 1);
			 ALTER PUBLICATION %PUB% ADD TABLE reviews (id, rating, seller_id, status)`, "restore table public.reviews"},
		{"drop table from publication", `ALTER PUBLICATION %PUB% DROP TABLE reviews`, "source_unpublished",
			`ALTER PUBLICATION %PUB% ADD TABLE reviews (id, rating, seller_id, status)`, `ADD TABLE "public"."reviews" ("id", "rating", "seller_id", "status");`},
		{"score type rounds", `BEGIN; ALTER PUBLICATION %PUB% DROP TABLE reviews; ALTER TABLE reviews ALTER COLUMN rating TYPE int; ALTER PUBLICATION %PUB% ADD TABLE reviews (id, rating, seller_id, status); COMMIT`,
			"", "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// The engine's goroutines, the schema watch among them, end with it.
			running := goleak.IgnoreCurrent()
			t.Cleanup(func() { goleak.VerifyNone(t, running) })
			url, name := localpg.NewDatabase(t)
			conn := streamtest.Connect(t, url)
			streamtest.Exec(t, conn, streamtest.Schema)
			streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating) SELECT i % 4, 1 + (i % 9) / 2.0 FROM generate_series(1, 40) i`)
			streamtest.Exec(t, conn, `INSERT INTO ratings SELECT i % 3, i, i % 11 FROM generate_series(1, 20) i`)
			rec := &recorder{}
			e, stop := startEngine(t, url, name, rec, fastSchemaCheck)
			defer stop()
			streamtest.WaitConverged(t, conn, 20*time.Second)
			pub := func(s string) string { return strings.ReplaceAll(s, "%PUB%", `"`+name+`"`) }

			streamtest.Exec(t, conn, pub(c.ddl))
			if c.code == "" {
				// A type change, or a new key: what was counted was read by
				// the old one; the service reloads by itself.
				streamtest.Exec(t, conn, `UPDATE reviews SET seller_id = 9 WHERE rating > 3`)
				deadline := time.Now().Add(20 * time.Second)
				for {
					rec.mu.Lock()
					n := len(rec.resets)
					rec.mu.Unlock()
					if n >= 2 {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("no reload after the type change; problems %+v", e.Problems())
					}
					time.Sleep(20 * time.Millisecond)
				}
				waitReady(t, e)
				streamtest.WaitConverged(t, conn, 20*time.Second)
				return
			}
			before := derivedNow(t, conn)
			p := waitProblem(t, e, c.code, "public.reviews")
			for !strings.Contains(p.Fix, c.want) { // the schema check may refine the stream's finding
				if time.Since(p.Since) > 10*time.Second {
					t.Fatalf("fix %q lacks %q", p.Fix, c.want)
				}
				time.Sleep(20 * time.Millisecond)
				p = waitProblem(t, e, c.code, "public.reviews")
			}
			t.Logf("reported: %s", p)
			// While stopped, the source folds nothing; the others go on.
			switch c.code {
			case "source_table_renamed":
				streamtest.Exec(t, conn, `DELETE FROM reviews_old WHERE id % 3 = 0`)
			case "source_table_missing":
			default:
				streamtest.Exec(t, conn, `DELETE FROM reviews WHERE id % 3 = 0`)
			}
			streamtest.Exec(t, conn, `INSERT INTO ratings VALUES (7, 1000, 9)`)
			deadline := time.Now().Add(20 * time.Second)
			for derivedNow(t, conn)["user:7"].Count == before["user:7"].Count {
				if time.Now().After(deadline) {
					t.Fatal("the other source stopped too")
				}
				time.Sleep(20 * time.Millisecond)
			}
			after := derivedNow(t, conn)
			for s, f := range before {
				if strings.HasPrefix(s, "seller:") && after[s] != f {
					t.Fatalf("%s changed while its source was stopped: %+v, was %+v", s, after[s], f)
				}
			}
			if e.Readiness(context.Background()) == nil {
				t.Fatal("ready while a source is stopped")
			}
			rec.mu.Lock()
			resets := len(rec.resets)
			rec.mu.Unlock()

			streamtest.Exec(t, conn, pub(c.fix))
			streamtest.Exec(t, conn, `UPDATE reviews SET rating = 2 WHERE id % 4 = 0`)
			waitReady(t, e)
			streamtest.WaitConverged(t, conn, 20*time.Second)
			streamtest.CheckLog(t, conn)
			rec.mu.Lock()
			defer rec.mu.Unlock()
			if len(rec.resets) != resets+1 {
				t.Fatalf("got %d resets after the fix, want one more than %d (a reload under a new epoch)", len(rec.resets), resets)
			}
		})
	}
}

// TestHarmlessDDLChangesNothing: a new column, an index and a new table
// neither stop a source nor reload.
func TestHarmlessDDLChangesNothing(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, streamtest.Schema)
	rec := &recorder{}
	e, stop := startEngine(t, url, name, rec, fastSchemaCheck)
	defer stop()
	streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating) VALUES (1, 5), (1, 3), (2, 4)`)
	streamtest.Exec(t, conn, `ALTER TABLE reviews ADD COLUMN helpful int DEFAULT 0`)
	streamtest.Exec(t, conn, `CREATE INDEX ON reviews (seller_id)`)
	streamtest.Exec(t, conn, `CREATE TABLE other (id int PRIMARY KEY, x int)`)
	streamtest.Exec(t, conn, `INSERT INTO other VALUES (1, 1)`)
	streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating, helpful) VALUES (1, 1, 7)`)
	streamtest.Exec(t, conn, `UPDATE reviews SET rating = 2, helpful = 3 WHERE id = 1`)
	streamtest.Exec(t, conn, `DELETE FROM reviews WHERE id = 3`)
	streamtest.WaitConverged(t, conn, 20*time.Second)
	time.Sleep(500 * time.Millisecond) // several schema checks
	if ps := e.Problems(); len(ps) != 0 {
		t.Fatalf("problems after harmless DDL: %+v", ps)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.resets) != 1 || e.Status().Restarts != 0 {
		t.Fatalf("%d resets, %d restarts after harmless DDL; want 1 and 0", len(rec.resets), e.Status().Restarts)
	}
}

// TestSchemaBrokenAtRestart: a column renamed while repstream was stopped
// keeps it up and not ready with the fix (it does not exit), and once the
// column is back it derives exactly.
func TestSchemaBrokenAtRestart(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, streamtest.Schema)
	streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating) VALUES (1, 5), (2, 3)`)
	_, stop := startEngine(t, url, name, &recorder{}, fastSchemaCheck)
	streamtest.WaitConverged(t, conn, 20*time.Second)
	stop()
	streamtest.Exec(t, conn, `ALTER TABLE reviews RENAME COLUMN rating TO stars`)
	streamtest.Exec(t, conn, `UPDATE reviews SET stars = 1 WHERE id = 1`)

	ctx, cancel := context.WithCancel(context.Background())
	cfg := stream.EngineConfig{DatabaseURL: url, Slot: name, Publication: name, CreatePublication: true,
		Sources: streamtest.Sources(), Prior: stream.Prior{Mean: 3.5, Weight: 10},
		Heartbeat: 200 * time.Millisecond, StatusInterval: 200 * time.Millisecond, SchemaCheck: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError + 1}))}
	e, err := stream.NewEngine(ctx, cfg, &recorder{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		e.Close()
	}()
	p := waitProblem(t, e, "source_column_missing", "public.reviews")
	if !strings.Contains(p.Fix, "RENAME COLUMN") {
		t.Fatalf("fix: %s", p.Fix)
	}
	select {
	case err := <-done:
		t.Fatalf("the engine exited: %v", err)
	default:
	}
	streamtest.Exec(t, conn, `ALTER TABLE reviews RENAME COLUMN stars TO rating`)
	waitReady(t, e)
	streamtest.WaitConverged(t, conn, 30*time.Second)
}
