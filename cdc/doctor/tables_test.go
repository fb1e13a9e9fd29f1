package doctor_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/repstream/repstream/cdc/doctor"
	"github.com/repstream/repstream/stream"
)

// Each source table's problems fail (or warn) on their own, naming the table.
func TestSourceTables(t *testing.T) {
	dbURL, _ := newDB(t)
	sqlExec(t, dbURL,
		`CREATE TABLE public.nokey (seller_id bigint, rating int)`,
		`CREATE TABLE public.nothing (id int PRIMARY KEY, seller_id bigint, rating int)`,
		`ALTER TABLE public.nothing REPLICA IDENTITY NOTHING`,
		`CREATE TABLE public.full_ident (id int PRIMARY KEY, seller_id bigint, rating int)`,
		`ALTER TABLE public.full_ident REPLICA IDENTITY FULL`,
		`CREATE TABLE public.wrongcols (id int PRIMARY KEY, seller bigint, stars int)`,
	)
	src := func(table string) stream.Source {
		return stream.Source{Table: table, Subject: "seller:{seller_id}", Score: "rating", Scale: []float64{1, 5}}
	}
	in := input(dbURL, src("public.missing"), src("nokey"), src("nothing"), src("full_ident"), src("wrongcols"))
	in.CreatePublication = false
	rep := doctor.Run(ctx(t), in)
	expectExit(t, rep, doctor.ExitFail)

	ch := expect(t, rep, "table:public.missing", doctor.Fail)
	if !strings.Contains(ch.Message, "sources[0].table") {
		t.Errorf("missing table does not name the key: %s", ch.Message)
	}
	expect(t, rep, "table.primary_key:public.nokey", doctor.Fail)
	ch = expect(t, rep, "table.replica_identity:public.nothing", doctor.Fail)
	if ch.Fix != `ALTER TABLE "public"."nothing" REPLICA IDENTITY DEFAULT;` {
		t.Errorf("fix: %s", ch.Fix)
	}
	expect(t, rep, "table.replica_identity:public.full_ident", doctor.Warn)
	ch = expect(t, rep, "table.columns:public.wrongcols", doctor.Fail)
	if !strings.Contains(ch.Message, "sources[4]: column(s) rating, seller_id not in table public.wrongcols") {
		t.Errorf("table.columns: %s", ch.Message)
	}
	expect(t, rep, "table.columns:public.full_ident", doctor.OK)
	expect(t, rep, "table.primary_key:public.full_ident", doctor.OK)

	// publication sql refuses to plan around the blockers and names them.
	p, err := doctor.PlanPublication(ctx(t), in)
	if !errors.Is(err, doctor.ErrPlanBlocked) {
		t.Fatalf("plan: %v", err)
	}
	for _, want := range []string{"public.missing does not exist", "public.nokey has no primary key", "public.wrongcols has no column(s) rating, seller_id"} {
		if !strings.Contains(err.Error(), want) || !strings.Contains(p.SQL(), "-- BLOCKED: table "+strings.SplitN(want, " ", 2)[0]) {
			t.Errorf("blockers lack %q: %v\n%s", want, err, p.SQL())
		}
	}
}

// A FULL replica identity under a column list makes Postgres reject the
// application's UPDATE and DELETE: the planned publication lists no columns
// for such a table, and doctor fails on a DBA's publication that does, with
// the statement that fixes it.
func TestPublicationBreaksAppWrites(t *testing.T) {
	dbURL, _ := newDB(t)
	needColumnLists(t, dbURL)
	sqlExec(t, dbURL, `ALTER TABLE public.reviews REPLICA IDENTITY FULL`, `INSERT INTO public.reviews (seller_id, rating) VALUES (1, 5)`)
	in := input(dbURL)

	// Absent: serve would create it without a column list for reviews.
	rep := doctor.Run(ctx(t), in)
	expect(t, rep, "publication", doctor.Warn)
	if ch, ok := rep.Find("publication.app_writes:public.reviews"); ok {
		t.Fatalf("app_writes for a publication serve creates right: %+v", ch)
	}
	p, err := doctor.PlanPublication(ctx(t), in)
	if err != nil {
		t.Fatal(err)
	}
	sql := p.SQL()
	if !strings.Contains(sql, `FOR TABLE "public"."reviews" WITH`) || strings.Contains(sql, "REPLICA IDENTITY") {
		t.Fatalf("publication sql lists columns of a FULL table, or changes its identity:\n%s", sql)
	}

	// A DBA's publication with a column list: the application's UPDATE fails.
	sqlExec(t, dbURL, `CREATE PUBLICATION pub1 FOR TABLE public.reviews (id, rating, seller_id, status)`)
	conn, err := pgx.Connect(ctx(t), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx(t))
	if _, err := conn.Exec(ctx(t), `UPDATE public.reviews SET rating = 4`); err == nil || !strings.Contains(err.Error(), "cannot update table") {
		t.Fatalf("UPDATE under FULL identity and a column list: %v", err)
	}
	rep = doctor.Run(ctx(t), in)
	expectExit(t, rep, doctor.ExitFail)
	ch := expect(t, rep, "publication.app_writes:public.reviews", doctor.Fail)
	stmt, _, _ := strings.Cut(ch.Fix, " -- ")
	sqlExec(t, dbURL, stmt)
	if _, err := conn.Exec(ctx(t), `UPDATE public.reviews SET rating = 4`); err != nil {
		t.Fatalf("UPDATE after the fix: %v", err)
	}
	rep = doctor.Run(ctx(t), in)
	expect(t, rep, "publication.app_writes:public.reviews", doctor.OK)
	expect(t, rep, "table.replica_identity:public.reviews", doctor.Warn)

	sqlExec(t, dbURL, `ALTER TABLE public.reviews REPLICA IDENTITY DEFAULT`)
	// A row filter on a column outside the identity breaks UPDATE too.
	sqlExec(t, dbURL, `ALTER PUBLICATION pub1 SET TABLE public.reviews (id, rating, seller_id, status) WHERE (status = 'published')`)
	if _, err := conn.Exec(ctx(t), `UPDATE public.reviews SET rating = 3`); err == nil {
		t.Fatal("UPDATE under a row filter outside the identity succeeded")
	}
	rep = doctor.Run(ctx(t), in)
	ch = expect(t, rep, "publication.app_writes:public.reviews", doctor.Fail)
	if !strings.Contains(ch.Message, "row filter reads status") {
		t.Errorf("app_writes: %s", ch.Message)
	}
	_, stmt, _ = strings.Cut(ch.Fix, "`where:`): ")
	sqlExec(t, dbURL, stmt)
	if _, err := conn.Exec(ctx(t), `UPDATE public.reviews SET rating = 3`); err != nil {
		t.Fatalf("UPDATE after dropping the row filter: %v", err)
	}
	rep = doctor.Run(ctx(t), in)
	expect(t, rep, "publication.app_writes:public.reviews", doctor.OK)
	expect(t, rep, "publication.columns:public.reviews", doctor.OK)
}

