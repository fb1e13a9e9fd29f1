package doctor_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/repstream/repstream/cdc"
	"github.com/repstream/repstream/cdc/doctor"
	"github.com/repstream/repstream/cdc/localpg"
	"github.com/repstream/repstream/stream"
)

func TestMain(m *testing.M) { os.Exit(localpg.Main(m)) }

const reviewsDDL = `CREATE TABLE public.reviews (
	id        bigserial PRIMARY KEY,
	seller_id bigint NOT NULL,
	rating    int    NOT NULL,
	status    text   NOT NULL DEFAULT 'published',
	body      text
)`

var reviewsSource = stream.Source{Table: "public.reviews", Subject: "seller:{seller_id}", Score: "rating",
	Scale: []float64{1, 5}, Where: map[string]any{"status": "published"}}

var prior = stream.Prior{Mean: 3.5, Weight: 10}

// newDB is a database of the test's own with the reviews table.
func newDB(t *testing.T) (dbURL, name string) {
	t.Helper()
	dbURL, name = localpg.NewDatabase(t)
	sqlExec(t, dbURL, reviewsDDL)
	return dbURL, name
}

func input(dbURL string, sources ...stream.Source) doctor.Input {
	if len(sources) == 0 {
		sources = []stream.Source{reviewsSource}
	}
	return doctor.Input{DatabaseURL: dbURL, Publication: "pub1", Slot: "slot1", CreatePublication: true, Sources: sources, Prior: prior}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

// serverVersion is the server's server_version_num.
func serverVersion(t *testing.T, dbURL string) int {
	t.Helper()
	var n int
	queryRow(t, dbURL, `SELECT current_setting('server_version_num')::int`, &n)
	return n
}

// needColumnLists skips a test of publication column lists or row filters
// on PostgreSQL 14, which has neither.
func needColumnLists(t *testing.T, dbURL string) {
	t.Helper()
	if serverVersion(t, dbURL) < 150000 {
		t.Skip("PostgreSQL 14 has no publication column lists or row filters")
	}
}

// sqlExec runs each statement on dbURL as whoever the URL names.
func sqlExec(t *testing.T, dbURL string, stmts ...string) {
	t.Helper()
	c := ctx(t)
	conn, err := pgx.Connect(c, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, s := range stmts {
		if _, err := conn.Exec(c, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

func queryRow(t *testing.T, dbURL, sql string, dst ...any) {
	t.Helper()
	c := ctx(t)
	conn, err := pgx.Connect(c, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(c, sql).Scan(dst...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func text(rep doctor.Report) string {
	var b strings.Builder
	rep.WriteText(&b) //nolint:errcheck
	return b.String()
}

// expect asserts the status of check name and returns it.
func expect(t *testing.T, rep doctor.Report, name string, want doctor.Status) doctor.Check {
	t.Helper()
	c, ok := rep.Find(name)
	if !ok {
		t.Fatalf("no check %q in report:\n%s", name, text(rep))
	}
	if c.Status != want {
		t.Fatalf("check %q: status %s, want %s: %s (fix: %s)\nreport:\n%s", name, c.Status, want, c.Message, c.Fix, text(rep))
	}
	if want != doctor.OK && c.Fix == "" {
		t.Errorf("check %q is %s without a fix", name, want)
	}
	return c
}

func expectExit(t *testing.T, rep doctor.Report, want int) {
	t.Helper()
	if got := rep.ExitCode(); got != want {
		t.Fatalf("exit code %d, want %d; report:\n%s", got, want, text(rep))
	}
}

func expectNoFail(t *testing.T, rep doctor.Report) {
	t.Helper()
	for _, c := range rep.Checks {
		if c.Status == doctor.Fail {
			t.Fatalf("check %s failed: %s\nreport:\n%s", c.Name, c.Message, text(rep))
		}
	}
}

// asRole is dbURL connecting as role instead (the test clusters trust local logins).
func asRole(dbURL, role string) string {
	u, _ := url.Parse(dbURL)
	u.User = url.User(role)
	return u.String()
}

// newRole creates a LOGIN role (no REPLICATION) for the test and drops it afterwards.
func newRole(t *testing.T, dbURL, dbName string, grants ...string) string {
	t.Helper()
	role := "r_" + dbName
	if len(role) > 60 {
		role = role[:60]
	}
	sqlExec(t, dbURL, fmt.Sprintf("CREATE ROLE %s LOGIN", pgx.Identifier{role}.Sanitize()))
	for _, g := range grants {
		sqlExec(t, dbURL, fmt.Sprintf(g, pgx.Identifier{role}.Sanitize()))
	}
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(c, dbURL)
		if err != nil {
			t.Errorf("drop role: %v", err)
			return
		}
		defer conn.Close(context.Background())
		q := pgx.Identifier{role}.Sanitize()
		conn.Exec(c, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1`, role) //nolint:errcheck
		if _, err := conn.Exec(c, "DROP OWNED BY "+q+"; DROP ROLE "+q); err != nil {
			t.Errorf("drop role %s: %v", role, err)
		}
	})
	return role
}

// holdSlot starts streaming slot on a replication connection of its own
// under application_name app, as another consumer would, until the test ends.
func holdSlot(t *testing.T, dbURL, slot, publication, app string) int32 {
	t.Helper()
	c := ctx(t)
	cfg, err := pgconn.ParseConfig(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["replication"] = "database"
	cfg.RuntimeParams["application_name"] = app
	conn, err := pgconn.ConnectConfig(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	pid := int32(conn.PID())
	err = pglogrepl.StartReplication(c, conn, slot, 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names '" + publication + "'"}})
	if err != nil {
		t.Fatal(err)
	}
	// Wait until the server shows the slot active for this backend.
	q, err := pgx.Connect(c, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close(context.Background())
	for deadline := time.Now().Add(10 * time.Second); ; {
		s, ok, err := cdc.LookupSlot(c, q, slot)
		if err != nil {
			t.Fatal(err)
		}
		if ok && s.ActivePID == pid {
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot %s not active for pid %d", slot, pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
