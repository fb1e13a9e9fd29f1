package doctor_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"

	"github.com/repstream/repstream/cdc"
	"github.com/repstream/repstream/cdc/doctor"
	"github.com/repstream/repstream/cdc/localpg"
	"github.com/repstream/repstream/sql/migrations"
	"github.com/repstream/repstream/stream"
)

// pubDDL is the publication the slot tests use; PostgreSQL 14 has no column lists.
func pubDDL(t *testing.T, dbURL string) string {
	if serverVersion(t, dbURL) < 150000 {
		return `CREATE PUBLICATION pub1 FOR TABLE public.reviews`
	}
	return `CREATE PUBLICATION pub1 FOR TABLE public.reviews (id, rating, seller_id, status)`
}

// A slot streamed by another client fails, naming its PID and
// application_name; slot drop needs --yes, refuses it without --force, and
// with --force terminates that backend and drops the slot.
func TestSlotHeldByAnotherConnection(t *testing.T) {
	dbURL, _ := newDB(t)
	sqlExec(t, dbURL, pubDDL(t, dbURL), `SELECT pg_create_logical_replication_slot('slot1', 'pgoutput')`)
	pid := holdSlot(t, dbURL, "slot1", "pub1", "pg_recvlogical")
	in := input(dbURL)

	rep := doctor.Run(ctx(t), in)
	expectExit(t, rep, doctor.ExitFail)
	ch := expect(t, rep, "slot.active", doctor.Fail)
	if want := fmt.Sprintf(`slot slot1 is held by PID %d (application_name "pg_recvlogical", user postgres`, pid); !strings.Contains(ch.Message, want) {
		t.Errorf("slot.active: %s\nwant %s", ch.Message, want)
	}
	if !strings.Contains(ch.Fix, fmt.Sprintf("SELECT pg_terminate_backend(%d);", pid)) {
		t.Errorf("fix: %s", ch.Fix)
	}
	expect(t, rep, "slot", doctor.OK)
	expect(t, rep, "slot.plugin", doctor.OK)
	expect(t, rep, "slot.database", doctor.OK)
	expect(t, rep, "slot.wal_status", doctor.OK)

	st, err := doctor.ReadSlot(ctx(t), in)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Exists || !st.Active || st.ActivePID != pid || st.ApplicationName != "pg_recvlogical" || st.Plugin != "pgoutput" || st.RestartLSN == "" {
		t.Fatalf("status %+v", st)
	}

	_, err = doctor.DropSlot(ctx(t), in, doctor.DropOptions{})
	if !errors.Is(err, doctor.ErrNotConfirmed) || !strings.Contains(err.Error(), "new epoch") || !strings.Contains(err.Error(), "--force is needed too") {
		t.Fatalf("drop without --yes: %v", err)
	}
	_, err = doctor.DropSlot(ctx(t), in, doctor.DropOptions{Yes: true})
	if !errors.Is(err, doctor.ErrSlotActive) || !strings.Contains(err.Error(), fmt.Sprint(pid)) {
		t.Fatalf("drop without --force: %v", err)
	}
	if st, _ := doctor.ReadSlot(ctx(t), in); !st.Exists {
		t.Fatal("a refused drop dropped the slot")
	}
	res, err := doctor.DropSlot(ctx(t), in, doctor.DropOptions{Yes: true, Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Terminated == nil || res.Terminated.PID != pid || res.Terminated.ApplicationName != "pg_recvlogical" {
		t.Fatalf("terminated %+v", res.Terminated)
	}
	if st, _ := doctor.ReadSlot(ctx(t), in); st.Exists {
		t.Fatal("slot still exists")
	}
	if _, err := doctor.DropSlot(ctx(t), in, doctor.DropOptions{Yes: true}); !errors.Is(err, doctor.ErrNoSlot) {
		t.Fatalf("drop of a missing slot: %v", err)
	}
	rep = doctor.Run(ctx(t), in)
	expectExit(t, rep, doctor.ExitOK)
	expect(t, rep, "slot", doctor.OK)
}

// A slot held under serve's own application_name is probably the running
// service: a warning, not a failure.
func TestSlotHeldByRepstream(t *testing.T) {
	dbURL, _ := newDB(t)
	sqlExec(t, dbURL, pubDDL(t, dbURL), `SELECT pg_create_logical_replication_slot('slot1', 'pgoutput')`)
	conn, err := cdc.ConnectReplication(ctx(t), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if err := pglogrepl.StartReplication(ctx(t), conn, "slot1", 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names 'pub1'"}}); err != nil {
		t.Fatal(err)
	}
	rep := doctor.Run(ctx(t), input(dbURL))
	for i := 0; i < 100; i++ { // START_REPLICATION returns before the slot shows as active
		if c, _ := rep.Find("slot.active"); c.Status != doctor.OK {
			break
		}
		rep = doctor.Run(ctx(t), input(dbURL))
	}
	ch := expect(t, rep, "slot.active", doctor.Warn)
	if !strings.Contains(ch.Message, fmt.Sprintf("PID %d", conn.PID())) || !strings.Contains(ch.Message, "a running repstream") {
		t.Errorf("slot.active: %s", ch.Message)
	}
	if strings.Contains(ch.Fix, "pg_terminate_backend") {
		t.Errorf("slot.active offers to terminate repstream's own session: %s", ch.Fix)
	}
	expectExit(t, rep, doctor.ExitOK)
}

// A slot of another plugin, or of another database, fails.
func TestSlotWrongPluginOrDatabase(t *testing.T) {
	dbURL, _ := newDB(t)
	sqlExec(t, dbURL, pubDDL(t, dbURL), `SELECT pg_create_logical_replication_slot('slot1', 'test_decoding')`)
	rep := doctor.Run(ctx(t), input(dbURL))
	expectExit(t, rep, doctor.ExitFail)
	ch := expect(t, rep, "slot.plugin", doctor.Fail)
	if ch.Message != "slot slot1 uses plugin test_decoding; repstream needs pgoutput" || !strings.HasPrefix(ch.Fix, "SELECT pg_drop_replication_slot('slot1');") {
		t.Errorf("slot.plugin: %s / %s", ch.Message, ch.Fix)
	}
	expect(t, rep, "slot.database", doctor.OK)

	otherURL, otherName := localpg.NewDatabase(t)
	sqlExec(t, otherURL, `SELECT pg_create_logical_replication_slot('slot2', 'pgoutput')`)
	in := input(dbURL)
	in.Slot = "slot2"
	rep = doctor.Run(ctx(t), in)
	expectExit(t, rep, doctor.ExitFail)
	ch = expect(t, rep, "slot.database", doctor.Fail)
	if !strings.Contains(ch.Message, "belongs to database "+otherName) {
		t.Errorf("slot.database: %s", ch.Message)
	}
	expect(t, rep, "slot.plugin", doctor.OK)
}

// writeMeta makes the database look like serve loaded an epoch on slot.
func writeMeta(t *testing.T, dbURL, slot string, p stream.Prior) {
	t.Helper()
	if err := migrations.Up(dbURL); err != nil {
		t.Fatal(err)
	}
	rconn, err := cdc.ConnectReplication(ctx(t), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	sys, err := cdc.IdentifySystem(ctx(t), rconn)
	rconn.Close(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	rules, err := stream.CompileSources([]stream.Source{reviewsSource})
	if err != nil {
		t.Fatal(err)
	}
	sqlExec(t, dbURL, fmt.Sprintf(`INSERT INTO repstream.meta (epoch, system_id, timeline, slot, sources_hash, checkpoint_lsn, log_from_lsn)
SELECT 'e1', '%s', %d, slot_name, '%s', confirmed_flush_lsn, confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '%s'`,
		sys.ID, sys.Timeline, stream.Fingerprint(rules, p), slot))
}

// A source table added to the publication, or a publication created, after
// the slot is detected by transaction id against the slot's catalog_xmin.
func TestPublicationNewerThanSlot(t *testing.T) {
	dbURL, _ := newDB(t)
	sqlExec(t, dbURL, pubDDL(t, dbURL), `SELECT pg_create_logical_replication_slot('slot1', 'pgoutput')`)
	writeMeta(t, dbURL, "slot1", prior)
	in := input(dbURL)

	rep := doctor.Run(ctx(t), in)
	expectExit(t, rep, doctor.ExitOK)
	ch := expect(t, rep, "epoch", doctor.OK)
	if !strings.Contains(ch.Message, "serve resumes epoch e1") {
		t.Errorf("epoch: %s", ch.Message)
	}
	expect(t, rep, "publication.history", doctor.OK)

	// Dropped from the publication and added back: changes in between are lost to the slot.
	sqlExec(t, dbURL, `ALTER PUBLICATION pub1 DROP TABLE public.reviews`,
		`INSERT INTO public.reviews (seller_id, rating) VALUES (1, 1)`,
		strings.Replace(pubDDL(t, dbURL), "CREATE PUBLICATION pub1 FOR", "ALTER PUBLICATION pub1 ADD", 1))
	rep = doctor.Run(ctx(t), in)
	expectExit(t, rep, doctor.ExitFail)
	ch = expect(t, rep, "publication.history", doctor.Fail)
	if !strings.Contains(ch.Message, "table public.reviews joined it") || strings.Contains(ch.Message, "publication pub1 was created") {
		t.Errorf("publication.history: %s", ch.Message)
	}

	// A publication re-created after the slot.
	sqlExec(t, dbURL, `DROP PUBLICATION pub1`, pubDDL(t, dbURL))
	rep = doctor.Run(ctx(t), in)
	ch = expect(t, rep, "publication.history", doctor.Fail)
	if !strings.Contains(ch.Message, "publication pub1 was created or altered") {
		t.Errorf("publication.history: %s", ch.Message)
	}

	// The fix: drop the slot; serve then starts a new epoch and the history no longer matters.
	if _, err := doctor.DropSlot(ctx(t), in, doctor.DropOptions{Yes: true}); err != nil {
		t.Fatal(err)
	}
	rep = doctor.Run(ctx(t), in)
	expectExit(t, rep, doctor.ExitOK)
	ch = expect(t, rep, "epoch", doctor.Warn)
	if !strings.Contains(ch.Message, "slot slot1 is gone") {
		t.Errorf("epoch: %s", ch.Message)
	}
	if _, ok := rep.Find("publication.history"); ok {
		t.Error("history checked against a slot serve re-creates")
	}
}

// What serve will do with an existing slot: drop it when it has no
// checkpoint, start a new epoch when the sources changed.
func TestEpoch(t *testing.T) {
	dbURL, _ := newDB(t)
	sqlExec(t, dbURL, pubDDL(t, dbURL), `SELECT pg_create_logical_replication_slot('slot1', 'pgoutput')`)
	in := input(dbURL)
	rep := doctor.Run(ctx(t), in)
	ch := expect(t, rep, "epoch", doctor.Warn)
	if !strings.Contains(ch.Message, "serve will drop it and create a new one") {
		t.Errorf("epoch: %s", ch.Message)
	}
	writeMeta(t, dbURL, "slot1", stream.Prior{Mean: 1, Weight: 1})
	rep = doctor.Run(ctx(t), in)
	ch = expect(t, rep, "epoch", doctor.Warn)
	if !strings.Contains(ch.Message, "sources configuration changed") {
		t.Errorf("epoch: %s", ch.Message)
	}
	expectExit(t, rep, doctor.ExitOK)

	// What the engine checks besides (stream.Engine.epochReason).
	sqlExec(t, dbURL, `DELETE FROM repstream.meta`)
	writeMeta(t, dbURL, "slot1", prior)
	for _, c := range []struct{ sql, want string }{
		{`UPDATE repstream.meta SET reload_reason = 'the slot is gone'`, "a reload did not finish (it started because the slot is gone)"},
		{`UPDATE repstream.meta SET timeline = timeline + 1`, "the server's timeline changed"},
		{`UPDATE repstream.meta SET shape_hash = 'x', checkpoint_lsn = '0/1'`, "was advanced or re-created behind repstream's back"},
	} {
		sqlExec(t, dbURL, c.sql)
		rep = doctor.Run(ctx(t), in)
		ch = expect(t, rep, "epoch", doctor.Warn)
		if !strings.Contains(ch.Message, c.want) {
			t.Errorf("after %s: epoch: %s", c.sql, ch.Message)
		}
		sqlExec(t, dbURL, `DELETE FROM repstream.meta`)
		writeMeta(t, dbURL, "slot1", prior)
	}
}

// A slot past max_slot_wal_keep_size loses its WAL: wal_status = lost fails.
// Retained WAL over the threshold warns.
func TestSlotLostWAL(t *testing.T) {
	c, err := localpg.Start(ctx(t), localpg.Options{NoFsync: true, Settings: []string{"max_slot_wal_keep_size = '1MB'", "wal_keep_size = 0"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Stop() }) //nolint:errcheck
	dbURL := c.URL("postgres")
	sqlExec(t, dbURL, reviewsDDL, pubDDL(t, dbURL), `SELECT pg_create_logical_replication_slot('slot1', 'pgoutput')`)
	in := input(dbURL)
	in.RetainedWarnBytes = 1
	sqlExec(t, dbURL, `INSERT INTO public.reviews (seller_id, rating) SELECT g, 5 FROM generate_series(1, 1000) g`)
	rep := doctor.Run(ctx(t), in)
	expect(t, rep, "slot.retained_wal", doctor.Warn)
	expect(t, rep, "slot.wal_status", doctor.OK)

	for i := 0; i < 5; i++ {
		sqlExec(t, dbURL, `INSERT INTO public.reviews (seller_id, rating) SELECT g, 5 FROM generate_series(1, 1000) g`, `SELECT pg_switch_wal()`)
	}
	sqlExec(t, dbURL, `CHECKPOINT`)
	rep = doctor.Run(ctx(t), in)
	// serve handles a lost slot itself (a new epoch): a warning, and no drop to run by hand.
	ch := expect(t, rep, "slot.wal_status", doctor.Warn)
	if !strings.Contains(ch.Message, "wal_status = lost") || !strings.Contains(ch.Message, "new epoch by itself") || strings.Contains(ch.Fix, "slot drop") {
		t.Errorf("slot.wal_status: %s / %s", ch.Message, ch.Fix)
	}
	fix := ch.Fix[strings.Index(ch.Fix, "ALTER SYSTEM"):]
	sqlExec(t, dbURL, strings.SplitAfter(fix, ";")[:2]...)

	// slot status says lost, what follows, and exits non-zero.
	st, err := doctor.ReadSlot(ctx(t), doctor.Input{DatabaseURL: dbURL, Slot: "slot1"})
	if err != nil {
		t.Fatal(err)
	}
	if !st.Lost() || len(st.Why) == 0 || !strings.Contains(st.Why[0], "new epoch") {
		t.Fatalf("slot status of a lost slot: lost=%v why=%q", st.Lost(), st.Why)
	}
	var b strings.Builder
	st.WriteText(&b) //nolint:errcheck // a strings.Builder
	if !strings.Contains(b.String(), "why") || !strings.Contains(b.String(), "lost") || !strings.Contains(b.String(), "safe_wal_size") {
		t.Fatalf("slot status text:\n%s", b.String())
	}
}

// Migrations behind warn (serve applies them), applied are ok, dirty fails.
func TestMigrations(t *testing.T) {
	dbURL, _ := newDB(t)
	in := input(dbURL)
	expect(t, doctor.Run(ctx(t), in), "migrations", doctor.Warn)
	if err := migrations.Up(dbURL); err != nil {
		t.Fatal(err)
	}
	expect(t, doctor.Run(ctx(t), in), "migrations", doctor.OK)
	sqlExec(t, dbURL, `UPDATE repstream.schema_migrations SET dirty = true`)
	rep := doctor.Run(ctx(t), in)
	expectExit(t, rep, doctor.ExitFail)
	expect(t, rep, "migrations", doctor.Fail)
	sqlExec(t, dbURL, fmt.Sprintf(`UPDATE repstream.schema_migrations SET dirty = false, version = %d`, migrations.Latest()+1))
	expect(t, doctor.Run(ctx(t), in), "migrations", doctor.Fail)
}

// Doctor only reads: it leaves no table, slot or publication behind.
func TestDoctorWritesNothing(t *testing.T) {
	dbURL, _ := newDB(t)
	doctor.Run(ctx(t), input(dbURL))
	var n int
	queryRow(t, dbURL, `SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = 'repstream')
	                        + (SELECT count(*) FROM pg_publication) + (SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'slot1')`, &n)
	if n != 0 {
		t.Fatalf("doctor left %d objects behind", n)
	}
}
