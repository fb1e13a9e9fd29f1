package stream_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/repstream/repstream/cdc/localpg"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/streamtest"
)

// TestWhereMatchesAsSQLEquals: a where value is written as in SQL, and it
// matches the rows SQL's = matches, whatever the column prints: a numeric(3,1)
// 5 is "5.0", a char(4) "ab" is "ab  ", "yes" is a true boolean, a date is a
// midnight timestamptz, and an unconstrained numeric 2 is "2", "2.0" and
// "2.00", in the load and in the stream.
func TestWhereMatchesAsSQLEquals(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, `
CREATE TABLE g (id int PRIMARY KEY, subj int, grade numeric(3,1), code char(4), ok boolean, at timestamptz, score int, amt numeric);
INSERT INTO g SELECT i, i % 3, (i % 4)::numeric + 4, CASE WHEN i % 5 = 0 THEN 'cd' ELSE 'ab' END, i % 3 <> 1,
                     (CASE WHEN i % 7 = 0 THEN '2024-01-02' ELSE '2024-01-01' END)::timestamptz, 1 + i % 5,
                     (ARRAY[2, 2.0, 2.00, 2.5])[1 + i % 4]
FROM generate_series(1, 60) i;`)
	const truth = `
SELECT concat('g:', subj), count(*)::bigint, (sum(score) * 1000000)::bigint FROM g
WHERE grade = 5 AND code = 'ab' AND ok = 'yes' AND at = '2024-01-01 00:00:00+00' AND amt = 2 AND score BETWEEN 1 AND 5 GROUP BY 1`
	_, stop := startEngine(t, url, name, &recorder{}, func(c *stream.EngineConfig) {
		c.Sources = []stream.Source{{Table: "g", Subject: "g:{subj}", Score: "score", Scale: []float64{1, 5},
			Where: map[string]any{"grade": 5, "code": "ab", "ok": "yes", "at": "2024-01-01", "amt": 2}}}
	})
	defer stop()
	streamtest.WaitConvergedTo(t, conn, truth, 20*time.Second)
	var n int
	if err := conn.QueryRow(context.Background(), `SELECT sum(count) FROM repstream.reputation`).Scan(&n); err != nil || n == 0 {
		t.Fatalf("%d rows counted (err %v): the where matches nothing, so the test proves nothing", n, err)
	}
	streamtest.Exec(t, conn, `UPDATE g SET grade = 5 WHERE id % 3 = 0`)
	streamtest.Exec(t, conn, `UPDATE g SET code = 'ab' WHERE id % 10 = 0`)
	streamtest.Exec(t, conn, `UPDATE g SET amt = 2.0000 WHERE id % 8 = 3`)
	streamtest.Exec(t, conn, `INSERT INTO g VALUES (100, 1, 5, 'ab', true, '2024-01-01', 4, 2.000), (101, 1, 5.0, 'ab  ', 't', '2024-01-01 01:00+01', 2, 2)`)
	streamtest.Exec(t, conn, `DELETE FROM g WHERE id % 11 = 0`)
	streamtest.WaitConvergedTo(t, conn, truth, 20*time.Second)
}

// TestWhereValueTheColumnCannotHold is refused at start with the key named:
// it would silently match nothing.
func TestWhereValueTheColumnCannotHold(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	ctx := context.Background()
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, `
CREATE TYPE st AS ENUM ('draft', 'live');
CREATE DOMAIN pos AS int CHECK (VALUE > 0);
CREATE TABLE w (id int PRIMARY KEY, subj int, grade numeric(3,1), code char(4), ok boolean, s st, p pos, score int)`)
	i := 0
	for col, val := range map[string]any{"ok": "maybe", "grade": 5.05, "code": "abcdef", "s": "gone", "p": -1, "grade ": "x"} {
		col = strings.TrimSpace(col)
		i++
		slot := fmt.Sprintf("%s_%d", name, i)
		e, err := stream.NewEngine(ctx, stream.EngineConfig{DatabaseURL: url, Slot: slot, Publication: slot, CreatePublication: true,
			Sources: []stream.Source{{Table: "w", Subject: "w:{subj}", Score: "score", Scale: []float64{1, 5}, Where: map[string]any{col: val}}},
			Logger:  slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))}, &recorder{})
		if err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithTimeout(ctx, 15*time.Second) // a start that is not refused runs until then
		err = e.Run(rctx)
		cancel()
		e.Close()
		var ce *stream.ConfigError
		if !errors.As(err, &ce) || ce.Key != "sources[0].where."+col {
			t.Errorf("where %s = %v: got %v, want a ConfigError for sources[0].where.%s", col, val, err, col)
			continue
		}
		t.Log(err)
	}
	var slots int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE starts_with(slot_name, $1)`, name).Scan(&slots); err != nil || slots != 0 {
		t.Fatalf("a refused start left %d slots (err %v)", slots, err)
	}
}
