package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/repstream/repstream/api/client"
	"github.com/repstream/repstream/cdc/localpg"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/streamtest"
)

// runWriter runs the streamtest workload against dbURL until stop is called;
// stop returns the workload and its error.
func runWriter(t testing.TB, dbURL string, seed uint64) (stop func() (*streamtest.Workload, error)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	wl := streamtest.NewWorkload(seed)
	done := make(chan error, 1)
	go func() {
		conn, err := pgx.Connect(context.Background(), dbURL)
		if err != nil {
			done <- err
			return
		}
		defer conn.Close(context.Background())
		for ctx.Err() == nil {
			if err := wl.Step(context.Background(), conn); err != nil {
				done <- err
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
		done <- nil
	}()
	var once sync.Once
	var err error
	stop = func() (*streamtest.Workload, error) {
		once.Do(func() { cancel(); err = <-done })
		return wl, err
	}
	t.Cleanup(func() { stop() }) //nolint:errcheck
	return stop
}

// dropSlotUnder terminates the walsender holding slot and drops the slot,
// retrying until the drop wins the race against the service reconnecting.
func dropSlotUnder(t testing.TB, conn *pgx.Conn, slot string) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for attempt := 1; ; attempt++ {
		if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`, slot); err != nil {
			t.Fatal(err)
		}
		_, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, slot)
		if err == nil {
			t.Logf("dropped slot %s (attempt %d)", slot, attempt)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("could not drop slot %s: %v", slot, err)
		}
		if !strings.Contains(err.Error(), "is active") {
			t.Fatalf("drop slot %s: %v", slot, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// dumpGoroutines makes the (Go) process print every goroutine's stack and
// exit, so a test that found it stuck shows where.
func (p *proc) dumpGoroutines() {
	p.cmd.Process.Signal(syscall.SIGQUIT) //nolint:errcheck
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill() //nolint:errcheck
		<-p.done
	}
}

// serverStates reads the derived state of the subjects with prefix,
// count-0 subjects included (a client holds those too).
func serverStates(t testing.TB, conn *pgx.Conn, prefix string) map[string]stream.State {
	t.Helper()
	rows, err := conn.Query(context.Background(),
		`SELECT subject, count, sum_micro, version, lsn::text FROM repstream.subjects WHERE starts_with(subject, $1)`, prefix)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]stream.State{}
	for rows.Next() {
		var s stream.State
		var lsn string
		if err := rows.Scan(&s.Subject, &s.Count, &s.Sum, &s.Version, &lsn); err != nil {
			t.Fatal(err)
		}
		if s.LSN, err = stream.ParseLSN(lsn); err != nil {
			t.Fatal(err)
		}
		out[s.Subject] = s
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// diffStates describes how the client's states differ from the server's
// (count, sum, version, lsn), or "".
func diffStates(server, held map[string]stream.State) string {
	keys := map[string]bool{}
	for k := range server {
		keys[k] = true
	}
	for k := range held {
		keys[k] = true
	}
	var sorted []string
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	var bad []string
	for _, k := range sorted {
		s, sok := server[k]
		c, cok := held[k]
		switch {
		case !cok:
			bad = append(bad, fmt.Sprintf("%s: client lacks it (server count %d v%d @%s)", k, s.Count, s.Version, s.LSN))
		case !sok:
			bad = append(bad, fmt.Sprintf("%s: server lacks it (client count %d v%d @%s)", k, c.Count, c.Version, c.LSN))
		case s.Count != c.Count || s.Sum != c.Sum || s.Version != c.Version || s.LSN != c.LSN:
			bad = append(bad, fmt.Sprintf("%s: client count %d sum %s v%d @%s, server count %d sum %s v%d @%s",
				k, c.Count, c.Sum, c.Version, c.LSN, s.Count, s.Sum, s.Version, s.LSN))
		}
	}
	if len(bad) > 5 {
		bad = append(bad[:5], fmt.Sprintf("... and %d more", len(bad)-5))
	}
	return strings.Join(bad, "; ")
}

// waitClientConverged waits until the client's folded states equal the
// server's, subject by subject.
func waitClientConverged(t testing.TB, conn *pgx.Conn, h *foldHandler, prefix string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		held, _ := h.snapshot()
		last := diffStates(serverStates(t, conn, prefix), held)
		if last == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the client's states did not converge to the server's within %s: %s", within, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// epochOf is /v1/status's epoch.
func epochOf(t testing.TB, base string) string {
	t.Helper()
	e, _ := statusOK(t, base, "")["epoch"].(string)
	return e
}

// TestSlotDroppedUnderRunningService drops the replication slot while the
// service streams a workload to a subscribed client. The service must say
// so loudly, start a new epoch from a fresh snapshot, make the client reset,
// count the epoch, and converge: the derived state to the SQL truth and the
// client's folded state to the server's.
func TestSlotDroppedUnderRunningService(t *testing.T) {
	seed := testSeed(t)
	dbURL, name := localpg.NewDatabase(t)
	ctx := context.Background()
	conn := streamtest.Connect(t, dbURL)
	streamtest.Exec(t, conn, streamtest.Schema)
	if err := streamtest.Seed(ctx, conn, 2000, 300); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, dbURL, name, "")

	p := start(t, nil, "serve", "--config", cfg)
	addr := listenAddr(t, p)
	base := "http://" + addr
	waitReady(t, base, 60*time.Second)
	epoch1 := epochOf(t, base)
	if epoch1 == "" {
		t.Fatal("no epoch in /v1/status")
	}
	if v := scrape(t, base).value(t, "repstream_epochs_started_total"); v != 1 {
		t.Fatalf("repstream_epochs_started_total = %v after the first load, want 1", v)
	}

	stopWriter := runWriter(t, dbURL, seed)

	h := &foldHandler{}
	cl, err := client.New(client.Options{URL: "ws://" + addr + "/v1/stream", Handler: h, Prefix: "seller:",
		// auth.insecure accepts any token; the client's hello with this one
		// is taken as a refresh.
		Token:      func(context.Context) (string, error) { return "insecure", nil },
		MinBackoff: 20 * time.Millisecond, MaxBackoff: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer runClient(ctx, t, cl)()
	waitFor(t, 30*time.Second, "the client to apply deltas", func() bool { return cl.Stats().Applied >= 20 })
	if ep, _ := cl.Cursor(); ep != epoch1 {
		t.Fatalf("client epoch %q, server epoch %q", ep, epoch1)
	}
	before := cl.Stats()
	mfsBefore := scrape(t, base)

	dropSlotUnder(t, conn, name)

	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := p.waitOutput(wctx, "NEW EPOCH"); err != nil {
		p.dumpGoroutines()
		t.Fatalf("the service did not log the new epoch (its goroutines are in the output below): %v", err)
	}
	var epoch2 string
	waitFor(t, 60*time.Second, "a new epoch in /v1/status", func() bool {
		epoch2 = epochOf(t, base)
		return epoch2 != "" && epoch2 != epoch1
	})
	t.Logf("epoch %s -> %s", epoch1, epoch2)
	for _, line := range strings.Split(p.output(), "\n") {
		if strings.Contains(line, "NEW EPOCH") {
			t.Logf("service: %s", line)
			if !strings.Contains(line, "level=ERROR") || !strings.Contains(line, epoch1) || !strings.Contains(line, "gone") {
				t.Errorf("the new-epoch line should be an error naming the old epoch %s and the gone slot: %s", epoch1, line)
			}
		}
	}
	waitFor(t, 30*time.Second, "the client to reset to the new epoch", func() bool {
		ep, _ := cl.Cursor()
		_, resets := h.snapshot()
		return ep == epoch2 && len(resets) > 0 && resets[len(resets)-1] == epoch2
	})
	if after := cl.Stats(); after.Resets <= before.Resets || after.Connects <= before.Connects {
		t.Errorf("client stats before %+v, after %+v: want a reset and a reconnect", before, after)
	}
	mfs := scrape(t, base)
	if v := mfs.value(t, "repstream_epochs_started_total"); v != 2 {
		t.Errorf("repstream_epochs_started_total = %v after the slot was dropped, want 2", v)
	}
	if b, a := mfsBefore.value(t, "repstream_replication_restarts_total"), mfs.value(t, "repstream_replication_restarts_total"); a <= b {
		t.Errorf("repstream_replication_restarts_total = %v after the walsender was terminated, was %v: want it to rise", a, b)
	}

	// The workload continues in the new epoch, then stops.
	applied := cl.Stats().Applied
	waitFor(t, 30*time.Second, "deltas in the new epoch", func() bool { return cl.Stats().Applied > applied+10 })
	wl, werr := stopWriter()
	if werr != nil {
		t.Fatalf("writer: %v", werr)
	}
	t.Logf("workload: %v", wl.Ops)
	streamtest.WaitConverged(t, conn, 60*time.Second)
	streamtest.CheckLog(t, conn)
	waitClientConverged(t, conn, h, "seller:", 30*time.Second)
	held, resets := h.snapshot()
	t.Logf("client: %+v, %d seller states, resets %v", cl.Stats(), len(held), resets)

	// Counters count over the process's life: a new replication session
	// (and epoch) must not take them back.
	mfsAfter := scrape(t, base)
	for _, n := range []string{"repstream_source_transactions_total", "repstream_source_changes_total",
		"repstream_deltas_total", "repstream_store_commits_total", "repstream_store_commit_seconds"} {
		if b, a := mfsBefore.value(t, n), mfsAfter.value(t, n); a < b {
			t.Errorf("counter %s went back from %v to %v across the new epoch", n, b, a)
		}
	}

	// The slot is back and belongs to the running service.
	var active bool
	if err := conn.QueryRow(ctx, `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, name).Scan(&active); err != nil {
		t.Fatalf("slot %s after the new epoch: %v", name, err)
	}
	if !active {
		t.Errorf("slot %s is not active after the new epoch", name)
	}
	if err := p.stop(30 * time.Second); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
}

// TestSlotLostToMaxSlotWALKeepSize lets Postgres invalidate the slot while
// the service is stopped (max_slot_wal_keep_size, then a checkpoint past the
// slot's restart_lsn: wal_status = lost). On start the service must see the
// slot lost, start a new epoch, and converge, including the rows written
// while it was down.
func TestSlotLostToMaxSlotWALKeepSize(t *testing.T) {
	seed := testSeed(t)
	cctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	c, err := localpg.Start(cctx, localpg.Options{NoFsync: true, Settings: []string{
		"wal_sender_timeout = '10s'",
		"max_slot_wal_keep_size = '1MB'",
		"wal_keep_size = 0",
		// A small max_wal_size would let a checkpoint invalidate the slot at
		// a moment of its choosing; the test triggers the checkpoint itself.
		"checkpoint_timeout = '1h'",
	}})
	cancel()
	if errors.Is(err, localpg.ErrNoServer) {
		t.Skip("no PostgreSQL server binaries to start a dedicated cluster with max_slot_wal_keep_size")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("postgres log:\n%s", c.Log())
		}
		if err := c.Stop(); err != nil {
			t.Errorf("stop cluster: %v", err)
		}
	})
	ctx := context.Background()
	const name = "walkeep"
	if err := localpg.CreateDatabase(ctx, c.URL("postgres"), name); err != nil {
		t.Fatal(err)
	}
	dbURL := c.URL(name)
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	streamtest.Exec(t, conn, streamtest.Schema)
	if err := streamtest.Seed(ctx, conn, 1000, 200); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, dbURL, name, "")

	p := start(t, nil, "serve", "--config", cfg)
	base := "http://" + listenAddr(t, p)
	waitReady(t, base, 60*time.Second)
	epoch1 := epochOf(t, base)
	wl := streamtest.NewWorkload(seed)
	for i := 0; i < 100; i++ {
		if err := wl.Step(ctx, conn); err != nil {
			t.Fatal(err)
		}
	}
	streamtest.WaitConverged(t, conn, 30*time.Second)
	if err := p.stop(30 * time.Second); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}

	// While the service is down: more changes, WAL past the slot, a checkpoint.
	for i := 0; i < 200; i++ {
		if err := wl.Step(ctx, conn); err != nil {
			t.Fatal(err)
		}
	}
	status := ""
	for round := 0; round < 5 && status != "lost"; round++ {
		for i := 0; i < 3; i++ {
			streamtest.Exec(t, conn, `INSERT INTO ratings VALUES (1000 + $1::int, 1, 5) ON CONFLICT (user_id, rater_id) DO UPDATE SET score = EXCLUDED.score % 11`, round*3+i)
			streamtest.Exec(t, conn, `SELECT pg_switch_wal()`)
		}
		streamtest.Exec(t, conn, `CHECKPOINT`)
		var st *string
		if err := conn.QueryRow(ctx, `SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1`, name).Scan(&st); err != nil {
			t.Fatal(err)
		}
		if st != nil {
			status = *st
		}
		t.Logf("round %d: wal_status = %q", round, status)
	}
	if status != "lost" {
		t.Skipf("could not make Postgres invalidate the slot (wal_status %q after switching WAL segments and checkpoints)", status)
	}

	p = start(t, nil, "serve", "--config", cfg)
	base = "http://" + listenAddr(t, p)
	wctx, wcancel := context.WithTimeout(ctx, 60*time.Second)
	defer wcancel()
	if err := p.waitOutput(wctx, "NEW EPOCH"); err != nil {
		t.Fatalf("the service did not log the new epoch: %v", err)
	}
	for _, line := range strings.Split(p.output(), "\n") {
		if strings.Contains(line, "NEW EPOCH") {
			t.Logf("service: %s", line)
			if !strings.Contains(line, "lost") {
				t.Errorf("the new-epoch line should say the slot lost its WAL: %s", line)
			}
		}
	}
	waitReady(t, base, 60*time.Second)
	if epoch2 := epochOf(t, base); epoch2 == "" || epoch2 == epoch1 {
		t.Fatalf("epoch %q after the slot was lost, was %q", epoch2, epoch1)
	}
	if v := scrape(t, base).value(t, "repstream_epochs_started_total"); v != 1 {
		t.Errorf("repstream_epochs_started_total = %v in the restarted process, want 1", v)
	}
	streamtest.WaitConverged(t, conn, 60*time.Second)
	for i := 0; i < 100; i++ {
		if err := wl.Step(ctx, conn); err != nil {
			t.Fatal(err)
		}
	}
	streamtest.WaitConverged(t, conn, 60*time.Second)
	streamtest.CheckLog(t, conn)
	var walStatus string
	if err := conn.QueryRow(ctx, `SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = $1`, name).Scan(&walStatus); err != nil {
		t.Fatal(err)
	}
	if walStatus == "lost" {
		t.Errorf("slot still lost after the new epoch")
	}
	if err := p.stop(30 * time.Second); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
}
