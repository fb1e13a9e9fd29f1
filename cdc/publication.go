package cdc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Table is a source table and the columns a consumer needs from it.
type Table struct {
	Schema  string
	Name    string
	Columns []string
	// AllColumns publishes the table without a column list: a table with
	// REPLICA IDENTITY FULL must publish every column it has or will have,
	// or Postgres rejects the application's UPDATE and DELETE.
	AllColumns bool
	// Partitioned is a partitioned table: it is published through its root
	// (publish_via_partition_root), so changes carry the root's name and key.
	Partitioned bool
}

// Qualified is the quoted schema.name.
func (t Table) Qualified() string { return quoteIdent(t.Schema) + "." + quoteIdent(t.Name) }

func (t Table) String() string { return t.Schema + "." + t.Name }

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// TableInfo is what the catalog says about a source table.
type TableInfo struct {
	Exists          bool
	OID             uint32   // the relation's OID, which pgoutput's Relation messages carry
	Columns         []string // every column, in attribute order
	Types           []ColumnType
	Key             []string // primary key columns
	KeyDeferrable   bool     // the primary key is DEFERRABLE: it is then no replica identity
	IdentCols       []string // columns of the REPLICA IDENTITY USING INDEX index
	ReplicaIdentity byte     // d default, n nothing, f full, i index
	CanSelect       bool
	Partitioned     bool
	// Leaves lists the leaf partitions of a partitioned table with their
	// storage (oid:relfilenode): it changes on ATTACH, DETACH, DROP and a
	// TRUNCATE of a partition, none of which pgoutput reports through the root.
	Leaves string
}

// ColumnType is a column's type as pgoutput's Relation message gives it.
type ColumnType struct {
	OID uint32
	Mod int32
}

// Identity is the columns a row is followed by: the replica identity
// index's columns under USING INDEX, else the primary key (FULL logs whole
// old rows, the key among them). Nil when there is none.
func (i TableInfo) Identity() []string {
	if i.ReplicaIdentity == 'i' {
		return i.IdentCols
	}
	return i.Key
}

// TypeOf returns column c's type; ok is false when there is no such column.
func (i TableInfo) TypeOf(c string) (ColumnType, bool) {
	for j, n := range i.Columns {
		if n == c && j < len(i.Types) {
			return i.Types[j], true
		}
	}
	return ColumnType{}, false
}

// LookupTable reads a table's columns, primary key and replica identity.
func LookupTable(ctx context.Context, q Querier, t Table) (TableInfo, error) {
	var info TableInfo
	var ident string
	var typs []uint32
	var mods []int32
	err := q.QueryRow(ctx, `
SELECT c.oid, c.relreplident::text, has_table_privilege(c.oid, 'SELECT'), c.relkind = 'p',
       array(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum),
       array(SELECT a.atttypid FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum),
       array(SELECT a.atttypmod FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum),
       coalesce(array(SELECT a.attname::text FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                      WHERE i.indrelid = c.oid AND i.indisprimary ORDER BY array_position(i.indkey::int2[], a.attnum)), '{}'),
       coalesce((SELECT NOT i.indimmediate FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary), false),
       coalesce(array(SELECT a.attname::text FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                      WHERE i.indrelid = c.oid AND i.indisreplident ORDER BY array_position(i.indkey::int2[], a.attnum)), '{}'),
       CASE WHEN c.relkind = 'p' THEN coalesce((SELECT string_agg(l.oid::text || ':' || l.relfilenode::text, ',' ORDER BY l.oid)
              FROM pg_partition_tree(c.oid) pt JOIN pg_class l ON l.oid = pt.relid WHERE pt.isleaf), '') ELSE '' END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`, t.Schema, t.Name).Scan(&info.OID, &ident, &info.CanSelect, &info.Partitioned,
		&info.Columns, &typs, &mods, &info.Key, &info.KeyDeferrable, &info.IdentCols, &info.Leaves)
	if errors.Is(err, pgx.ErrNoRows) {
		return info, nil
	}
	if err != nil {
		return info, fmt.Errorf("cdc: look up table %s: %w", t, err)
	}
	info.Exists = true
	if ident != "" {
		info.ReplicaIdentity = ident[0]
	}
	for j := range typs {
		info.Types = append(info.Types, ColumnType{OID: typs[j], Mod: mods[j]})
	}
	return info, nil
}

// PublicationError lists everything a publication lacks, with the SQL that fixes it.
type PublicationError struct {
	Publication string
	Problems    []string
	Fix         []string
}

func (e *PublicationError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "publication %q does not cover the sources: %s", e.Publication, strings.Join(e.Problems, "; "))
	if len(e.Fix) > 0 {
		b.WriteString(". Fix (as the publication's owner): " + strings.Join(e.Fix, " "))
	}
	return b.String()
}

