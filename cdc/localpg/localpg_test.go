package localpg

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

func TestNewDatabaseIsLogical(t *testing.T) {
	url, name := NewDatabase(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var wal, db string
	if err := conn.QueryRow(ctx, "SELECT current_setting('wal_level'), current_database()").Scan(&wal, &db); err != nil {
		t.Fatal(err)
	}
	if wal != "logical" || db != name {
		t.Fatalf("wal_level=%s database=%s, want logical and %s", wal, db, name)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", name); err != nil {
		t.Fatal(err)
	}
}
