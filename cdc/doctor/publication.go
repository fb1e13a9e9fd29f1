package doctor

import (
	"context"
	"fmt"
	"strings"

	"github.com/repstream/repstream/cdc"
)

// Statement is one SQL statement of a plan with the comment that explains it.
type Statement struct {
	Table   string // schema.name the statement changes
	Comment string
	SQL     string
}

// Plan is the publication repstream needs, as SQL a DBA can review: column
// lists hold only the columns the sources read plus each table's key, so
// columns such as review bodies never leave the database.
type Plan struct {
	Publication string
	Tables      []cdc.Table
	// Keys are the columns listed before the needed ones, per schema.name:
	// the primary key, plus the replica identity index's columns if any.
	Keys map[string][]string
	// Prepare must run before DDL: a column-restricted publication makes
	// Postgres reject UPDATE and DELETE on a table whose replica identity is
	// FULL (or NOTHING), so those tables go back to DEFAULT first.
	Prepare []Statement
	// Blockers are problems no statement here fixes (a missing table, no
	// primary key, a missing column); DDL is not usable while there are any.
	Blockers []string
	DDL      string
	// ColumnLists is whether the server has column lists (15+); without
	// them every column is published and Prepare is not needed.
	ColumnLists bool
}

// SQL is the whole reviewed script: comments, Prepare, then DDL.
func (p Plan) SQL() string {
	var b strings.Builder
	for _, bl := range p.Blockers {
		b.WriteString("-- BLOCKED: " + bl + "\n")
	}
	if p.ColumnLists {
		fmt.Fprintf(&b, "-- Publication %s for repstream: only the columns its sources read plus each table's\n", quoteIdent(p.Publication))
		b.WriteString("-- primary key, so other columns (review bodies, say) never leave the database.\n")
	} else {
		fmt.Fprintf(&b, "-- Publication %s for repstream. This server has no column lists (PostgreSQL 14):\n", quoteIdent(p.Publication))
		b.WriteString("-- every column of these tables is published; 15 or newer publishes only the needed ones.\n")
	}
	for _, s := range p.Prepare {
		for _, line := range strings.Split(s.Comment, "\n") {
			b.WriteString("-- " + line + "\n")
		}
		b.WriteString(s.SQL + "\n")
	}
	b.WriteString(p.DDL + "\n")
	return b.String()
}

// plan builds the Plan from the source tables and what the catalog says of them.
func plan(name string, tables []cdc.Table, states []tableState, columnLists bool) Plan {
	p := Plan{Publication: name, Keys: map[string][]string{}, ColumnLists: columnLists}
	for i, t := range tables {
		ts := states[i]
		switch {
		case !ts.Exists:
			p.Blockers = append(p.Blockers, fmt.Sprintf("table %s does not exist", t))
			continue
		case len(ts.Key) == 0 && !(ts.ReplicaIdentity == 'i' && len(ts.identCols) > 0):
			p.Blockers = append(p.Blockers, fmt.Sprintf("table %s has no primary key (ALTER TABLE %s ADD PRIMARY KEY (...))", t, t.Qualified()))
		case ts.ReplicaIdentity == 'd' && ts.KeyDeferrable:
			p.Blockers = append(p.Blockers, fmt.Sprintf("table %s has a DEFERRABLE primary key and DEFAULT identity: Postgres would reject its UPDATE and DELETE (ALTER TABLE %s REPLICA IDENTITY FULL)", t, t.Qualified()))
		case len(ts.missing) > 0:
			p.Blockers = append(p.Blockers, fmt.Sprintf("table %s has no column(s) %s", t, strings.Join(ts.missing, ", ")))
		}
		key := ts.Key
		t.Partitioned = ts.Partitioned
		switch ts.ReplicaIdentity {
		case 'f':
			// A column list must cover a FULL identity, now and after every
			// ADD COLUMN: publish the whole table.
			t.AllColumns = true
		case 'n':
			p.Prepare = append(p.Prepare, Statement{
				Table:   t.String(),
				Comment: fmt.Sprintf("%s has REPLICA IDENTITY %s: with a column list Postgres would reject UPDATE and DELETE on it.\nrepstream needs only the primary key, so this restores the default first:", t, identityName(ts.ReplicaIdentity)),
				SQL:     fmt.Sprintf("ALTER TABLE %s REPLICA IDENTITY DEFAULT;", t.Qualified()),
			})
		case 'i':
			key = ts.identCols // rows are followed by the identity index's columns
		}
		p.Keys[t.String()] = key
		p.Tables = append(p.Tables, t)
	}
	if len(p.Tables) > 0 {
		p.DDL = cdc.PublicationDDLFor(name, p.Tables, p.Keys, columnLists)
	}
	return p
}