// PublicationDDL is the CREATE PUBLICATION statement for tables, with column
// lists restricted to the needed columns plus each table's key, so columns
// such as review bodies never leave the database.
// A table with REPLICA IDENTITY FULL is published without a column list
// (AllColumns), and a partitioned table through its root.
func PublicationDDL(name string, tables []Table, keys map[string][]string) string {
	return PublicationDDLFor(name, tables, keys, true)
}

// PublicationDDLFor is PublicationDDL for a server with or without column
// lists (PostgreSQL 14 has none: every column is published).
func PublicationDDLFor(name string, tables []Table, keys map[string][]string, columnLists bool) string {
	parts := make([]string, 0, len(tables))
	root := false
	for _, t := range tables {
		root = root || t.Partitioned
		if !columnLists || t.AllColumns {
			parts = append(parts, t.Qualified())
			continue
		}
		parts = append(parts, t.Qualified()+" ("+columnList(t.Columns, keys[t.String()])+")")
	}
	with := "publish = 'insert, update, delete, truncate'"
	if root {
		with += ", publish_via_partition_root = true"
	}
	return fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s WITH (%s);",
		quoteIdent(name), strings.Join(parts, ", "), with)
}

func columnList(cols, key []string) string {
	set := map[string]bool{}
	var all []string
	for _, c := range append(append([]string{}, key...), cols...) {
		if !set[c] {
			set[c] = true
			all = append(all, c)
		}
	}
	sort.Strings(all[len(key):])
	q := make([]string, len(all))
	for i, c := range all {
		q[i] = quoteIdent(c)
	}
	return strings.Join(q, ", ")
}

// PublicationTable is one table a publication publishes.
type PublicationTable struct {
	Table
	AllColumns bool   // no column list
	RowFilter  string // WHERE clause of the publication, if any
}

// Publication is pg_publication plus its tables.
type Publication struct {
	Exists                           bool
	AllTables                        bool
	Insert, Update, Delete, Truncate bool
	// ViaRoot is publish_via_partition_root: changes to partitions are
	// published as changes to the partitioned table that is in the publication.
	ViaRoot bool
	Tables  map[string]PublicationTable // by schema.name
	// ColumnLists is whether the server has column lists and row filters (15+).
	ColumnLists bool
}

// LookupPublication reads a publication and the tables (and columns) it covers.
func LookupPublication(ctx context.Context, q Querier, name string) (Publication, error) {
	var p Publication
	ver, err := ServerVersion(ctx, q)
	if err != nil {
		return p, err
	}
	p.ColumnLists = ver >= V15
	err = q.QueryRow(ctx, `SELECT puballtables, pubinsert, pubupdate, pubdelete, pubtruncate, pubviaroot FROM pg_publication WHERE pubname = $1`, name).
		Scan(&p.AllTables, &p.Insert, &p.Update, &p.Delete, &p.Truncate, &p.ViaRoot)
	if errors.Is(err, pgx.ErrNoRows) {
		return p, nil
	}
	if err != nil {
		return p, fmt.Errorf("cdc: look up publication %s: %w", name, err)
	}
	p.Exists = true
	p.Tables = map[string]PublicationTable{}
	query := `
SELECT pt.schemaname::text, pt.tablename::text, pt.attnames::text[], coalesce(pt.rowfilter, ''),
       (SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = pt.schemaname AND c.relname = pt.tablename AND a.attnum > 0 AND NOT a.attisdropped) = cardinality(pt.attnames)
FROM pg_publication_tables pt WHERE pt.pubname = $1`
	if !p.ColumnLists { // 14: no attnames nor rowfilter; every column is published
		query = `
SELECT pt.schemaname::text, pt.tablename::text,
       array(SELECT a.attname::text FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = pt.schemaname AND c.relname = pt.tablename AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum),
       '', true
FROM pg_publication_tables pt WHERE pt.pubname = $1`
	}
	rows, err := q.Query(ctx, query, name)
	if err != nil {
		return p, fmt.Errorf("cdc: look up tables of publication %s: %w", name, err)
	}
	for rows.Next() {
		var pt PublicationTable
		if err := rows.Scan(&pt.Schema, &pt.Name, &pt.Columns, &pt.RowFilter, &pt.AllColumns); err != nil {
			rows.Close()
			return p, fmt.Errorf("cdc: read publication %s: %w", name, err)
		}
		p.Tables[pt.String()] = pt
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return p, fmt.Errorf("cdc: read publication %s: %w", name, err)
	}
	return p, nil
}

