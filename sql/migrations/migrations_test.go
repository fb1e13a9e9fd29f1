package migrations_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/repstream/repstream/cdc/localpg"
	"github.com/repstream/repstream/sql/migrations"
)

func TestMain(m *testing.M) { os.Exit(localpg.Main(m)) }

func version(t *testing.T, url string) (uint, bool) {
	t.Helper()
	v, dirty, latest, err := migrations.Version(url)
	if err != nil {
		t.Fatal(err)
	}
	if latest != migrations.Latest() {
		t.Fatalf("latest %d, want %d", latest, migrations.Latest())
	}
	return v, dirty
}

func TestUpDownUp(t *testing.T) {
	url, _ := localpg.NewDatabase(t)
	if err := migrations.Up(url); err != nil {
		t.Fatal(err)
	}
	if v, dirty := version(t, url); v != migrations.Latest() || dirty {
		t.Fatalf("after up: version %d dirty %v", v, dirty)
	}
	if err := migrations.Up(url); err != nil { // idempotent
		t.Fatal(err)
	}
	if err := migrations.Down(url); err != nil {
		t.Fatal(err)
	}
	if v, _ := version(t, url); v != migrations.Latest()-1 {
		t.Fatalf("after down: version %d", v)
	}
	if err := migrations.Up(url); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var cols []string
	err = conn.QueryRow(ctx, `SELECT array_agg(column_name::text ORDER BY ordinal_position) FROM information_schema.columns
WHERE table_schema = 'repstream' AND table_name = 'reputation'`).Scan(&cols)
	if err != nil {
		t.Fatal(err)
	}
	// Subjects and row keys compare byte by byte, as Go orders them.
	var colls []string
	err = conn.QueryRow(ctx, `SELECT array_agg(c.relname || '.' || a.attname || ' ' || coalesce(co.collname, '-') ORDER BY c.relname)
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid LEFT JOIN pg_collation co ON co.oid = a.attcollation
WHERE c.relnamespace = 'repstream'::regnamespace AND (c.relname, a.attname) IN (('subjects', 'subject'), ('deltas', 'subject'), ('rows', 'key'))`).Scan(&colls)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(colls, ", "); got != "deltas.subject C, rows.key C, subjects.subject C" {
		t.Errorf("collations after up: %s; want C for all three", got)
	}
	want := []string{"subject", "count", "sum", "mean", "bayes", "version", "lsn", "updated_at"}
	if len(cols) != len(want) {
		t.Fatalf("repstream.reputation columns %v, want %v", cols, want)
	}
	for i := range want {
		if cols[i] != want[i] {
			t.Fatalf("repstream.reputation columns %v, want %v", cols, want)
		}
	}
}

// TestDirtyAfterCrash: a process killed mid-migration leaves the version
// dirty; Up finds out from the schema marker whether the migration
// committed and carries on instead of refusing to start forever.
func TestDirtyAfterCrash(t *testing.T) {
	ctx := context.Background()
	for _, committed := range []bool{true, false} {
		url, _ := localpg.NewDatabase(t)
		if err := migrations.Up(url); err != nil {
			t.Fatal(err)
		}
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		if !committed { // as if killed before the migration's transaction committed
			if err := migrations.Down(url); err != nil {
				t.Fatal(err)
			}
		}
		// The newest migration was running when the process died.
		if _, err := conn.Exec(ctx, fmt.Sprintf(`TRUNCATE repstream.schema_migrations; INSERT INTO repstream.schema_migrations VALUES (%d, true)`, migrations.Latest())); err != nil {
			t.Fatal(err)
		}
		conn.Close(ctx)
		if err := migrations.Up(url); err != nil {
			t.Fatalf("committed=%v: %v", committed, err)
		}
		if v, dirty := version(t, url); v != migrations.Latest() || dirty {
			t.Fatalf("committed=%v: version %d dirty %v", committed, v, dirty)
		}
		conn, _ = pgx.Connect(ctx, url)
		var ok bool
		if err := conn.QueryRow(ctx, `SELECT to_regclass('repstream.meta') IS NOT NULL`).Scan(&ok); err != nil || !ok {
			t.Fatalf("committed=%v: repstream.meta missing after recovery (err %v)", committed, err)
		}
		conn.Close(ctx)
	}
}