// Configuration errors are failures naming their keys; with no database URL
// nothing is checked against a database, and the exit code is still 2.
func TestConfigErrors(t *testing.T) {
	loadErr := errors.Join(&stream.ConfigError{Key: "retention", Msg: "must be a positive duration such as 168h"},
		&stream.ConfigError{Key: "log.format", Msg: `"xml": use text or json`})
	rep := doctor.Run(ctx(t), doctor.Input{ConfigErr: loadErr})
	expectExit(t, rep, doctor.ExitFail)
	expect(t, rep, "config:retention", doctor.Fail)
	expect(t, rep, "config:log.format", doctor.Fail)
	expect(t, rep, "connect", doctor.Fail)
	if _, ok := rep.Find("config"); ok {
		t.Error("an invalid configuration reported as valid")
	}

	dbURL, _ := newDB(t)
	in := input(dbURL, stream.Source{Table: "public.reviews", Subject: "seller", Score: "rating", Scale: []float64{5, 1}})
	in.Slot = ""
	rep = doctor.Run(ctx(t), in)
	expectExit(t, rep, doctor.ExitFail)
	expect(t, rep, "config:slot", doctor.Fail)
	ch := expect(t, rep, "config:sources[0].subject", doctor.Fail)
	if !strings.HasPrefix(ch.Message, "config sources[0].subject: ") {
		t.Errorf("message: %s", ch.Message)
	}
	expect(t, rep, "wal_level", doctor.OK) // the database is still checked
}

// A server doctor cannot reach: one failure with the fix, exit 1.
func TestCannotConnect(t *testing.T) {
	in := input("postgres://postgres@127.0.0.1:1/nowhere?sslmode=disable&connect_timeout=5")
	rep := doctor.Run(ctx(t), in)
	expectExit(t, rep, doctor.ExitIncomplete)
	ch := expect(t, rep, "connect", doctor.Fail)
	if !strings.Contains(ch.Fix, "start Postgres, or fix 127.0.0.1:1 in database_url") {
		t.Errorf("fix: %s", ch.Fix)
	}

	dbURL, _ := newDB(t)
	rep = doctor.Run(ctx(t), input(asRole(dbURL, "no_such_role")))
	expectExit(t, rep, doctor.ExitIncomplete)
	ch = expect(t, rep, "connect", doctor.Fail)
	if ch.Fix != fmt.Sprintf("CREATE ROLE %q LOGIN PASSWORD '...'; -- or fix the user in database_url", "no_such_role") {
		t.Errorf("fix: %s", ch.Fix)
	}
}

func TestWriteText(t *testing.T) {
	rep := doctor.Report{OK: false, Checks: []doctor.Check{
		{Name: "a", Status: doctor.OK, Message: "wal_level = logical", Fix: "ignored"},
		{Name: "b", Status: doctor.Warn, Message: "careful", Fix: "do this"},
		{Name: "c", Status: doctor.Fail, Message: "broken", Fix: "line one\nline two"},
	}}
	want := "ok   wal_level = logical\n" +
		"WARN careful\n     fix: do this\n" +
		"FAIL broken\n     fix: line one\n          line two\n" +
		"\n1 ok, 1 warnings, 1 failures\n"
	if got := text(rep); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestUnparsableURL(t *testing.T) {
	rep := doctor.Run(ctx(t), input("postgres://a b@:x/"))
	expectExit(t, rep, doctor.ExitIncomplete)
	ch := expect(t, rep, "connect", doctor.Fail)
	if !strings.HasPrefix(ch.Fix, "fix database_url: postgres://") {
		t.Errorf("fix: %s", ch.Fix)
	}
}