// CheckPublication reports what p lacks for tables (nil when it covers them).
func CheckPublication(name string, p Publication, tables []Table, keys map[string][]string) error {
	e := &PublicationError{Publication: name}
	if !p.Exists {
		e.Problems = append(e.Problems, "it does not exist")
		e.Fix = append(e.Fix, PublicationDDLFor(name, tables, keys, p.ColumnLists))
		return e
	}
	var ops []string
	for _, o := range []struct {
		on   bool
		name string
	}{{p.Insert, "insert"}, {p.Update, "update"}, {p.Delete, "delete"}, {p.Truncate, "truncate"}} {
		if !o.on {
			ops = append(ops, o.name)
		}
	}
	if len(ops) > 0 {
		e.Problems = append(e.Problems, "it does not publish "+strings.Join(ops, ", "))
		e.Fix = append(e.Fix, fmt.Sprintf("ALTER PUBLICATION %s SET (publish = 'insert, update, delete, truncate');", quoteIdent(name)))
	}
	for _, t := range tables {
		if t.Partitioned && !p.ViaRoot {
			e.Problems = append(e.Problems, fmt.Sprintf("%s is partitioned and the publication does not set publish_via_partition_root: changes would carry each partition's name, and a partition's TRUNCATE the wrong rows", t))
			e.Fix = append(e.Fix, fmt.Sprintf("ALTER PUBLICATION %s SET (publish_via_partition_root = true);", quoteIdent(name)))
			continue
		}
		pt, ok := p.Tables[t.String()]
		if !ok {
			e.Problems = append(e.Problems, fmt.Sprintf("table %s is not in it", t))
			if p.ColumnLists {
				e.Fix = append(e.Fix, fmt.Sprintf("ALTER PUBLICATION %s ADD TABLE %s (%s);", quoteIdent(name), t.Qualified(), columnList(t.Columns, keys[t.String()])))
			} else {
				e.Fix = append(e.Fix, fmt.Sprintf("ALTER PUBLICATION %s ADD TABLE %s;", quoteIdent(name), t.Qualified()))
			}
			continue
		}
		have := map[string]bool{}
		for _, c := range pt.Columns {
			have[c] = true
		}
		var missing []string
		for _, c := range append(append([]string{}, keys[t.String()]...), t.Columns...) {
			if !have[c] {
				missing = append(missing, c)
				have[c] = true
			}
		}
		if t.AllColumns && !pt.AllColumns {
			e.Problems = append(e.Problems, fmt.Sprintf("%s has REPLICA IDENTITY FULL and a column list: Postgres rejects the application's UPDATE and DELETE on it as soon as the list misses a column", t))
			e.Fix = append(e.Fix, fmt.Sprintf("BEGIN; ALTER PUBLICATION %s DROP TABLE %s; ALTER PUBLICATION %s ADD TABLE %s; COMMIT;",
				quoteIdent(name), t.Qualified(), quoteIdent(name), t.Qualified()))
			continue
		}
		if len(missing) > 0 {
			e.Problems = append(e.Problems, fmt.Sprintf("its column list for %s lacks %s", t, strings.Join(missing, ", ")))
			e.Fix = append(e.Fix, fmt.Sprintf("ALTER PUBLICATION %s SET TABLE ... %s (%s) ...; -- keep the other tables of the publication in the list",
				quoteIdent(name), t.Qualified(), columnList(append(pt.Columns, missing...), nil)))
		}
	}
	if len(e.Problems) == 0 {
		return nil
	}
	return e
}

// CoversIdentity reports whether publication p's column list for t covers
// key, the columns Postgres logs as a row's identity (every column when
// t.AllColumns). When it does not, Postgres rejects the application's
// UPDATE and DELETE on t. A table p does not hold is not its concern.
func CoversIdentity(p Publication, t Table, key []string) bool {
	pt, ok := p.Tables[t.String()]
	if !ok || pt.AllColumns {
		return true
	}
	if t.AllColumns {
		return false
	}
	for _, c := range key {
		if !slices.Contains(pt.Columns, c) {
			return false
		}
	}
	return true
}

// RepublishTable drops t from publication name and adds it back, in one
// transaction, with the columns needed now (its key first), or without a
// column list when t.AllColumns.
func RepublishTable(ctx context.Context, q Querier, name string, t Table, key []string) error {
	ver, err := ServerVersion(ctx, q)
	if err != nil {
		return err
	}
	as := t.Qualified()
	if !t.AllColumns && ver >= V15 {
		as += " (" + columnList(t.Columns, key) + ")"
	}
	// Without arguments the two statements go as one simple query: one transaction.
	_, err = q.Exec(ctx, fmt.Sprintf("ALTER PUBLICATION %s DROP TABLE %s; ALTER PUBLICATION %s ADD TABLE %s",
		quoteIdent(name), t.Qualified(), quoteIdent(name), as))
	if err != nil {
		return fmt.Errorf("cdc: publish %s again in %s: %w", t, name, err)
	}
	return nil
}

// CreatePublication runs PublicationDDL.
func CreatePublication(ctx context.Context, q Querier, name string, tables []Table, keys map[string][]string) error {
	ver, err := ServerVersion(ctx, q)
	if err != nil {
		return err
	}
	if _, err := q.Exec(ctx, PublicationDDLFor(name, tables, keys, ver >= V15)); err != nil {
		return fmt.Errorf("cdc: create publication %s: %w", name, err)
	}
	return nil
}
