// Package migrations owns repstream's schema: the SQL files are embedded in
// the binary and applied with golang-migrate, at start and by `repstream migrate`.
package migrations

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/golang-migrate/migrate/v4"
	"github.com/golang-migrate/migrate/v4/database"
	_ "github.com/golang-migrate/migrate/v4/database/pgx/v5" // registers pgx5://
	"github.com/golang-migrate/migrate/v4/source/iofs"
)

//go:embed files/*.sql
var files embed.FS

// Table records the applied version. It lives in repstream's own schema, so
// a role needs no CREATE privilege on public (PostgreSQL 15 grants none).
const Table = `"repstream"."schema_migrations"`

func open(databaseURL string) (*migrate.Migrate, error) {
	if err := ensureSchema(databaseURL); err != nil {
		return nil, err
	}
	src, err := iofs.New(files, "files")
	if err != nil {
		return nil, fmt.Errorf("migrations: embedded files: %w", err)
	}
	u, err := migrateURL(databaseURL)
	if err != nil {
		return nil, err
	}
	m, err := migrate.NewWithSourceInstance("iofs", src, u)
	if err != nil {
		return nil, fmt.Errorf("migrations: connect: %w", err)
	}
	return m, nil
}

// migrateURL rewrites a libpq URL into golang-migrate's pgx5:// form with
// repstream's own version table.
func migrateURL(databaseURL string) (string, error) {
	u, err := url.Parse(databaseURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", fmt.Errorf("migrations: database_url must be a postgres:// URL (key-value DSNs are not supported here)")
	}
	u.Scheme = "pgx5"
	q := u.Query()
	q.Set("x-migrations-table", Table)
	q.Set("x-migrations-table-quoted", "1")
	u.RawQuery = q.Encode()
	return u.String(), nil
}

func closeM(m *migrate.Migrate, err error) error {
	se, de := m.Close()
	return errors.Join(err, se, de)
}

// Up applies every migration not yet applied. It first checks what the
// role may do (see Inspect): a schema already at this binary's version
// needs no CREATE privilege, only USAGE and read-write access to its tables.
func Up(databaseURL string) error {
	st, err := inspect(databaseURL)
	if err != nil {
		return err
	}
	if err := st.Err(); err != nil {
		return err
	}
	if st.Current() {
		return nil
	}
	m, err := open(databaseURL)
	if err != nil {
		return err
	}
	err = m.Up()
	var dirty migrate.ErrDirty
	if errors.As(err, &dirty) {
		// A process killed mid-migration leaves golang-migrate's flag dirty.
		// Each file runs as one transaction and records its version in the
		// schema's comment, so the marker tells whether it committed.
		if err = recoverDirty(m, databaseURL, dirty.Version); err == nil {
			err = m.Up()
		}
	}
	if err != nil && !errors.Is(err, migrate.ErrNoChange) {
		return closeM(m, fmt.Errorf("migrations: up: %w", err))
	}
	return closeM(m, nil)
}

// recoverDirty sets the version to what the schema's marker says was
// committed: version if its migration committed, the one before if not.
func recoverDirty(m *migrate.Migrate, databaseURL string, version int) error {
	committed, err := markerVersion(databaseURL)
	if err != nil {
		return err
	}
	switch {
	case committed >= version:
		return m.Force(version)
	case committed <= 0:
		return m.Force(database.NilVersion)
	default:
		return m.Force(committed)
	}
}

// markerVersion reads the version the last committed migration recorded.
func markerVersion(databaseURL string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		return 0, fmt.Errorf("migrations: connect: %w", err)
	}
	defer conn.Close(ctx)
	var comment *string
	if err := conn.QueryRow(ctx, `SELECT obj_description(to_regnamespace('repstream'), 'pg_namespace')`).Scan(&comment); err != nil {
		return 0, fmt.Errorf("migrations: read the schema marker: %w", err)
	}
	var v int
	if comment != nil {
		fmt.Sscanf(*comment, "repstream schema version %d", &v) //nolint:errcheck // no marker: nothing committed
	}
	return v, nil
}

// Down reverts the newest applied migration (one step), since a full
// teardown should be a deliberate, repeated act.
func Down(databaseURL string) error {
	m, err := open(databaseURL)
	if err != nil {
		return err
	}
	if err := m.Steps(-1); err != nil && !errors.Is(err, migrate.ErrNoChange) {
		return closeM(m, fmt.Errorf("migrations: down: %w", err))
	}
	return closeM(m, nil)
}

// Version reports the applied version, whether the last run left it dirty,
// and the newest version this binary carries. It only reads.
func Version(databaseURL string) (applied uint, dirty bool, latest uint, err error) {
	st, err := inspect(databaseURL)
	return st.Applied, st.Dirty, Latest(), err
}

// inspect connects and runs Inspect.
func inspect(databaseURL string) (State, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		return State{Latest: Latest()}, fmt.Errorf("migrations: connect: %w", err)
	}
	defer conn.Close(ctx)
	return Inspect(ctx, conn)
}

// Latest is the newest migration embedded in this binary.
func Latest() uint {
	ents, _ := files.ReadDir("files")
	var v uint
	for _, e := range ents {
		var n uint
		if _, err := fmt.Sscanf(e.Name(), "%d_", &n); err == nil && strings.HasSuffix(e.Name(), ".up.sql") && n > v {
			v = n
		}
	}
	return v
}

// ensureSchema creates the repstream schema that holds the version table.
func ensureSchema(databaseURL string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		return fmt.Errorf("migrations: connect: %w", err)
	}
	defer conn.Close(ctx)
	// CREATE SCHEMA IF NOT EXISTS checks the privilege before the existence:
	// only a missing schema is created, so an existing one needs no CREATE.
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regnamespace('repstream') IS NOT NULL`).Scan(&exists); err != nil || exists {
		return err
	}
	if _, err := conn.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS repstream`); err != nil {
		return fmt.Errorf("migrations: create schema repstream (as a superuser: CREATE SCHEMA repstream AUTHORIZATION <role>;): %w", err)
	}
	return nil
}
