package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/repstream/repstream/cdc/doctor"
	"github.com/repstream/repstream/cdc/localpg"
	"github.com/repstream/repstream/stream/streamtest"
)

// topology is streamtest.Failover, removed when the test ends.
type topology struct{ *streamtest.Failover }

// newTopology builds the topology with database app holding the
// streamtest schema and seed rows. syncSlots configures failover slots
// (PostgreSQL 17+): sync_replication_slots and hot_standby_feedback on the
// standby, synchronized_standby_slots on the primary.
func newTopology(t *testing.T, syncSlots bool) *topology {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	f, err := streamtest.StartFailover(ctx, localpg.Options{Settings: []string{"wal_sender_timeout = '10s'"}}, syncSlots)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Stop() }) //nolint:errcheck // the primary is killed by the failover
	return &topology{f}
}

// url is database app through the proxy.
func (tp *topology) url(testing.TB) string { return tp.URL() }

// failover crashes the primary, promotes the standby and points the proxy at it.
func (tp *topology) failover(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, _, _, err := tp.Switch(ctx); err != nil {
		t.Fatal(err)
	}
}

// writeThrough writes the random workload through the proxy until ctx
// ends, reconnecting after the failover cuts its connection.
func writeThrough(ctx context.Context, url string, seed uint64) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		w := streamtest.NewWorkload(seed)
		var conn *pgx.Conn
		defer func() {
			if conn != nil {
				conn.Close(context.Background())
			}
		}()
		for ctx.Err() == nil {
			if conn == nil {
				c, err := pgx.Connect(ctx, url)
				if err != nil {
					time.Sleep(50 * time.Millisecond)
					continue
				}
				conn = c
			}
			if err := w.Step(ctx, conn); err != nil {
				conn.Close(context.Background())
				conn = nil
			}
		}
	}()
	return func() { <-done }
}

