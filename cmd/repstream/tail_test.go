package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/repstream/repstream/cdc/localpg"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/streamtest"
)

// TestTail runs serve and tail as real processes: tail prints the state it
// starts from and a line for a new row; after the service is killed and
// restarted it reconnects by itself, resumes after the last delta it
// printed (nothing twice) and prints the next one; Ctrl-C exits 0.
func TestTail(t *testing.T) {
	dbURL, name := localpg.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	streamtest.Exec(t, conn, streamtest.Schema)
	streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating) VALUES (42, 4), (43, 2)`)

	// A fixed port, so the restarted service is where tail looks for it.
	addr := freeAddr(t)
	cfg := writeConfig(t, dbURL, name, "")
	srv := start(t, nil, "serve", "--config", cfg, "--listen", addr)
	if err := srv.waitOutput(ctx, "repstream listening"); err != nil {
		t.Fatal(err)
	}

	tail := start(t, nil, "tail", "--url", "ws://"+addr+"/v1/stream", "--subject", "seller:42")
	// The prior is the default 3.5 × 10: (35+4)/11 = 3.545.
	if _, err := tail.waitMatch(ctx, `(?m)^\S+ seller:42 v1 count 1 bayes 3\.545 mean 4\.000 \(snapshot\)$`); err != nil {
		t.Fatal(err)
	}

	// Another seller's review does not show; this seller's does: (35+9)/12 = 3.667.
	streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating) VALUES (43, 5)`)
	streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating) VALUES (42, 5)`)
	m, err := tail.waitMatch(ctx, `(?m)^(\S+) seller:42 v2 count 1→2 bayes 3\.545→3\.667 \(\+0\.121\)$`)
	if err != nil {
		t.Fatal(err)
	}
	lsn2, err := stream.ParseLSN(m[1])
	if err != nil {
		t.Fatalf("the delta line's LSN: %v", err)
	}

	// Kill the service; rows written while it is down arrive once it is back.
	srv.kill9()
	streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating) VALUES (42, 1)`) // (35+10)/13 = 3.462
	srv = start(t, nil, "serve", "--config", cfg, "--listen", addr)
	m, err = tail.waitMatch(ctx, `(?m)^(\S+) seller:42 v3 count 2→3 bayes 3\.667→3\.462 \(-0\.205\)$`)
	if err != nil {
		t.Fatal(err)
	}
	lsn3, err := stream.ParseLSN(m[1])
	if err != nil || lsn3 <= lsn2 {
		t.Fatalf("v3's LSN %s (%v) is not after v2's %s", m[1], err, lsn2)
	}
	out := tail.output()
	t.Logf("tail output:\n%s", out)
	if !strings.Contains(out, "tail: reconnected to") {
		t.Errorf("tail did not report its reconnect:\n%s", out)
	}
	if strings.Contains(out, "seller:43") {
		t.Errorf("tail printed a subject it was not asked for:\n%s", out)
	}
	if n := strings.Count(out, " seller:42 v2 "); n != 1 {
		t.Errorf("the v2 delta was printed %d times, want once:\n%s", n, out)
	}

	// Ctrl-C: exit 0, and the cursor to resume from.
	tail.cmd.Process.Signal(os.Interrupt) //nolint:errcheck
	select {
	case err := <-tail.done:
		if err != nil {
			t.Fatalf("tail after Ctrl-C: %v, want exit 0\n%s", err, tail.output())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("tail did not exit within 10s of Ctrl-C")
	}
	// The cursor is v3's LSN, or the later position the server said the
	// subscription had caught up to (nothing for seller:42 in between).
	if m := regexp.MustCompile(`--since (\S+)`).FindStringSubmatch(tail.output()); m == nil {
		t.Errorf("tail did not print a cursor to resume from:\n%s", tail.output())
	} else if c, err := stream.ParseLSN(m[1]); err != nil || c < lsn3 {
		t.Errorf("tail printed the cursor %s, want v3's %s or later:\n%s", m[1], lsn3, tail.output())
	}

	// --json, resuming from v2's cursor: exactly the v3 delta, as the protocol's delta message.
	jtail := start(t, nil, "tail", "--url", addr, "--subject", "seller:42", "--json", "--proto", "--since", lsn2.String())
	if _, err := jtail.waitMatch(ctx, `(?m)^\{"type":"delta","subject":"seller:42","lsn":"`+regexp.QuoteMeta(lsn3.String())+`","version":3,`); err != nil {
		t.Fatal(err)
	}
	if err := srv.stop(30 * time.Second); err != nil {
		t.Errorf("serve: SIGTERM: %v", err)
	}
	if strings.Contains(jtail.output(), `"version":2`) || strings.Contains(jtail.output(), `"type":"state"`) {
		t.Errorf("tail --since printed what precedes its cursor:\n%s", jtail.output())
	}
}

// waitMatch waits until the process's output matches the regular
// expression re and returns the first match's submatches.
func (p *proc) waitMatch(ctx context.Context, re string) ([]string, error) {
	rx := regexp.MustCompile(re)
	for {
		if m := rx.FindStringSubmatch(p.output()); m != nil {
			return m, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for output matching %s: %w\noutput so far:\n%s", re, ctx.Err(), p.output())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// freeAddr returns a loopback address with a port free at the moment.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
