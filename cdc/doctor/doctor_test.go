package doctor_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/repstream/repstream/cdc/doctor"
	"github.com/repstream/repstream/cdc/localpg"
	"github.com/repstream/repstream/sql/migrations"
	"github.com/repstream/repstream/stream"
)

// A database ready for serve: only warnings, exit 0; the publication serve
// would create is a warning, the one doctor.CreatePublication makes is ok.
func TestHealthyDatabase(t *testing.T) {
	dbURL, _ := newDB(t)
	in := input(dbURL)

	rep := doctor.Run(ctx(t), in)
	expectExit(t, rep, doctor.ExitOK)
	expect(t, rep, "config", doctor.OK)
	expect(t, rep, "connect", doctor.OK)
	expect(t, rep, "wal_level", doctor.OK)
	expect(t, rep, "max_replication_slots", doctor.OK)
	expect(t, rep, "max_wal_senders", doctor.OK)
	expect(t, rep, "max_slot_wal_keep_size", doctor.Warn) // the test cluster keeps the default, unlimited
	expect(t, rep, "role.replication", doctor.OK)
	expect(t, rep, "replication_connection", doctor.OK)
	expect(t, rep, "role.select:public.reviews", doctor.OK)
	expect(t, rep, "table:public.reviews", doctor.OK)
	expect(t, rep, "table.primary_key:public.reviews", doctor.OK)
	expect(t, rep, "table.replica_identity:public.reviews", doctor.OK)
	expect(t, rep, "table.columns:public.reviews", doctor.OK)
	c := expect(t, rep, "publication", doctor.Warn) // absent; superuser may create it
	if !strings.Contains(c.Message, "serve will create it") {
		t.Errorf("publication: %s", c.Message)
	}
	expect(t, rep, "slot", doctor.OK)
	expect(t, rep, "epoch", doctor.OK)
	expect(t, rep, "migrations", doctor.Warn) // serve applies them at start

	p, err := doctor.CreatePublication(ctx(t), in)
	if err != nil {
		t.Fatal(err)
	}
	want := `CREATE PUBLICATION "pub1" FOR TABLE "public"."reviews" ("id", "rating", "seller_id", "status")`
	if serverVersion(t, dbURL) < 150000 {
		want = `CREATE PUBLICATION "pub1" FOR TABLE "public"."reviews" WITH`
	}
	if !strings.Contains(p.DDL, want) {
		t.Fatalf("DDL %s, want %s", p.DDL, want)
	}
	if err := migrations.Up(dbURL); err != nil {
		t.Fatal(err)
	}
	rep = doctor.Run(ctx(t), in)
	expectExit(t, rep, doctor.ExitOK)
	expect(t, rep, "publication", doctor.OK)
	expect(t, rep, "publication.publish", doctor.OK)
	expect(t, rep, "publication.table:public.reviews", doctor.OK)
	expect(t, rep, "publication.columns:public.reviews", doctor.OK)
	expect(t, rep, "publication.app_writes:public.reviews", doctor.OK)
	expect(t, rep, "migrations", doctor.OK)
	for _, ch := range rep.Checks {
		if ch.Status != doctor.OK && ch.Name != "max_slot_wal_keep_size" && (ch.Name != "server_version" || serverVersion(t, dbURL) >= 150000) {
			t.Errorf("%s: %s %s", ch.Name, ch.Status, ch.Message)
		}
	}

	_, err = doctor.CreatePublication(ctx(t), in)
	if !errors.Is(err, doctor.ErrPublicationExists) || !strings.Contains(err.Error(), "covers the sources") {
		t.Fatalf("second create: %v", err)
	}
}