// canCreatePublication says whether the role may CREATE PUBLICATION for the
// source tables: a superuser, or CREATE on the database and every table owned.
func (r *run) canCreatePublication() (bool, string) {
	if r.role.super {
		return true, "superuser"
	}
	var notOwned []string
	for i, t := range r.tables {
		if r.infos[i].Exists && !r.infos[i].owned {
			notOwned = append(notOwned, t.String())
		}
	}
	var why []string
	if !r.role.createOnDB {
		why = append(why, "CREATE on database "+r.role.database)
	}
	if len(notOwned) > 0 {
		why = append(why, "ownership of "+strings.Join(notOwned, ", "))
	}
	if len(why) == 0 {
		return true, "owns the source tables"
	}
	return false, "it is not a superuser and lacks " + strings.Join(why, " and ")
}

// membership is how one table belongs to a publication, from the catalog.
type membership struct {
	filterCols []string // columns the row filter reads
	age        *int32   // age of the xid that added it (pg_publication_rel, _namespace, or the publication for ALL TABLES)
	xid        string
	via        string // "table", "schema" or "all tables"
}

// memberships reads, for each table of publication name, how it was added.
func (r *run) memberships(ctx context.Context, name string) (pubAge *int32, pubXid string, m map[string]membership, err error) {
	m = map[string]membership{}
	var allTables bool
	err = r.conn.QueryRow(ctx, `SELECT age(xmin), xmin::text, puballtables FROM pg_publication WHERE pubname = $1`, name).Scan(&pubAge, &pubXid, &allTables)
	if err != nil {
		return nil, "", nil, fmt.Errorf("read publication %s: %w", name, err)
	}
	query := `
SELECT n.nspname::text || '.' || c.relname::text, 'table', age(pr.xmin), pr.xmin::text,
       coalesce(array(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = pr.prrelid AND a.attnum IN
                (SELECT m[1]::int2 FROM regexp_matches(coalesce(pr.prqual::text, ''), ':varattno (\d+)', 'g') m)), '{}')
FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
JOIN pg_class c ON c.oid = pr.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE p.pubname = $1
UNION ALL
SELECT n.nspname::text || '.' || c.relname::text, 'schema', age(pn.xmin), pn.xmin::text, '{}'
FROM pg_publication_namespace pn JOIN pg_publication p ON p.oid = pn.pnpubid
JOIN pg_class c ON c.relnamespace = pn.pnnspid AND c.relkind IN ('r', 'p') JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE p.pubname = $1`
	if r.serverVersion < cdc.V15 { // no row filters, no FOR TABLES IN SCHEMA
		query = `
SELECT n.nspname::text || '.' || c.relname::text, 'table', age(pr.xmin), pr.xmin::text, '{}'::text[]
FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
JOIN pg_class c ON c.oid = pr.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE p.pubname = $1`
	}
	rows, err := r.conn.Query(ctx, query, name)
	if err != nil {
		return nil, "", nil, fmt.Errorf("read tables of publication %s: %w", name, err)
	}
	defer rows.Close()
	for rows.Next() {
		var t string
		var mb membership
		if err := rows.Scan(&t, &mb.via, &mb.age, &mb.xid, &mb.filterCols); err != nil {
			return nil, "", nil, fmt.Errorf("read tables of publication %s: %w", name, err)
		}
		if _, dup := m[t]; !dup {
			m[t] = mb
		}
	}
	if err := rows.Err(); err != nil {
		return nil, "", nil, fmt.Errorf("read tables of publication %s: %w", name, err)
	}
	if allTables {
		for _, t := range r.tables {
			if _, ok := m[t.String()]; !ok {
				m[t.String()] = membership{age: pubAge, xid: pubXid, via: "all tables"}
			}
		}
	}
	return pubAge, pubXid, m, nil
}

