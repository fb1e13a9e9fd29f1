package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/repstream/repstream/cdc/localpg"
	"github.com/repstream/repstream/stream/streamtest"
)

// peakRSS reads a process's high-water resident set size in bytes.
func peakRSS(t testing.TB, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb * 1024
		}
	}
	t.Fatal("no VmHWM in /proc status")
	return 0
}

// TestMillionRowTransaction loads a million existing rows, then applies one
// transaction updating all of them, and bounds the process's peak memory:
// rows stream through; only per-subject figures and bounded caches stay.
func TestMillionRowTransaction(t *testing.T) {
	const rows = 1_000_000
	// The race detector multiplies memory; measure a plain build.
	plain := filepath.Join(t.TempDir(), "repstream")
	if out, err := exec.Command("go", "build", "-o", plain, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	dbURL, name := localpg.NewDatabase(t)
	ctx := context.Background()
	conn := streamtest.Connect(t, dbURL)
	streamtest.Exec(t, conn, streamtest.Schema)
	streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating, status, body)
SELECT i % 1000, 1 + i % 5, 'published', 'a review body that serve never needs to read' FROM generate_series(1, $1::int) i`, rows)
	cfg := writeConfig(t, dbURL, name, "")

	saved := binary
	binary = plain
	p := start(t, nil, "serve", "--config", cfg)
	binary = saved
	loadStart := time.Now()
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := p.waitOutput(wctx, "replication started"); err != nil {
		t.Fatal(err)
	}
	afterLoad := peakRSS(t, p.cmd.Process.Pid)
	t.Logf("snapshot load of %d rows: %s, peak RSS %d MiB", rows, time.Since(loadStart).Round(time.Millisecond), afterLoad>>20)

	updStart := time.Now()
	streamtest.Exec(t, conn, `UPDATE reviews SET rating = 6 - rating`)
	committed := time.Since(updStart)
	streamtest.WaitConverged(t, conn, 10*time.Minute)
	peak := peakRSS(t, p.cmd.Process.Pid)
	t.Logf("%d-row UPDATE: committed in %s, applied %s after commit; peak RSS %d MiB",
		rows, committed.Round(time.Millisecond), (time.Since(updStart) - committed).Round(time.Millisecond), peak>>20)
	// Holding the transaction's rows (key + three values each) would take
	// several hundred MiB; the bound is generous (about 70 MiB measured) yet far below that.
	const bound = 200 << 20
	if peak > bound {
		t.Fatalf("peak RSS %d MiB exceeds %d MiB", peak>>20, bound>>20)
	}
	streamtest.CheckLog(t, conn)
	// Applying took far longer than wal_sender_timeout (10s in the tests):
	// the reader kept sending status updates, so the session never broke.
	if strings.Contains(p.output(), "replication session ended") {
		t.Fatal("the replication session broke while the transaction was applied")
	}
	if err := p.stop(30 * time.Second); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
}
