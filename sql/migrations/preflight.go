package migrations

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// State is what a role finds of repstream's schema, read without writing
// anything: serve's preflight and the doctor share it, so "doctor passes"
// means "serve starts".
type State struct {
	SchemaExists bool
	Applied      uint // 0 when nothing is applied
	Dirty        bool
	Latest       uint
	// Missing lists what the connecting role lacks to run serve (and to
	// apply the pending migrations, if any), each with the SQL that grants it.
	Missing []Missing
}

// Missing is one privilege the role lacks, with the statement a DBA runs to grant it.
type Missing struct {
	What string
	Fix  string
}

// Current says whether the schema is at this binary's version: serve then
// needs no CREATE privilege at all.
func (s State) Current() bool { return s.SchemaExists && s.Applied == s.Latest && !s.Dirty }

// Err is nil when serve can start, else what is missing and the fix.
func (s State) Err() error {
	if len(s.Missing) == 0 {
		return nil
	}
	what, fixes := make([]string, len(s.Missing)), make([]string, len(s.Missing))
	for i, m := range s.Missing {
		what[i], fixes[i] = m.What, m.Fix
	}
	return fmt.Errorf("migrations: %s (fix, as a superuser or the owner: %s)", strings.Join(what, "; "), strings.Join(fixes, " "))
}

// storePrivileges are what serve does to every table of schema repstream.
var storePrivileges = []string{"SELECT", "INSERT", "UPDATE", "DELETE"}

// Inspect reads the schema's state and what the connecting role lacks.
func Inspect(ctx context.Context, conn *pgx.Conn) (State, error) {
	st := State{Latest: Latest()}
	var table *string
	var role, db string
	var createDB, usage, createSchema, ownsSchema bool
	err := conn.QueryRow(ctx, `
SELECT current_user, current_database(), to_regnamespace('repstream') IS NOT NULL,
       has_database_privilege(current_database(), 'CREATE'),
       coalesce(has_schema_privilege(to_regnamespace('repstream'), 'USAGE'), false),
       coalesce(has_schema_privilege(to_regnamespace('repstream'), 'CREATE'), false),
       coalesce((SELECT pg_has_role(nspowner, 'USAGE') FROM pg_namespace WHERE nspname = 'repstream'), false)`).
		Scan(&role, &db, &st.SchemaExists, &createDB, &usage, &createSchema, &ownsSchema)
	if err != nil {
		return st, fmt.Errorf("migrations: inspect schema repstream: %w", err)
	}
	r := quoteIdent(role)
	if !st.SchemaExists {
		if !createDB {
			st.Missing = append(st.Missing, Missing{
				What: fmt.Sprintf("schema repstream does not exist and role %s may not create it (no CREATE on database %s)", role, db),
				Fix:  fmt.Sprintf("CREATE SCHEMA repstream AUTHORIZATION %s;", r),
			})
		}
		return st, nil
	}
	if !usage {
		st.Missing = append(st.Missing, Missing{
			What: fmt.Sprintf("role %s has no USAGE on schema repstream", role),
			Fix:  fmt.Sprintf("GRANT USAGE ON SCHEMA repstream TO %s;", r),
		})
		return st, nil
	}
	if err := conn.QueryRow(ctx, `SELECT to_regclass('repstream.schema_migrations')::text`).Scan(&table); err != nil {
		return st, fmt.Errorf("migrations: look for %s: %w", Table, err)
	}
	if table != nil {
		var v int64
		err := conn.QueryRow(ctx, `SELECT version, dirty FROM `+Table+` LIMIT 1`).Scan(&v, &st.Dirty)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			st.Missing = append(st.Missing, Missing{
				What: fmt.Sprintf("role %s cannot read %s: %v", role, Table, err),
				Fix:  fmt.Sprintf("GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO %s;", Table, r),
			})
			return st, nil
		default:
			st.Applied = uint(v)
		}
	}
	if st.Applied < st.Latest || st.Dirty {
		// Pending migrations create and alter objects in the schema.
		if !ownsSchema {
			st.Missing = append(st.Missing, Missing{
				What: fmt.Sprintf("schema repstream is at version %d of %d and role %s does not own it, so it cannot apply the rest", st.Applied, st.Latest, role),
				Fix:  fmt.Sprintf("ALTER SCHEMA repstream OWNER TO %s; -- and the tables in it: ALTER TABLE repstream.<table> OWNER TO %s;", r, r),
			})
		} else if !createSchema {
			st.Missing = append(st.Missing, Missing{
				What: fmt.Sprintf("role %s may not create objects in schema repstream", role),
				Fix:  fmt.Sprintf("GRANT CREATE ON SCHEMA repstream TO %s;", r),
			})
		}
		return st, nil
	}
	rows, err := conn.Query(ctx, `
SELECT format('%I.%I', n.nspname, c.relname), p.priv
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, unnest($1::text[]) AS p(priv)
WHERE n.nspname = 'repstream' AND c.relkind IN ('r', 'p') AND NOT has_table_privilege(c.oid, p.priv)
ORDER BY 1, 2`, storePrivileges)
	if err != nil {
		return st, fmt.Errorf("migrations: check privileges in schema repstream: %w", err)
	}
	lacks := map[string][]string{}
	var order []string
	for rows.Next() {
		var tbl, priv string
		if err := rows.Scan(&tbl, &priv); err != nil {
			return st, err
		}
		if lacks[tbl] == nil {
			order = append(order, tbl)
		}
		lacks[tbl] = append(lacks[tbl], priv)
	}
	if err := rows.Err(); err != nil {
		return st, fmt.Errorf("migrations: check privileges in schema repstream: %w", err)
	}
	for _, tbl := range order {
		st.Missing = append(st.Missing, Missing{
			What: fmt.Sprintf("role %s lacks %s on %s", role, strings.Join(lacks[tbl], ", "), tbl),
			Fix:  fmt.Sprintf("GRANT %s ON %s TO %s;", strings.Join(lacks[tbl], ", "), tbl, r),
		})
	}
	return st, nil
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