// checkPublication checks the publication exists (or will be created),
// publishes every operation, and covers every source table and column in a
// way that keeps the application's UPDATE and DELETE working.
func (r *run) checkPublication(ctx context.Context) error {
	name := r.in.Publication
	if name == "" {
		return nil
	}
	pub, err := cdc.LookupPublication(ctx, r.conn, name)
	if err != nil {
		return err
	}
	r.pub = pub
	pl := plan(name, r.tables, r.infos, pub.ColumnLists)
	if !pub.Exists {
		r.publicationMissing(pl)
		return nil
	}
	_, _, members, err := r.memberships(ctx, name)
	if err != nil {
		return err
	}
	r.add("publication", OK, fmt.Sprintf("publication %s exists", name), "")
	var ops []string
	for _, o := range []struct {
		on   bool
		name string
	}{{pub.Insert, "insert"}, {pub.Update, "update"}, {pub.Delete, "delete"}, {pub.Truncate, "truncate"}} {
		if !o.on {
			ops = append(ops, o.name)
		}
	}
	if len(ops) > 0 {
		r.add("publication.publish", Fail, fmt.Sprintf("publication %s does not publish %s; repstream needs every change to keep scores exact", name, strings.Join(ops, ", ")),
			fmt.Sprintf("ALTER PUBLICATION %s SET (publish = 'insert, update, delete, truncate'); -- as the publication's owner", quoteIdent(name)))
	} else {
		r.add("publication.publish", OK, fmt.Sprintf("publication %s publishes insert, update, delete, truncate", name), "")
	}
	for i, t := range r.tables {
		ts := r.infos[i]
		if !ts.Exists {
			continue
		}
		sfx := ":" + t.String()
		if ts.Partitioned {
			if !pub.ViaRoot {
				r.add("publication.via_root"+sfx, Fail, fmt.Sprintf("table %s is partitioned and publication %s does not set publish_via_partition_root: changes would carry each partition's name and be missed", t, name),
					fmt.Sprintf("ALTER PUBLICATION %s SET (publish_via_partition_root = true); -- as the publication's owner; serve then reloads under a new epoch", quoteIdent(name)))
				continue
			}
			r.add("publication.via_root"+sfx, OK, fmt.Sprintf("table %s is partitioned and published through its root (publish_via_partition_root); a partition's ATTACH, DETACH, DROP or TRUNCATE makes serve reload under a new epoch", t), "")
		}
		need := union(pl.Keys[t.String()], t.Columns)
		pt, in := pub.Tables[t.String()]
		if !in {
			as := t.Qualified()
			if pub.ColumnLists { // 14 has none
				as += " (" + quoteList(need) + ")"
			}
			r.add("publication.table"+sfx, Fail, fmt.Sprintf("publication %s does not include table %s", name, t),
				fmt.Sprintf("ALTER PUBLICATION %s ADD TABLE %s; -- as the owner of both; then `repstream slot drop --yes` if the slot already exists (it would miss the table's earlier changes)",
					quoteIdent(name), as))
			continue
		}
		via := members[t.String()].via
		if via == "" {
			via = "table"
		}
		r.add("publication.table"+sfx, OK, fmt.Sprintf("publication %s includes table %s (as %s)", name, t, via), "")
		have := set(pt.Columns)
		var missing []string
		for _, c := range need {
			if !have[c] {
				missing = append(missing, c)
			}
		}
		readd := func(cols []string) string {
			where := ""
			if pt.RowFilter != "" {
				where = " WHERE (" + pt.RowFilter + ")"
			}
			return fmt.Sprintf("BEGIN; ALTER PUBLICATION %s DROP TABLE %s; ALTER PUBLICATION %s ADD TABLE %s (%s)%s; COMMIT; -- as the owner of both",
				quoteIdent(name), t.Qualified(), quoteIdent(name), t.Qualified(), quoteList(cols), where)
		}
		switch {
		case pt.AllColumns:
			r.add("publication.columns"+sfx, OK, fmt.Sprintf("publication %s publishes every column of %s", name, t), "")
		case len(missing) > 0:
			r.add("publication.columns"+sfx, Fail, fmt.Sprintf("publication %s's column list for %s lacks %s (repstream reads %s)", name, t, strings.Join(missing, ", "), strings.Join(need, ", ")),
				readd(union(pt.Columns, missing)))
		default:
			r.add("publication.columns"+sfx, OK, fmt.Sprintf("publication %s publishes the columns repstream reads from %s (%s)", name, t, strings.Join(pt.Columns, ", ")), "")
		}
		if pub.Update || pub.Delete {
			r.checkAppWrites(t, ts, pt, members[t.String()], readd)
		}
	}
	return nil
}

// publicationMissing reports an absent publication: serve creates it when it
// may (a warning), otherwise a DBA must (a failure).
func (r *run) publicationMissing(pl Plan) {
	name := r.in.Publication
	may, why := r.canCreatePublication()
	fix := pl.SQL()
	if len(pl.Tables) == 0 {
		fix = "-- fix the source tables first; then `repstream publication sql` prints the statement"
	}
	switch {
	case r.standby:
		r.add("publication", Fail, fmt.Sprintf("publication %s does not exist; this server is a standby (read-only): a publication is created on the primary, and this standby replicates it", name),
			"-- on the primary, as a superuser or the owner of the source tables:\n"+fix)
	case may && r.in.CreatePublication:
		r.add("publication", Warn, fmt.Sprintf("publication %s does not exist; serve will create it (role %s may: %s)", name, r.role.name, why),
			"nothing required; to create it now, reviewed: `repstream publication sql`, then `repstream publication create`")
		// serve creates it as cdc.PublicationDDL does, without the Prepare statements.
		for _, s := range pl.Prepare {
			r.add("publication.app_writes:"+s.Table, Fail,
				fmt.Sprintf("when serve creates publication %s with a column list, Postgres will reject UPDATE and DELETE on %s: its replica identity is not DEFAULT", name, s.Table),
				s.SQL)
		}
	case may:
		r.add("publication", Fail, fmt.Sprintf("publication %s does not exist and create_publication is false", name),
			"-- as role "+r.role.name+" (it may: "+why+"), or run `repstream publication create`:\n"+fix)
	default:
		r.add("publication", Fail, fmt.Sprintf("publication %s does not exist and role %s may not create it: %s", name, r.role.name, why),
			"-- as a superuser, or the owner of the source tables with CREATE on the database:\n"+fix)
	}
}

