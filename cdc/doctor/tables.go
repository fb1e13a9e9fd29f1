package doctor

import (
	"context"
	"fmt"
	"strings"

	"github.com/repstream/repstream/cdc"
)

// tableState is what the catalog says about one source table.
type tableState struct {
	cdc.TableInfo
	owned     bool     // the role owns it (may add it to a publication)
	identCols []string // columns of the REPLICA IDENTITY USING INDEX index
	missing   []string // needed columns the table lacks
}

// identity is the set of columns Postgres logs as a row's old identity, which
// a publication's column list and row filter must stay within.
func (ts tableState) identity() []string {
	switch ts.ReplicaIdentity {
	case 'f':
		return ts.Columns
	case 'i':
		return ts.identCols
	case 'n':
		return nil
	}
	return ts.Key
}

func identityName(b byte) string {
	switch b {
	case 'f':
		return "FULL"
	case 'i':
		return "USING INDEX"
	case 'n':
		return "NOTHING"
	}
	return "DEFAULT"
}

// loadTable reads one table: cdc.LookupTable plus ownership and the identity index.
func loadTable(ctx context.Context, q cdc.Querier, t cdc.Table) (tableState, error) {
	var ts tableState
	info, err := cdc.LookupTable(ctx, q, t)
	if err != nil || !info.Exists {
		ts.TableInfo = info
		return ts, err
	}
	ts.TableInfo = info
	ts.identCols = info.IdentCols
	err = q.QueryRow(ctx, `
SELECT pg_has_role(current_user, c.relowner, 'USAGE')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`, t.Schema, t.Name).Scan(&ts.owned)
	if err != nil {
		return ts, fmt.Errorf("look up table %s: %w", t, err)
	}
	have := set(ts.Columns)
	for _, c := range t.Columns {
		if !have[c] {
			ts.missing = append(ts.missing, c)
		}
	}
	return ts, nil
}

func set(ss []string) map[string]bool {
	m := make(map[string]bool, len(ss))
	for _, s := range ss {
		m[s] = true
	}
	return m
}

