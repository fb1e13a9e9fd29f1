package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/repstream/repstream/cdc/localpg"
	"github.com/repstream/repstream/stream/streamtest"
)

// TestServeWaitsForDatabase starts serve while its database is down, as a
// container that starts before its database does: it keeps retrying,
// /healthz says 200 and /readyz 503 with the reason, and once the
// database is started it goes on by itself and converges.
func TestServeWaitsForDatabase(t *testing.T) {
	ctx := context.Background()
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	// fsync and synchronous_commit stay on: the kill below must not lose the seed.
	c, err := localpg.Start(sctx, localpg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop() //nolint:errcheck // removes the cluster with its slot
	if err := localpg.CreateDatabase(sctx, c.URL(""), "app"); err != nil {
		t.Fatal(err)
	}
	conn := streamtest.Connect(t, c.URL("app"))
	streamtest.Exec(t, conn, streamtest.Schema)
	if err := streamtest.Seed(ctx, conn, 200, 50); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if err := c.Kill(sctx); err != nil {
		t.Fatal(err)
	}
	// Through a proxy that cuts every connection until the database is back:
	// a stopped cluster's port may be taken by a cluster of another test.
	px := streamtest.NewProxy(t, "")
	dbURL := px.URL(t, c.URL("app"))

	p := start(t, nil, "serve", "--config", writeConfig(t, dbURL, "app", ""))
	base := "http://" + listenAddr(t, p)
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := p.waitOutput(wctx, `attempt=3`); err != nil {
		t.Fatalf("%v:\n%s", err, p.output())
	}
	if n := strings.Count(p.output(), "database unreachable; retrying"); n < 3 {
		t.Fatalf("%d retry lines, want one per attempt (>= 3)", n)
	}
	if code, body := httpGet(t, base+"/healthz", ""); code != http.StatusOK {
		t.Fatalf("/healthz = %d %s while the database is down, want 200", code, body)
	}
	code, body := httpGet(t, base+"/readyz", "")
	if code != http.StatusServiceUnavailable || !strings.Contains(string(body), "database unreachable") || !strings.Contains(string(body), "database=app") {
		t.Fatalf("/readyz = %d %s, want 503 naming the unreachable database", code, body)
	}

	if err := c.Start(sctx); err != nil {
		t.Fatal(err)
	}
	px.Retarget(c.Addr())
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if code, _ := httpGet(t, base+"/readyz", ""); code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready 90s after the database started:\n%s", p.output())
		}
	}
	conn = streamtest.Connect(t, dbURL)
	streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating, status) VALUES (1, 5, 'published')`)
	streamtest.WaitConverged(t, conn, 30*time.Second)
	if err := p.stop(30 * time.Second); err != nil {
		t.Fatalf("stop: %v", err)
	}
}

// TestServeMissingDatabaseIsFatal: a database that does not exist is a
// configuration error, not a reason to wait; serve exits naming the key.
func TestServeMissingDatabaseIsFatal(t *testing.T) {
	_, name := localpg.NewDatabase(t)
	dbURL := localpg.WithDatabase(localpg.AdminURL(), name+"_missing")
	p := start(t, nil, "serve", "--config", writeConfig(t, dbURL, name, ""))
	select {
	case err := <-p.done:
		out := p.output()
		if err == nil || !strings.Contains(out, "database_url") || !strings.Contains(out, "does not exist") {
			t.Fatalf("exit %v, output:\n%s\nwant a failure naming database_url", err, out)
		}
		p.done <- err
	case <-time.After(60 * time.Second):
		t.Fatalf("still running 60s after start against a missing database:\n%s", p.output())
	}
}