// A second throwaway cluster with wal_level = replica, every slot taken and
// no WAL sender allowed: each setting fails with its fix, exit 2.
func TestMisconfiguredCluster(t *testing.T) {
	c, err := localpg.Start(ctx(t), localpg.Options{WALLevel: "replica", NoFsync: true,
		Settings: []string{"max_replication_slots = 1", "max_wal_senders = 0"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
	})
	dbURL := c.URL("postgres")
	sqlExec(t, dbURL, reviewsDDL, `SELECT pg_create_physical_replication_slot('standby1')`)

	rep := doctor.Run(ctx(t), input(dbURL))
	expectExit(t, rep, doctor.ExitFail)
	ch := expect(t, rep, "wal_level", doctor.Fail)
	if ch.Message != "wal_level = replica; logical replication needs wal_level = logical" ||
		ch.Fix != "ALTER SYSTEM SET wal_level = logical; -- then restart Postgres" {
		t.Errorf("wal_level: %q fix %q", ch.Message, ch.Fix)
	}
	ch = expect(t, rep, "max_replication_slots", doctor.Fail)
	if !strings.Contains(ch.Fix, "max_replication_slots = 6") {
		t.Errorf("max_replication_slots fix: %s", ch.Fix)
	}
	expect(t, rep, "max_wal_senders", doctor.Fail)
	expect(t, rep, "max_slot_wal_keep_size", doctor.Warn)
	expect(t, rep, "role.replication", doctor.OK) // superuser; the server is what refuses
	ch = expect(t, rep, "replication_connection", doctor.Fail)
	if !strings.Contains(ch.Fix, "max_wal_senders") {
		t.Errorf("replication_connection fix: %s", ch.Fix)
	}
	expect(t, rep, "table:public.reviews", doctor.OK)

	// The text form: one line per check, fixes indented under the failures.
	out := text(rep)
	for _, want := range []string{
		"FAIL wal_level = replica; logical replication needs wal_level = logical\n     fix: ALTER SYSTEM SET wal_level = logical; -- then restart Postgres\n",
		"ok   table public.reviews exists\n",
		"WARN max_slot_wal_keep_size = -1",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("text output lacks %q:\n%s", want, out)
		}
	}

	// Fixing the settings as told clears them.
	sqlExec(t, dbURL, "ALTER SYSTEM SET wal_level = logical", "ALTER SYSTEM SET max_replication_slots = 6",
		"ALTER SYSTEM SET max_wal_senders = 5", "ALTER SYSTEM SET max_slot_wal_keep_size = '1GB'")
	if err := c.Restart(ctx(t)); err != nil {
		t.Fatal(err)
	}
	rep = doctor.Run(ctx(t), input(dbURL))
	expectNoFail(t, rep)
	expect(t, rep, "wal_level", doctor.OK)
	expect(t, rep, "max_replication_slots", doctor.OK)
	expect(t, rep, "max_wal_senders", doctor.OK)
	expect(t, rep, "max_slot_wal_keep_size", doctor.OK)
	expect(t, rep, "replication_connection", doctor.OK)
}

// A role with SELECT but without REPLICATION, which neither owns the table nor
// may create the publication: both fail, exit 2. Owning the table turns the
// absent publication into a warning.
func TestRoleWithoutReplication(t *testing.T) {
	dbURL, name := newDB(t)
	role := newRole(t, dbURL, name, "GRANT SELECT ON public.reviews TO %s")
	rep := doctor.Run(ctx(t), input(asRole(dbURL, role)))
	expectExit(t, rep, doctor.ExitFail)
	ch := expect(t, rep, "role.replication", doctor.Fail)
	if want := fmt.Sprintf("ALTER ROLE %q REPLICATION; -- as a superuser", role); ch.Fix != want {
		t.Errorf("role.replication fix %q, want %q", ch.Fix, want)
	}
	if _, ok := rep.Find("replication_connection"); ok {
		t.Error("replication_connection repeats role.replication")
	}
	expect(t, rep, "role.select:public.reviews", doctor.OK)
	ch = expect(t, rep, "publication", doctor.Fail)
	if !strings.Contains(ch.Message, "may not create it") || !strings.Contains(ch.Fix, `CREATE PUBLICATION "pub1"`) {
		t.Errorf("publication: %s / %s", ch.Message, ch.Fix)
	}
	// The migrations cannot be applied by this role either (PostgreSQL 15
	// grants no CREATE on schema public).
	expect(t, rep, "migrations", doctor.Fail)

	// The fixes doctor printed work.
	sqlExec(t, dbURL, fmt.Sprintf("ALTER ROLE %s REPLICATION", pgx.Identifier{role}.Sanitize()),
		fmt.Sprintf("ALTER TABLE public.reviews OWNER TO %s", pgx.Identifier{role}.Sanitize()),
		fmt.Sprintf("GRANT CREATE ON DATABASE %s TO %s", pgx.Identifier{name}.Sanitize(), pgx.Identifier{role}.Sanitize()),
		fmt.Sprintf("GRANT CREATE ON SCHEMA public TO %s", pgx.Identifier{role}.Sanitize()))
	rep = doctor.Run(ctx(t), input(asRole(dbURL, role)))
	expectExit(t, rep, doctor.ExitOK)
	expect(t, rep, "role.replication", doctor.OK)
	expect(t, rep, "replication_connection", doctor.OK)
	ch = expect(t, rep, "publication", doctor.Warn)
	if !strings.Contains(ch.Message, "owns the source tables") {
		t.Errorf("publication: %s", ch.Message)
	}
	expect(t, rep, "migrations", doctor.Warn)

	// With create_publication off, an absent publication blocks.
	in := input(asRole(dbURL, role))
	in.CreatePublication = false
	rep = doctor.Run(ctx(t), in)
	expect(t, rep, "publication", doctor.Fail)
}