// waitSynced waits until the standby holds a synced, persistent copy of
// slot that has caught up with the primary's confirmed position at call time.
func (tp *topology) waitSynced(t *testing.T, slot string) {
	t.Helper()
	if err := localpg.WaitSlotSynced(context.Background(), tp.Primary, tp.Standby, slot, 90*time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestFailoverKeepsEpoch (PostgreSQL 17+): with failover slots configured,
// the standby is promoted while writers run; repstream follows through the
// proxy and continues on the new primary in the same epoch, exact.
func TestFailoverKeepsEpoch(t *testing.T) {
	testFailover(t, true)
}

// TestFailoverNewEpoch: without a synced slot (before 17, or not
// configured), the promoted standby has no slot: repstream says so loudly,
// starts a new epoch from a fresh snapshot (clients reset) and is exact.
func TestFailoverNewEpoch(t *testing.T) {
	testFailover(t, false)
}

func testFailover(t *testing.T, syncSlots bool) {
	if v := localpg.TestCluster(); v == nil {
		t.Skip("needs throwaway clusters (REPSTREAM_TEST_DATABASE_URL is set)")
	}
	if syncSlots {
		admin := streamtest.Connect(t, localpg.AdminURL())
		var version int
		if err := admin.QueryRow(context.Background(), `SELECT current_setting('server_version_num')::int`).Scan(&version); err != nil {
			t.Fatal(err)
		}
		admin.Close(context.Background())
		if version < 170000 {
			t.Skipf("failover slots need PostgreSQL 17 (this is %d)", version)
		}
	}
	seed := testSeed(t)
	tp := newTopology(t, syncSlots)
	cfg := writeConfig(t, tp.url(t), "app", "")
	p := start(t, nil, "serve", "--config", cfg)
	base := "http://" + listenAddr(t, p)
	waitReady(t, base, 90*time.Second)
	epoch := epochOf(t, base)

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	wait := writeThrough(ctx, tp.url(t), seed)
	time.Sleep(1500 * time.Millisecond)
	if syncSlots {
		tp.waitSynced(t, "app")
		checkFailoverDoctor(t, tp)
	} else {
		// doctor on the standby says the slot will not survive its promotion.
		dctx, dcancel := context.WithTimeout(context.Background(), time.Minute)
		rep := doctor.Run(dctx, doctor.Input{DatabaseURL: tp.Standby.URL("app"), Publication: "app", Slot: "app", Sources: streamtest.Sources()})
		dcancel()
		name, want := "failover.slot", doctor.Warn
		if tp.Version >= 170000 {
			name, want = "failover.sync_replication_slots", doctor.Fail
		}
		if ch, ok := rep.Find(name); !ok || ch.Status != want {
			t.Errorf("doctor on the standby: %s = %+v (found %v), want %s", name, ch, ok, want)
		}
	}
	time.Sleep(500 * time.Millisecond)
	promoted := time.Now()
	tp.failover(t)
	t.Logf("primary killed, standby promoted, proxy switched in %s; first delta from the new primary after %s",
		time.Since(promoted).Round(time.Millisecond), firstDelta(t, tp.url(t), promoted).Round(time.Millisecond))
	time.Sleep(2 * time.Second)
	stop()
	wait()

	conn := streamtest.Connect(t, tp.url(t))
	streamtest.WaitConverged(t, conn, 90*time.Second)
	streamtest.CheckLog(t, conn)
	out := p.output()
	newEpoch := strings.Contains(out, "STARTING A NEW EPOCH")
	switch got := epochOf(t, base); {
	case syncSlots && (got != epoch || newEpoch):
		t.Fatalf("a synced failover slot must keep epoch %s; now %s (new-epoch log: %v)", epoch, got, newEpoch)
	case !syncSlots && (got == epoch || !newEpoch || !strings.Contains(out, "is gone")):
		t.Fatalf("without a synced slot the promotion must start a new epoch loudly: epoch %s -> %s, new-epoch log: %v", epoch, got, newEpoch)
	}
	if err := p.stop(30 * time.Second); err != nil {
		t.Fatalf("stop: %v", err)
	}
	ctx2, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	streamtest.Exec(t, conn, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_type = 'logical'`)
	conn.Close(ctx2)
}

// firstDelta writes a marker review on the new primary and returns the time
// from since until repstream derived it: the cost of the switch.
func firstDelta(t *testing.T, url string, since time.Time) time.Duration {
	t.Helper()
	ctx := context.Background()
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no delta from the new primary within 2 minutes")
		}
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			continue
		}
		var n int
		err = conn.QueryRow(ctx, `SELECT count(*) FROM repstream.subjects WHERE subject = 'seller:987654' AND count > 0`).Scan(&n)
		if err == nil && n == 0 {
			_, err = conn.Exec(ctx, `INSERT INTO reviews (seller_id, rating, status) SELECT 987654, 5, 'published' WHERE NOT EXISTS (SELECT 1 FROM reviews WHERE seller_id = 987654)`)
		}
		conn.Close(ctx)
		if err == nil && n > 0 {
			return time.Since(since)
		}
	}
}

// checkFailoverDoctor runs doctor against the primary and the standby: each
// finds the failover settings in place.
func checkFailoverDoctor(t *testing.T, tp *topology) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, c := range []struct {
		url    string
		checks []string
	}{
		{tp.Primary.URL("app"), []string{"failover.slot", "failover.synchronized_standby_slots"}},
		{tp.Standby.URL("app"), []string{"failover.sync_replication_slots", "failover.hot_standby_feedback", "failover.primary_slot_name", "failover.synced"}},
	} {
		rep := doctor.Run(ctx, doctor.Input{DatabaseURL: c.url, Publication: "app", Slot: "app", Sources: streamtest.Sources()})
		for _, name := range c.checks {
			if ch, ok := rep.Find(name); !ok || ch.Status != doctor.OK {
				t.Errorf("doctor on %s: %s = %+v (found %v), want ok", c.url, name, ch, ok)
			}
		}
		if t.Failed() {
			var b strings.Builder
			rep.WriteText(&b) //nolint:errcheck
			t.Log(b.String())
		}
		if ch, ok := rep.Find("failover.primary_conninfo"); ok {
			t.Errorf("doctor on %s: %+v", c.url, ch)
		}
	}
}
