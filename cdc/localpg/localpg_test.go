package localpg

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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

// TestServerIsTheSelectedVersion: with REPSTREAM_TEST_PG=N the tests really
// run against PostgreSQL N.
func TestServerIsTheSelectedVersion(t *testing.T) {
	want, err := strconv.Atoi(os.Getenv(EnvServer))
	if err != nil {
		t.Skipf("%s is not a major version", EnvServer)
	}
	url, _ := NewDatabase(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var num int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&num); err != nil {
		t.Fatal(err)
	}
	if num/10000 != want {
		t.Fatalf("server_version_num %d, want major %d", num, want)
	}
}

func TestVersionBinDirNotInstalled(t *testing.T) {
	t.Setenv(EnvVersionsDir, t.TempDir())
	_, err := VersionBinDir("17")
	if err == nil || !strings.Contains(err.Error(), "npm ci --ignore-scripts") {
		t.Fatalf("err = %v, want one naming npm ci", err)
	}
	if _, err := VersionBinDir("seventeen"); err == nil || !strings.Contains(err.Error(), EnvServer) {
		t.Fatalf("err = %v, want one naming %s", err, EnvServer)
	}
}

// TestHydrateSymlinks restores the links npm could not ship, relative to
// their directory, and leaves existing ones alone.
func TestHydrateSymlinks(t *testing.T) {
	root := t.TempDir()
	native := filepath.Join(root, "native")
	if err := os.MkdirAll(filepath.Join(native, "lib"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(native, "lib", "libpq.so.5.17"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	links := `[{"source":"native/lib/libpq.so.5.17","target":"native/lib/libpq.so.5"},{"source":"native/lib/libpq.so.5.17","target":"native/lib/libpq.so"}]`
	if err := os.WriteFile(filepath.Join(native, "pg-symlinks.json"), []byte(links), 0o644); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second pass finds them there
		if err := hydrateSymlinks(native); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range []string{"libpq.so.5", "libpq.so"} {
		got, err := os.Readlink(filepath.Join(native, "lib", l))
		if err != nil || got != "libpq.so.5.17" {
			t.Fatalf("%s -> %q (%v), want libpq.so.5.17", l, got, err)
		}
	}
}