// A role that may read only some of the needed columns fails with a
// column-level GRANT; a column grant covering them is enough.
func TestRoleColumnPrivileges(t *testing.T) {
	dbURL, name := newDB(t)
	role := newRole(t, dbURL, name, "GRANT SELECT (id, rating) ON public.reviews TO %s")
	rep := doctor.Run(ctx(t), input(asRole(dbURL, role)))
	ch := expect(t, rep, "role.select:public.reviews", doctor.Fail)
	if !strings.Contains(ch.Message, "seller_id, status") {
		t.Errorf("role.select: %s", ch.Message)
	}
	sqlExec(t, dbURL, strings.Replace(ch.Fix, "; -- as the table's owner (or GRANT SELECT ON the whole table)", "", 1))
	rep = doctor.Run(ctx(t), input(asRole(dbURL, role)))
	expect(t, rep, "role.select:public.reviews", doctor.OK)
}

// A publication lacking a source table, a needed column and some operations:
// each fails with a fix, and running the fixes as printed clears them.
func TestPublicationLacksTableAndColumn(t *testing.T) {
	dbURL, _ := newDB(t)
	needColumnLists(t, dbURL)
	sqlExec(t, dbURL, `CREATE TABLE public.ratings (user_id bigint, item bigint, score numeric, PRIMARY KEY (user_id, item))`,
		`CREATE PUBLICATION pub1 FOR TABLE public.reviews (id, seller_id, rating) WHERE (id > 0) WITH (publish = 'insert, update')`)
	in := input(dbURL, reviewsSource, stream.Source{Table: "ratings", Subject: "user:{user_id}", Score: "score", Scale: []float64{0, 10}})

	rep := doctor.Run(ctx(t), in)
	expectExit(t, rep, doctor.ExitFail)
	expect(t, rep, "publication", doctor.OK)
	pub := expect(t, rep, "publication.publish", doctor.Fail)
	tbl := expect(t, rep, "publication.table:public.ratings", doctor.Fail)
	col := expect(t, rep, "publication.columns:public.reviews", doctor.Fail)
	if !strings.Contains(col.Message, "lacks status") {
		t.Errorf("publication.columns: %s", col.Message)
	}
	expect(t, rep, "publication.table:public.reviews", doctor.OK)
	expect(t, rep, "publication.app_writes:public.reviews", doctor.OK) // the row filter reads only the key

	// Run each fix as printed (everything before the trailing comment).
	for _, f := range []string{pub.Fix, tbl.Fix, col.Fix} {
		stmt, _, _ := strings.Cut(f, " -- ")
		sqlExec(t, dbURL, stmt)
	}
	rep = doctor.Run(ctx(t), in)
	expect(t, rep, "publication.publish", doctor.OK)
	expect(t, rep, "publication.table:public.ratings", doctor.OK)
	expect(t, rep, "publication.columns:public.reviews", doctor.OK)
	expect(t, rep, "publication.columns:public.ratings", doctor.OK)
	var filter string
	queryRow(t, dbURL, `SELECT rowfilter FROM pg_publication_tables WHERE pubname = 'pub1' AND tablename = 'reviews'`, &filter)
	if !strings.Contains(filter, "id > 0") {
		t.Errorf("the column fix dropped the row filter: %q", filter)
	}
}