// checkAppWrites reports a publication that makes Postgres reject the
// application's UPDATE and DELETE: a published table's column list and row
// filter must stay within its replica identity.
func (r *run) checkAppWrites(t cdc.Table, ts tableState, pt cdc.PublicationTable, mb membership, readd func([]string) string) {
	sfx := ":" + t.String()
	name := r.in.Publication
	ident := ts.identity()
	if ts.ReplicaIdentity == 'n' || (ts.ReplicaIdentity == 'd' && len(ts.Key) == 0) {
		r.add("publication.app_writes"+sfx, Fail, fmt.Sprintf("Postgres rejects UPDATE and DELETE on %s now: it is published by %s and has no replica identity", t, name),
			fmt.Sprintf("ALTER TABLE %s REPLICA IDENTITY DEFAULT; -- needs a primary key", t.Qualified()))
		return
	}
	if ts.ReplicaIdentity == 'f' && !pt.AllColumns {
		r.add("publication.app_writes"+sfx, Fail, fmt.Sprintf("table %s has REPLICA IDENTITY FULL and publication %s gives it a column list: Postgres rejects UPDATE and DELETE on it whenever the list misses a column (now, or after the next ADD COLUMN)", t, name),
			readdAll(name, t, pt.RowFilter))
		return
	}
	if !pt.AllColumns {
		have := set(pt.Columns)
		var out []string
		for _, c := range ident {
			if !have[c] {
				out = append(out, c)
			}
		}
		if len(out) > 0 {
			fix := readd(union(pt.Columns, out))
			if ts.ReplicaIdentity == 'f' {
				fix = fmt.Sprintf("ALTER TABLE %s REPLICA IDENTITY DEFAULT; -- repstream needs only the primary key", t.Qualified())
			}
			r.add("publication.app_writes"+sfx, Fail, fmt.Sprintf("Postgres rejects UPDATE and DELETE on %s now: publication %s's column list leaves out replica identity (%s) column(s) %s",
				t, name, identityName(ts.ReplicaIdentity), strings.Join(out, ", ")), fix)
			return
		}
	}
	inIdent := set(ident)
	var out []string
	for _, c := range mb.filterCols {
		if !inIdent[c] {
			out = append(out, c)
		}
	}
	if len(out) > 0 {
		r.add("publication.app_writes"+sfx, Fail, fmt.Sprintf("Postgres rejects UPDATE and DELETE on %s now: publication %s's row filter reads %s, outside the replica identity",
			t, name, strings.Join(out, ", ")),
			"drop the row filter (repstream filters rows itself with `where:`): "+readdNoFilter(name, t, pt))
		return
	}
	r.add("publication.app_writes"+sfx, OK, fmt.Sprintf("UPDATE and DELETE on %s stay publishable (column list and row filter within the replica identity)", t), "")
}

// readdAll publishes t again without a column list, keeping its row filter.
func readdAll(name string, t cdc.Table, rowFilter string) string {
	where := ""
	if rowFilter != "" {
		where = " WHERE (" + rowFilter + ")"
	}
	return fmt.Sprintf("BEGIN; ALTER PUBLICATION %s DROP TABLE %s; ALTER PUBLICATION %s ADD TABLE %s%s; COMMIT; -- as the owner of both",
		quoteIdent(name), t.Qualified(), quoteIdent(name), t.Qualified(), where)
}

func readdNoFilter(name string, t cdc.Table, pt cdc.PublicationTable) string {
	cols := ""
	if !pt.AllColumns {
		cols = " (" + quoteList(pt.Columns) + ")"
	}
	return fmt.Sprintf("BEGIN; ALTER PUBLICATION %s DROP TABLE %s; ALTER PUBLICATION %s ADD TABLE %s%s; COMMIT;",
		quoteIdent(name), t.Qualified(), quoteIdent(name), t.Qualified(), cols)
}
