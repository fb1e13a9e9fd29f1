package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/repstream/repstream/cdc/doctor"
	"github.com/repstream/repstream/cdc/localpg"
	"github.com/repstream/repstream/stream/streamtest"
)

// standbyTopology is a primary with database app (streamtest's schema,
// seed rows and a publication) and database store, and a hot standby
// (hot_standby_feedback on, physical slot standby1) that repstream reads
// from; nil when the test has no throwaway clusters.
func standbyTopology(t *testing.T) *topology {
	t.Helper()
	if localpg.TestCluster() == nil {
		t.Skip("needs throwaway clusters (REPSTREAM_TEST_DATABASE_URL is set)")
	}
	tp := newTopology(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := localpg.CreateDatabase(ctx, tp.Primary.URL(""), "store"); err != nil {
		t.Fatal(err)
	}
	return tp
}

// standbyConfig reads database app on the standby and keeps the store in
// database store on the primary.
func standbyConfig(t *testing.T, tp *topology, extra string) string {
	return writeConfig(t, tp.Standby.URL("app"), "app", "store:\n  database_url: \""+tp.Primary.URL("store")+"\"\n"+extra)
}

func serverVersion(t *testing.T) int {
	t.Helper()
	admin := streamtest.Connect(t, localpg.AdminURL())
	defer admin.Close(context.Background())
	var v int
	if err := admin.QueryRow(context.Background(), `SELECT current_setting('server_version_num')::int`).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestStandbySource (PostgreSQL 16+): repstream decodes on a hot standby
// while the application writes to the primary, its store on the primary.
// Exact through a kill -9; a recovery conflict that invalidates the slot
// starts a new epoch loudly and stays exact; the standby's promotion keeps
// the epoch.
func TestStandbySource(t *testing.T) {
	if v := serverVersion(t); v < 160000 {
		t.Skipf("logical decoding on a standby needs PostgreSQL 16 (this is %d); TestStandbySourceBefore16 covers it", v)
	}
	seed := testSeed(t)
	tp := standbyTopology(t)
	ctx := context.Background()
	primary := streamtest.Connect(t, tp.Primary.URL("app"))
	defer primary.Close(ctx)
	store := streamtest.Connect(t, tp.Primary.URL("store"))
	defer store.Close(ctx)
	standby := streamtest.Connect(t, tp.Standby.URL("app"))
	defer standby.Close(ctx)

	// The publication does not exist: a standby cannot create it, so serve
	// says where to, and goes on once the primary has it.
	cfg := standbyConfig(t, tp, "")
	p := start(t, nil, "serve", "--config", cfg)
	base := "http://" + listenAddr(t, p)
	wctx, wcancel := context.WithTimeout(ctx, 60*time.Second)
	err := p.waitOutput(wctx, "create it on the primary")
	wcancel()
	if err != nil {
		t.Fatalf("%v:\n%s", err, p.output())
	}
	if code, body := httpGet(t, base+"/readyz", ""); code != http.StatusServiceUnavailable || !strings.Contains(string(body), "CREATE PUBLICATION") {
		t.Fatalf("/readyz = %d %s, want 503 with the publication's SQL", code, body)
	}
	streamtest.Exec(t, primary, `CREATE PUBLICATION app FOR TABLE reviews, ratings`)
	waitReady(t, base, 2*time.Minute)
	epoch := epochOf(t, base)
	if out := p.output(); !strings.Contains(out, "the source is a standby") {
		t.Fatalf("no log line says the source is a standby:\n%s", out)
	}
	checkStandbyDoctor(t, tp)

	// Writers on the primary; kill -9 mid-stream; a second process resumes.
	wrctx, stopWriters := context.WithCancel(ctx)
	wait := writeThrough(wrctx, tp.Primary.URL("app"), seed)
	time.Sleep(2 * time.Second)
	p.kill9()
	p = start(t, nil, "serve", "--config", cfg)
	base = "http://" + listenAddr(t, p)
	waitReady(t, base, time.Minute)
	time.Sleep(2 * time.Second)
	stopWriters()
	wait()
	streamtest.WaitConvergedIn(t, primary, store, 90*time.Second)
	streamtest.CheckLog(t, store)
	if got := epochOf(t, base); got != epoch {
		t.Fatalf("kill -9 on a standby source changed the epoch %s -> %s:\n%s", epoch, got, p.output())
	}

	// A recovery conflict: with hot_standby_feedback off the primary's
	// vacuum removes catalog rows the standby's slot needs, and the
	// standby invalidates the slot.
	conflict(t, tp, primary, standby)
	wrctx, stopWriters = context.WithCancel(ctx)
	wait = writeThrough(wrctx, tp.Primary.URL("app"), seed+1)
	waitFor(t, 2*time.Minute, "a new epoch after the recovery conflict", func() bool {
		return strings.Contains(p.output(), "STARTING A NEW EPOCH") && epochOf(t, base) != epoch
	})
	out := p.output()
	if !strings.Contains(out, "recovery conflict") {
		t.Fatalf("the new epoch does not name the recovery conflict:\n%s", out)
	}
	epoch = epochOf(t, base)
	time.Sleep(time.Second)
	stopWriters()
	wait()
	streamtest.WaitConvergedIn(t, primary, store, 90*time.Second)
	streamtest.CheckLog(t, store)

	// The standby is promoted (the old primary is left running, written to
	// no more): repstream continues on it in the same epoch.
	if err := tp.Standby.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	promoted := streamtest.Connect(t, tp.Standby.URL("app"))
	defer promoted.Close(ctx)
	wrctx, stopWriters = context.WithCancel(ctx)
	wait = writeThrough(wrctx, tp.Standby.URL("app"), seed+2)
	time.Sleep(2 * time.Second)
	stopWriters()
	wait()
	streamtest.WaitConvergedIn(t, promoted, store, 90*time.Second)
	streamtest.CheckLog(t, store)
	if got := epochOf(t, base); got != epoch || strings.Count(p.output(), "STARTING A NEW EPOCH") != 1 {
		t.Fatalf("the promotion of the source standby must keep epoch %s; now %s:\n%s", epoch, got, p.output())
	}
	if err := p.stop(30 * time.Second); err != nil {
		t.Fatalf("stop: %v", err)
	}
	streamtest.Exec(t, promoted, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_type = 'logical'`)
}

// conflict turns hot_standby_feedback off and makes the primary's vacuum
// remove catalog rows of database app, until the standby invalidates its
// logical slot; then turns the feedback on again.
func conflict(t *testing.T, tp *topology, primary, standby *pgx.Conn) {
	t.Helper()
	ctx := context.Background()
	feedback := func(on string) {
		streamtest.Exec(t, standby, `ALTER SYSTEM SET hot_standby_feedback = `+on)
		streamtest.Exec(t, standby, `SELECT pg_reload_conf()`)
	}
	feedback("off")
	// The physical slot's xmin goes once the standby reports no feedback.
	waitFor(t, time.Minute, "the primary to drop the standby's xmin", func() bool {
		var n int
		err := primary.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'standby1' AND xmin IS NULL AND catalog_xmin IS NULL`).Scan(&n)
		return err == nil && n == 1
	})
	waitFor(t, time.Minute, "the standby's slot to be invalidated", func() bool {
		streamtest.Exec(t, primary, `CREATE TABLE conflict_test(x int); DROP TABLE conflict_test`)
		streamtest.Exec(t, primary, `VACUUM pg_class`)
		var n int
		err := standby.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'app' AND conflicting`).Scan(&n)
		return err == nil && n == 1
	})
	feedback("on")
}

// checkStandbyDoctor: doctor with serve's configuration finds the standby
// fit to decode on.
func checkStandbyDoctor(t *testing.T, tp *topology) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep := doctor.Run(ctx, doctor.Input{DatabaseURL: tp.Standby.URL("app"), StoreURL: tp.Primary.URL("store"),
		Publication: "app", Slot: "app", Sources: streamtest.Sources()})
	for _, name := range []string{"standby", "standby.hot_standby_feedback", "standby.primary_slot_name", "publication", "slot"} {
		if ch, ok := rep.Find(name); !ok || ch.Status != doctor.OK {
			t.Errorf("doctor on the source standby: %s = %+v (found %v), want ok", name, ch, ok)
		}
	}
	if !rep.OK || t.Failed() {
		var b strings.Builder
		rep.WriteText(&b) //nolint:errcheck
		t.Errorf("doctor on the source standby:\n%s", b.String())
	}
}

// TestStandbySourceChecks: a standby source without a store of its own,
// and a store on a standby, are refused with the fix in the log and in
// /readyz, and retried: no state is written to a read-only server.
func TestStandbySourceChecks(t *testing.T) {
	tp := standbyTopology(t)
	for _, c := range []struct {
		name, cfg, want string
	}{
		{"no store", writeConfig(t, tp.Standby.URL("app"), "app", ""), "set store.database_url to a writable database on the primary"},
		{"store on the standby", writeConfig(t, tp.Primary.URL("app"), "app", "store:\n  database_url: \""+tp.Standby.URL("store")+"\"\n"), "store.database_url is a standby"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := start(t, nil, "serve", "--config", c.cfg)
			base := "http://" + listenAddr(t, p)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := p.waitOutput(ctx, "attempt=2"); err != nil {
				t.Fatalf("%v:\n%s", err, p.output())
			}
			if !strings.Contains(p.output(), c.want) {
				t.Fatalf("the log does not say %q:\n%s", c.want, p.output())
			}
			if code, body := httpGet(t, base+"/readyz", ""); code != http.StatusServiceUnavailable || !strings.Contains(string(body), c.want) {
				t.Fatalf("/readyz = %d %s, want 503 saying %q", code, body, c.want)
			}
			if code, _ := httpGet(t, base+"/healthz", ""); code != http.StatusOK {
				t.Fatalf("/healthz = %d, want 200", code)
			}
			if err := p.stop(30 * time.Second); err != nil {
				t.Fatalf("stop: %v", err)
			}
		})
	}
}

// TestStandbySourceBefore16: before PostgreSQL 16 a standby cannot decode;
// serve says so and what to do instead, and doctor fails it.
func TestStandbySourceBefore16(t *testing.T) {
	if v := serverVersion(t); v >= 160000 {
		t.Skipf("PostgreSQL %d decodes on standbys; TestStandbySource covers it", v)
	}
	tp := standbyTopology(t)
	p := start(t, nil, "serve", "--config", standbyConfig(t, tp, ""))
	base := "http://" + listenAddr(t, p)
	const want = "logical decoding on a standby needs PostgreSQL 16 or later"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.waitOutput(ctx, want); err != nil {
		t.Fatalf("%v:\n%s", err, p.output())
	}
	if code, body := httpGet(t, base+"/readyz", ""); code != http.StatusServiceUnavailable || !strings.Contains(string(body), want) {
		t.Fatalf("/readyz = %d %s, want 503 saying %q", code, body, want)
	}
	if err := p.stop(30 * time.Second); err != nil {
		t.Fatalf("stop: %v", err)
	}
	dctx, dcancel := context.WithTimeout(context.Background(), time.Minute)
	defer dcancel()
	rep := doctor.Run(dctx, doctor.Input{DatabaseURL: tp.Standby.URL("app"), StoreURL: tp.Primary.URL("store"),
		Publication: "app", Slot: "app", Sources: streamtest.Sources()})
	if ch, ok := rep.Find("standby"); !ok || ch.Status != doctor.Fail || !strings.Contains(ch.Message, "16") {
		t.Fatalf("doctor on a PostgreSQL 15 standby source: standby = %+v (found %v), want a failure naming 16", ch, ok)
	}
}