// Schema repstream migrated by another role (a DBA ran `migrate up` as
// superuser): doctor fails exactly where serve would, each printed fix
// pasted as is clears the finding, and then serve's own preflight passes.
func TestMigrationsOwnedByAnotherRole(t *testing.T) {
	dbURL, name := newDB(t)
	role := newRole(t, dbURL, name, "GRANT SELECT ON public.reviews TO %s", "ALTER ROLE %s REPLICATION")
	if err := migrations.Up(dbURL); err != nil {
		t.Fatal(err)
	}
	app := asRole(dbURL, role)
	if err := migrations.Up(app); err == nil {
		t.Fatal("serve's preflight passes for a role without access to schema repstream")
	}
	for round := 0; ; round++ {
		rep := doctor.Run(ctx(t), input(app))
		ch, _ := rep.Find("migrations")
		if ch.Status != doctor.Fail {
			break
		}
		if round == 3 {
			t.Fatalf("migrations still fails after pasting its fixes: %s / %s", ch.Message, ch.Fix)
		}
		sqlExec(t, dbURL, strings.Split(ch.Fix, "\n")...)
	}
	expect(t, doctor.Run(ctx(t), input(app)), "migrations", doctor.OK)
	if err := migrations.Up(app); err != nil {
		t.Fatalf("doctor passes but serve's preflight fails: %v", err)
	}
}

// Source tables in a schema the role has no USAGE on: SELECT on the table
// is not enough, and the fix is the GRANT USAGE that, pasted, clears it.
func TestSchemaWithoutUsage(t *testing.T) {
	dbURL, name := newDB(t)
	sqlExec(t, dbURL, `CREATE SCHEMA shop`, `CREATE TABLE shop.reviews (id bigint PRIMARY KEY, seller_id int, rating int, status text)`)
	role := newRole(t, dbURL, name, "GRANT SELECT ON shop.reviews TO %s", "ALTER ROLE %s REPLICATION")
	src := stream.Source{Table: "shop.reviews", Subject: "seller:{seller_id}", Score: "rating", Scale: []float64{1, 5}}
	rep := doctor.Run(ctx(t), input(asRole(dbURL, role), src))
	ch := expect(t, rep, "role.usage:shop.reviews", doctor.Fail)
	want := fmt.Sprintf(`GRANT USAGE ON SCHEMA "shop" TO %s;`, pgx.Identifier{role}.Sanitize())
	if ch.Fix != want {
		t.Fatalf("fix %q, want %q", ch.Fix, want)
	}
	sqlExec(t, dbURL, want)
	rep = doctor.Run(ctx(t), input(asRole(dbURL, role), src))
	if ch, ok := rep.Find("role.usage:shop.reviews"); ok {
		t.Fatalf("still %s after the fix: %s", ch.Status, ch.Message)
	}
	expect(t, rep, "role.select:shop.reviews", doctor.OK)
}

// Row-level security that applies to the role fails (the snapshot would
// miss rows the stream sees); the printed fix clears it.
func TestRoleUnderRowLevelSecurity(t *testing.T) {
	dbURL, name := newDB(t)
	role := newRole(t, dbURL, name, "GRANT SELECT ON public.reviews TO %s")
	sqlExec(t, dbURL, `ALTER TABLE public.reviews ENABLE ROW LEVEL SECURITY`)
	rep := doctor.Run(ctx(t), input(asRole(dbURL, role)))
	ch := expect(t, rep, "role.rls:public.reviews", doctor.Fail)
	sqlExec(t, dbURL, strings.SplitN(ch.Fix, ";", 2)[0])
	rep = doctor.Run(ctx(t), input(asRole(dbURL, role)))
	for _, c := range rep.Checks {
		if c.Name == "role.rls:public.reviews" {
			t.Fatalf("still %s: %s", c.Status, c.Message)
		}
	}
}
