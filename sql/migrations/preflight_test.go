package migrations_test

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/repstream/repstream/cdc/localpg"
	"github.com/repstream/repstream/sql/migrations"
)

// asRole is url with user name, which has no password (trust auth).
func asRole(t *testing.T, dbURL, name string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(name)
	return u.String()
}

func exec(t *testing.T, dbURL string, sql string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// newRole creates a login role without CREATE on the database (PostgreSQL
// grants none by default) and drops it when the test ends.
func newRole(t *testing.T, admin, name string) string {
	t.Helper()
	exec(t, admin, `DROP ROLE IF EXISTS `+name+`; CREATE ROLE `+name+` LOGIN`)
	t.Cleanup(func() {
		ctx := context.Background()
		if conn, err := pgx.Connect(ctx, admin); err == nil {
			conn.Exec(ctx, `DROP OWNED BY `+name+`; DROP ROLE IF EXISTS `+name) //nolint:errcheck // best effort
			conn.Close(ctx)
		}
	})
	return asRole(t, admin, name)
}

// Once the schema is at this binary's version, Up and Version need no
// CREATE privilege on the database: a role that owns schema repstream
// runs serve for good after a DBA created the schema for it.
func TestUpNeedsNoCreateOnceCurrent(t *testing.T) {
	admin, db := localpg.NewDatabase(t)
	app := newRole(t, admin, "app_owner_"+db)
	exec(t, admin, `CREATE SCHEMA repstream AUTHORIZATION "app_owner_`+db+`"`)
	if err := migrations.Up(app); err != nil {
		t.Fatalf("first up as the schema's owner: %v", err)
	}
	if err := migrations.Up(app); err != nil {
		t.Fatalf("up at the current version without CREATE on the database: %v", err)
	}
	if v, dirty, latest, err := migrations.Version(app); err != nil || v != latest || dirty {
		t.Fatalf("version = %d dirty %v latest %d err %v", v, dirty, latest, err)
	}
}

// A schema migrated by another role: Up names each missing privilege with
// a GRANT that, run as printed, makes the next Up pass.
func TestUpPrintsFixesThatWork(t *testing.T) {
	admin, db := localpg.NewDatabase(t)
	name := "app_grantee_" + db
	app := newRole(t, admin, name)
	if err := migrations.Up(admin); err != nil {
		t.Fatal(err)
	}
	for round := 0; ; round++ {
		err := migrations.Up(app)
		if err == nil {
			break
		}
		if round == 3 {
			t.Fatalf("still failing after applying the printed fixes: %v", err)
		}
		ctx := context.Background()
		conn, cerr := pgx.Connect(ctx, app)
		if cerr != nil {
			t.Fatal(cerr)
		}
		st, ierr := migrations.Inspect(ctx, conn)
		conn.Close(ctx)
		if ierr != nil || len(st.Missing) == 0 {
			t.Fatalf("Up failed (%v) but Inspect finds nothing missing (%v)", err, ierr)
		}
		for _, m := range st.Missing {
			if !strings.Contains(err.Error(), m.Fix) {
				t.Fatalf("error %q does not carry the fix %q", err, m.Fix)
			}
			exec(t, admin, m.Fix)
		}
	}
	// serve's own writes now work as that role.
	exec(t, app, `INSERT INTO repstream.rows (source, key, vals) VALUES (1, 'k', '{}'); DELETE FROM repstream.rows`)
}

// A missing schema that the role may not create: the fix creates it for the role.
func TestUpWithoutSchemaOrCreate(t *testing.T) {
	admin, db := localpg.NewDatabase(t)
	name := "app_nocreate_" + db
	app := newRole(t, admin, name)
	err := migrations.Up(app)
	want := `CREATE SCHEMA repstream AUTHORIZATION "` + name + `";`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("up without CREATE = %v, want the fix %s", err, want)
	}
	exec(t, admin, want)
	if err := migrations.Up(app); err != nil {
		t.Fatalf("up after the printed fix: %v", err)
	}
}
