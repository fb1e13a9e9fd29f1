package doctor

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/repstream/repstream/sql/migrations"
)

// checkMigrations compares repstream's applied schema version with the
// newest this binary carries. It reads golang-migrate's version table itself:
// migrations.Version opens golang-migrate, which creates that table when it
// is missing, and doctor must not write.
func (r *run) checkMigrations(ctx context.Context) error {
	latest := migrations.Latest()
	var table *string
	var schemaExists, createSchema, createDB bool
	err := r.conn.QueryRow(ctx, `
SELECT to_regclass('repstream.schema_migrations')::text, to_regnamespace('repstream') IS NOT NULL,
       to_regnamespace('repstream') IS NOT NULL AND has_schema_privilege('repstream', 'CREATE'),
       has_database_privilege(current_database(), 'CREATE')`).Scan(&table, &schemaExists, &createSchema, &createDB)
	if err != nil {
		return fmt.Errorf("look for %s: %w", migrations.Table, err)
	}
	var applied int64
	var dirty bool
	if table != nil {
		err := r.conn.QueryRow(ctx, `SELECT version, dirty FROM `+*table+` LIMIT 1`).Scan(&applied, &dirty)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			r.add("migrations", Warn, fmt.Sprintf("cannot read %s: %v", *table, err),
				fmt.Sprintf("GRANT USAGE ON SCHEMA repstream TO %s; GRANT SELECT ON %s TO %s;", quoteIdent(r.role.name), *table, quoteIdent(r.role.name)))
			return nil
		}
	}
	switch {
	case dirty:
		r.add("migrations", Fail, fmt.Sprintf("repstream's schema is dirty at version %d: a migration failed half-way, and serve refuses to start", applied),
			fmt.Sprintf("repair schema repstream by hand (see the migration %04d files), then mark it clean: UPDATE %s SET dirty = false; -- then `repstream migrate up`", applied, *table))
	case applied > int64(latest):
		r.add("migrations", Fail, fmt.Sprintf("repstream's schema is at version %d, newer than this binary's %d", applied, latest),
			"run a repstream release at least as new as the one that migrated this database")
	case applied == int64(latest):
		r.add("migrations", OK, fmt.Sprintf("repstream's schema is at version %d, the latest", applied), "")
	case !schemaExists && !createDB:
		r.add("migrations", Fail, fmt.Sprintf("repstream's schema is not installed, and role %s cannot create schema repstream (no CREATE on database %s)", r.role.name, r.role.database),
			fmt.Sprintf("GRANT CREATE ON DATABASE %s TO %s; -- or run `repstream migrate up` once as a role that may", quoteIdent(r.role.database), quoteIdent(r.role.name)))
	case schemaExists && !createSchema && applied < int64(latest):
		r.add("migrations", Fail, fmt.Sprintf("repstream's schema is at version %d of %d, and role %s cannot create objects in schema repstream", applied, latest, r.role.name),
			fmt.Sprintf("GRANT CREATE ON SCHEMA repstream TO %s; -- as the schema's owner", quoteIdent(r.role.name)))
	default:
		r.add("migrations", Warn, fmt.Sprintf("repstream's schema is at version %d of %d; serve applies the rest at start", applied, latest),
			"`repstream migrate up` to apply them now")
	}
	return nil
}
