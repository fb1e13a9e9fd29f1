package localpg

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// EnvTestURL names a superuser URL of a Postgres with wal_level=logical to
// test against instead of starting a throwaway cluster.
const EnvTestURL = "REPSTREAM_TEST_DATABASE_URL"

var (
	testAdminURL string
	testCluster  *Cluster
	testSeq      atomic.Int64
)

// Main runs a test binary against one Postgres: $REPSTREAM_TEST_DATABASE_URL
// or a throwaway cluster started here and removed afterwards. Call it from
// TestMain: os.Exit(localpg.Main(m)).
func Main(m *testing.M) int {
	if u := os.Getenv(EnvTestURL); u != "" {
		testAdminURL = u
		return m.Run()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	c, err := Start(ctx, Options{NoFsync: true, Settings: []string{"wal_sender_timeout = '10s'"}})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "localpg:", err)
		return 1
	}
	testCluster = c
	testAdminURL = c.URL("postgres")
	code := m.Run()
	if err := c.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "localpg: stop:", err)
	}
	return code
}

// TestCluster is the throwaway cluster Main started, or nil when tests run
// against $REPSTREAM_TEST_DATABASE_URL (tests that restart Postgres skip then).
func TestCluster() *Cluster { return testCluster }

// AdminURL is the superuser URL Main set up.
func AdminURL() string { return testAdminURL }

var nonIdent = regexp.MustCompile(`[^a-z0-9_]+`)

// NewDatabase creates a database of its own for the test and drops it, and
// every slot on it, when the test ends. It returns the database's URL and name.
func NewDatabase(t testing.TB) (dbURL, name string) {
	t.Helper()
	if testAdminURL == "" {
		t.Fatal("localpg: NewDatabase needs TestMain to call localpg.Main")
	}
	name = fmt.Sprintf("t_%s_%d_%d", strings.ToLower(nonIdent.ReplaceAllString(strings.ToLower(t.Name()), "_")), os.Getpid(), testSeq.Add(1))
	if len(name) > 60 {
		name = name[len(name)-60:]
		name = "t" + strings.TrimLeft(name, "_0123456789")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := CreateDatabase(ctx, testAdminURL, name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := DropDatabase(ctx, testAdminURL, name); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return WithDatabase(testAdminURL, name), name
}

// WithDatabase returns rawURL pointing at database name.
func WithDatabase(rawURL, name string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return rawURL
	}
	u.Path = "/" + name
	return u.String()
}