// union is a then the elements of b not in a, in order.
func union(a, b []string) []string {
	out := append([]string{}, a...)
	seen := set(a)
	for _, s := range b {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

func quoteList(cols []string) string {
	q := make([]string, len(cols))
	for i, c := range cols {
		q[i] = quoteIdent(c)
	}
	return strings.Join(q, ", ")
}

// checkTables checks each source table: it exists, has a primary key, a
// usable replica identity, the configured columns, and the role can read it.
func (r *run) checkTables(ctx context.Context) error {
	r.infos = make([]tableState, len(r.tables))
	for i, t := range r.tables {
		key := fmt.Sprintf("sources[%d]", i)
		ts, err := loadTable(ctx, r.conn, t)
		if err != nil {
			return err
		}
		r.infos[i] = ts
		sfx := ":" + t.String()
		if !ts.Exists {
			r.add("table"+sfx, Fail, fmt.Sprintf("table %s (%s.table) does not exist in database %s, or is not a table", t, key, r.role.database),
				fmt.Sprintf("fix %s.table in the configuration (schema.table), or connect to the database that has it", key))
			continue
		}
		r.add("table"+sfx, OK, fmt.Sprintf("table %s exists", t), "")
		switch {
		case len(ts.Key) == 0 && ts.ReplicaIdentity == 'i' && len(ts.identCols) > 0:
			r.add("table.primary_key"+sfx, OK, fmt.Sprintf("table %s has no primary key; rows are followed by its REPLICA IDENTITY index (%s)", t, strings.Join(ts.identCols, ", ")), "")
		case len(ts.Key) == 0:
			r.add("table.primary_key"+sfx, Fail, fmt.Sprintf("table %s has no primary key; repstream follows updates and deletes by it", t),
				fmt.Sprintf("ALTER TABLE %s ADD PRIMARY KEY (...); -- the column(s) that identify a row", t.Qualified()))
		default:
			r.add("table.primary_key"+sfx, OK, fmt.Sprintf("table %s has primary key (%s)", t, strings.Join(ts.Key, ", ")), "")
		}
		switch ts.ReplicaIdentity {
		case 'n':
			r.add("table.replica_identity"+sfx, Fail, fmt.Sprintf("table %s has REPLICA IDENTITY NOTHING: updates and deletes carry no key, and Postgres rejects them once the table is published", t),
				fmt.Sprintf("ALTER TABLE %s REPLICA IDENTITY DEFAULT;", t.Qualified()))
		case 'f':
			r.add("table.replica_identity"+sfx, Warn, fmt.Sprintf("table %s has REPLICA IDENTITY FULL: it is published without a column list (a list would make Postgres reject the application's UPDATE and DELETE once it misses a column), so every column, review bodies too, leaves the database; FULL also logs whole old rows", t),
				fmt.Sprintf("ALTER TABLE %s REPLICA IDENTITY DEFAULT; -- unless another consumer needs FULL, or the primary key is DEFERRABLE", t.Qualified()))
		case 'i':
			if len(ts.identCols) == 0 {
				r.add("table.replica_identity"+sfx, Fail, fmt.Sprintf("table %s has REPLICA IDENTITY USING INDEX on an index that is gone: updates and deletes carry no key", t),
					fmt.Sprintf("ALTER TABLE %s REPLICA IDENTITY DEFAULT;", t.Qualified()))
			} else {
				r.add("table.replica_identity"+sfx, OK, fmt.Sprintf("table %s has REPLICA IDENTITY USING INDEX (%s): repstream follows rows by those columns", t, strings.Join(ts.identCols, ", ")), "")
			}
		default:
			if len(ts.Key) > 0 && ts.KeyDeferrable {
				r.add("table.replica_identity"+sfx, Fail, fmt.Sprintf("table %s has a DEFERRABLE primary key, which Postgres does not use as replica identity: it rejects the application's UPDATE and DELETE once the table is published", t),
					fmt.Sprintf("ALTER TABLE %s REPLICA IDENTITY FULL; -- or make the primary key NOT DEFERRABLE", t.Qualified()))
			} else if len(ts.Key) > 0 {
				r.add("table.replica_identity"+sfx, OK, fmt.Sprintf("table %s has REPLICA IDENTITY DEFAULT (primary key)", t), "")
			}
		}
		if len(ts.missing) > 0 {
			r.add("table.columns"+sfx, Fail, fmt.Sprintf("%s: column(s) %s not in table %s (it has: %s)", key, strings.Join(ts.missing, ", "), t, strings.Join(ts.Columns, ", ")),
				fmt.Sprintf("fix %s (subject, score, where) in the configuration to name columns of %s", key, t))
		} else {
			r.add("table.columns"+sfx, OK, fmt.Sprintf("table %s has the configured columns (%s)", t, strings.Join(t.Columns, ", ")), "")
		}
		if err := r.checkSelect(ctx, i); err != nil {
			return err
		}
	}
	return nil
}

// checkSelect checks the role can read what the snapshot load reads: the key
// and the needed columns (a column-level grant is enough).
func (r *run) checkSelect(ctx context.Context, i int) error {
	t, ts := r.tables[i], r.infos[i]
	sfx := ":" + t.String()
	// Table privileges say nothing of the schema: without USAGE on it the
	// snapshot fails with "permission denied for schema".
	var usage bool
	if err := r.conn.QueryRow(ctx, `SELECT has_schema_privilege($1, 'USAGE')`, t.Schema).Scan(&usage); err != nil {
		return fmt.Errorf("check USAGE on schema %s: %w", t.Schema, err)
	}
	if !usage {
		r.add("role.usage"+sfx, Fail, fmt.Sprintf("role %s has no USAGE on schema %s, so it cannot read %s (whatever its table privileges)", r.role.name, t.Schema, t),
			fmt.Sprintf("GRANT USAGE ON SCHEMA %s TO %s;", quoteIdent(t.Schema), quoteIdent(r.role.name)))
	}
	// Row-level security would hide rows from the snapshot, not from the
	// stream: serve refuses the load (source_not_readable).
	var rls bool
	err := r.conn.QueryRow(ctx, `
SELECT c.relrowsecurity AND NOT (SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user)
       AND (c.relforcerowsecurity OR NOT pg_has_role(c.relowner, 'USAGE'))
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2`, t.Schema, t.Name).Scan(&rls)
	if err != nil {
		return fmt.Errorf("check row-level security on %s: %w", t, err)
	}
	if rls {
		r.add("role.rls"+sfx, Fail, fmt.Sprintf("row-level security on %s applies to role %s: the snapshot would miss rows the stream then sees, so serve refuses the load", t, r.role.name),
			fmt.Sprintf("ALTER ROLE %s BYPASSRLS; -- or ALTER TABLE %s DISABLE ROW LEVEL SECURITY;", quoteIdent(r.role.name), t.Qualified()))
	}
	if ts.CanSelect {
		r.add("role.select"+sfx, OK, fmt.Sprintf("role %s can SELECT from %s (the initial load needs it; revoking it would not stop replication of %s, removing the table from the publication would)", r.role.name, t, t), "")
		return nil
	}
	have := set(ts.Columns)
	var cols []string
	for _, c := range union(ts.Key, t.Columns) {
		if have[c] {
			cols = append(cols, c)
		}
	}
	var denied []string
	err = r.conn.QueryRow(ctx, `
SELECT coalesce(array(SELECT col FROM unnest($2::text[]) col WHERE NOT has_column_privilege($1::regclass, col, 'SELECT')), '{}')`,
		t.Qualified(), cols).Scan(&denied)
	if err != nil {
		return fmt.Errorf("check column privileges on %s: %w", t, err)
	}
	if len(denied) == 0 {
		r.add("role.select"+sfx, OK, fmt.Sprintf("role %s can SELECT the columns repstream reads from %s (%s)", r.role.name, t, strings.Join(cols, ", ")), "")
		return nil
	}
	r.add("role.select"+sfx, Fail, fmt.Sprintf("role %s cannot SELECT %s from %s; the initial snapshot reads them", r.role.name, strings.Join(denied, ", "), t),
		fmt.Sprintf("GRANT SELECT (%s) ON %s TO %s; -- as the table's owner (or GRANT SELECT ON the whole table)", quoteList(cols), t.Qualified(), quoteIdent(r.role.name)))
	return nil
}
