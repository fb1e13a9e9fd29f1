package stream

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/repstream/repstream/cdc"
)

// This file keeps DDL from miscounting silently. A session derives each
// source by the shape the catalog gave when it started (table OID, columns
// and their types, identity, partitions, publication membership). A change
// to that shape either arrives in the stream (pgoutput sends a Relation
// message before the first change after DDL) or shows in the catalog, which
// is polled. Either way the source stops: its changes are no longer folded,
// a durable mark makes the next start reload, and the problem is reported
// with its fix. Once the catalog serves every source again, the session
// ends and the next one reloads everything under a new epoch.

// errReload ends a session so that the next one reloads under a new epoch.
var errReload = errors.New("stream: a source's schema changed; reloading under a new epoch")

// stoppedHash prefixes the sources hash written when a source stops: it
// matches no fingerprint, so whatever happens next, the next start reloads.
const stoppedHash = "stopped:"

// defaultSchemaCheck is how often the catalog is compared with the shapes
// the session derives by.
const defaultSchemaCheck = 5 * time.Second

// shape is what a session derives one source by.
type shape struct {
	rule   *Rule
	index  int // position in the configuration
	info   cdc.TableInfo
	key    []string // the identity the row shadow is keyed by
	member string   // the publication's membership of the table (changes when dropped and added again)
}

// table is the source table as the publication needs it.
func (s *shape) table() cdc.Table {
	return cdc.Table{Schema: s.rule.Schema, Name: s.rule.Name, Columns: s.rule.Columns,
		AllColumns: s.info.ReplicaIdentity == 'f', Partitioned: s.info.Partitioned}
}

// used is every column the source reads: the rule's and the key's.
func (s *shape) used() []string {
	out := slices.Clone(s.key)
	for _, c := range s.rule.Columns {
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}

// inspect reads every source table from the catalog and refuses those that
// cannot be derived exactly; the error is a *ConfigError naming the source.
func (e *Engine) inspect(ctx context.Context) ([]*shape, error) {
	out := make([]*shape, 0, len(e.rules))
	for i, r := range e.rules {
		t := cdc.Table{Schema: r.Schema, Name: r.Name, Columns: r.Columns}
		info, err := cdc.LookupTable(ctx, e.pool, t)
		if err != nil {
			return nil, err
		}
		key := fmt.Sprintf("sources[%d]", i)
		q := t.Qualified()
		switch {
		case !info.Exists:
			return nil, &ConfigError{key + ".table", fmt.Sprintf("table %s does not exist in this database", t)}
		case info.ReplicaIdentity == 'n':
			return nil, &ConfigError{key + ".table", fmt.Sprintf("table %s has REPLICA IDENTITY NOTHING; updates and deletes cannot be followed (ALTER TABLE %s REPLICA IDENTITY DEFAULT)", t, q)}
		case info.ReplicaIdentity == 'i' && len(info.IdentCols) == 0:
			return nil, &ConfigError{key + ".table", fmt.Sprintf("table %s has REPLICA IDENTITY USING INDEX on an index that is gone (ALTER TABLE %s REPLICA IDENTITY DEFAULT)", t, q)}
		case info.ReplicaIdentity != 'i' && len(info.Key) == 0:
			return nil, &ConfigError{key + ".table", fmt.Sprintf("table %s has no primary key; repstream needs one to follow updates and deletes (ALTER TABLE %s ADD PRIMARY KEY (...))", t, q)}
		case info.ReplicaIdentity == 'd' && info.KeyDeferrable:
			return nil, &ConfigError{key + ".table", fmt.Sprintf("table %s has a DEFERRABLE primary key, which Postgres does not use as replica identity: it rejects the application's UPDATE and DELETE once the table is published (ALTER TABLE %s REPLICA IDENTITY FULL)", t, q)}
		}
		var missing []string
		for _, c := range r.Columns {
			if !slices.Contains(info.Columns, c) {
				missing = append(missing, c)
			}
		}
		if len(missing) > 0 {
			return nil, &ConfigError{key, fmt.Sprintf("column %q does not exist in %s (columns: %v)", strings.Join(missing, `", "`), t, info.Columns)}
		}
		out = append(out, &shape{rule: r, index: i, info: info, key: info.Identity()})
	}
	return out, nil
}

// layout is what the publication and the applier need from the shapes.
func layout(shapes []*shape) (tables []cdc.Table, keys, pubCols map[string][]string) {
	keys, pubCols = map[string][]string{}, map[string][]string{}
	for _, s := range shapes {
		t := s.table()
		tables = append(tables, t)
		keys[t.String()] = s.key
		pubCols[t.String()] = s.key
	}
	return tables, keys, pubCols
}

// members reads how the publication holds each source table, so a table
// dropped from it and added again (its changes in between never streamed)
// is noticed.
func (e *Engine) members(ctx context.Context, shapes []*shape) error {
	for _, s := range shapes {
		err := e.pool.QueryRow(ctx, `
SELECT coalesce((SELECT pr.xmin::text FROM pg_publication_rel pr WHERE pr.prpubid = p.oid AND pr.prrelid = $2), '-')
       || '/' || p.puballtables::text || '/' || p.pubviaroot::text
FROM pg_publication p WHERE p.pubname = $1`, e.cfg.Publication, s.info.OID).Scan(&s.member)
		if errors.Is(err, pgx.ErrNoRows) {
			s.member = ""
			continue
		}
		if err != nil {
			return fmt.Errorf("stream: read publication %s: %w", e.cfg.Publication, err)
		}
	}
	return nil
}

// shapeDigest identifies the shapes a derived state is built with; stored
// after the sources fingerprint, it makes a start reload when a table
// changed while repstream was stopped (a partition TRUNCATE leaves nothing
// in the stream).
func shapeDigest(shapes []*shape) string {
	h := sha256.New()
	for _, s := range shapes {
		fmt.Fprintf(h, "%d|%d|%c|%q|%s|%s|", s.index, s.info.OID, s.info.ReplicaIdentity, s.key, s.info.Leaves, s.member)
		for _, c := range s.used() {
			ct, _ := s.info.TypeOf(c)
			fmt.Fprintf(h, "%s:%d:%d,", c, ct.OID, ct.Mod)
		}
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// guard holds the sources stopped during a session.
type guard struct {
	e       *Engine
	any     atomic.Bool
	mu      sync.Mutex
	stopped map[int16]Problem // guarded by mu
}

func (g *guard) isStopped(id int16) bool {
	if g == nil || !g.any.Load() {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	_, ok := g.stopped[id]
	return ok
}

// stop stops deriving a source. It returns once the next start is sure to
// reload (the durable mark), so nothing the source misses from now on can
// be taken for exact.
func (g *guard) stop(ctx context.Context, r *Rule, p Problem) error {
	g.mu.Lock()
	_, was := g.stopped[r.ID]
	g.mu.Unlock()
	if !was {
		err := pgx.BeginFunc(ctx, g.e.store.Pool(), func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit = on`); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `UPDATE repstream.meta SET sources_hash = $1`, stoppedHash+p.Code+":"+r.Table())
			return err
		})
		if err != nil {
			return fmt.Errorf("stream: mark source %s stopped: %w", r.Table(), err)
		}
		g.mu.Lock()
		if g.stopped == nil {
			g.stopped = map[int16]Problem{}
		}
		g.stopped[r.ID] = p
		g.mu.Unlock()
		g.any.Store(true)
	}
	p.Source = r.Table()
	g.e.Report(p)
	return nil
}

// checkRelation compares a Relation message of a source table with the
// shape the session derives it by; nil when they agree.
func checkRelation(s *shape, rel *cdc.Relation) *Problem {
	t := s.rule.Table()
	cfg := fmt.Sprintf("sources[%d]", s.index)
	if name := rel.Namespace + "." + rel.Name; name != t {
		return &Problem{Code: "source_table_renamed",
			Reason: fmt.Sprintf("table %s was renamed to %s; its changes are no longer counted", t, name),
			Fix: fmt.Sprintf("ALTER TABLE %s RENAME TO %s; or set %s.table: %s and restart (either way repstream reloads under a new epoch)",
				quoteIdent(rel.Namespace)+"."+quoteIdent(rel.Name), quoteIdent(s.rule.Name), cfg, name)}
	}
	var missing []string
	for _, c := range s.used() {
		if rel.ColumnIndex(c) < 0 {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		return &Problem{Code: "source_column_missing",
			Reason: fmt.Sprintf("column(s) %s of %s, which %s reads, were dropped or renamed (or left the publication's column list); its changes are no longer counted", strings.Join(missing, ", "), t, cfg),
			Fix: fmt.Sprintf("restore the column(s) in %s (ALTER TABLE %s RENAME COLUMN <new name> TO %s, if renamed), or change %s (subject, score, where) to the columns it has and restart; repstream then reloads under a new epoch",
				t, s.rule.QuotedTable(), quoteIdent(missing[0]), cfg)}
	}
	for _, c := range s.used() {
		want, _ := s.info.TypeOf(c)
		got := rel.Columns[rel.ColumnIndex(c)]
		if got.TypeOID != want.OID || got.TypeMod != want.Mod {
			return &Problem{Code: "source_column_type_changed",
				Reason: fmt.Sprintf("the type of column %s of %s changed; values already counted were read as the old type", c, t),
				Fix:    "none needed: repstream reloads under a new epoch once the catalog agrees"}
		}
	}
	if rel.ReplicaIdentity != s.info.ReplicaIdentity {
		return &Problem{Code: "source_key_changed",
			Reason: fmt.Sprintf("the replica identity of %s changed (%c, was %c); rows are keyed by the old one", t, rel.ReplicaIdentity, s.info.ReplicaIdentity),
			Fix:    "none needed: repstream reloads under a new epoch once the catalog agrees"}
	}
	if rel.ReplicaIdentity != 'f' {
		var flagged []string
		for _, c := range rel.Columns {
			if c.Key() {
				flagged = append(flagged, c.Name)
			}
		}
		if !sameSet(flagged, s.key) {
			return &Problem{Code: "source_key_changed",
				Reason: fmt.Sprintf("the key of %s changed to (%s), was (%s); the row shadow is keyed by the old one", t, strings.Join(flagged, ", "), strings.Join(s.key, ", ")),
				Fix:    "none needed: repstream reloads under a new epoch once the catalog agrees"}
		}
	}
	return nil
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// diffShape says how the catalog's current shape of a source differs from
// the one the session derives it by; nil when it does not.
func diffShape(old, cur *shape) *Problem {
	t := old.rule.Table()
	auto := "none needed: repstream reloads under a new epoch"
	switch {
	case old.info.OID != cur.info.OID:
		return &Problem{Code: "source_table_replaced", Reason: fmt.Sprintf("table %s was dropped and created again", t), Fix: auto}
	case old.info.ReplicaIdentity != cur.info.ReplicaIdentity || !slices.Equal(old.key, cur.key):
		return &Problem{Code: "source_key_changed", Reason: fmt.Sprintf("the key of %s changed to (%s), was (%s)", t, strings.Join(cur.key, ", "), strings.Join(old.key, ", ")), Fix: auto}
	case old.info.Leaves != cur.info.Leaves:
		return &Problem{Code: "source_partitions_changed",
			Reason: fmt.Sprintf("the partitions of %s changed (ATTACH, DETACH, DROP or TRUNCATE of a partition, which the stream does not carry)", t), Fix: auto}
	case old.member != cur.member:
		return &Problem{Code: "source_republished",
			Reason: fmt.Sprintf("%s was dropped from publication and added again, or the publication's options changed: changes in between were not streamed", t), Fix: auto}
	}
	for _, c := range old.used() {
		a, _ := old.info.TypeOf(c)
		b, _ := cur.info.TypeOf(c)
		if a != b {
			return &Problem{Code: "source_column_type_changed", Reason: fmt.Sprintf("the type of column %s of %s changed", c, t), Fix: auto}
		}
	}
	return nil
}

var sourceKeyRE = regexp.MustCompile(`^sources\[(\d+)\]`)

// startProblem turns a refusal of the catalog into the problem reported
// while it lasts; ok is false for other errors.
func (e *Engine) startProblem(err error) (p Problem, ok bool) {
	var ce *ConfigError
	var pe *cdc.PublicationError
	switch {
	case errors.As(err, &ce):
		p = Problem{Code: "source_schema", Reason: ce.Error(), Fix: "the statement in the reason, or fix " + ce.Key + " in the configuration and restart"}
		table, name := "the table", "<name>"
		if m := sourceKeyRE.FindStringSubmatch(ce.Key); m != nil {
			if i, _ := strconv.Atoi(m[1]); i < len(e.rules) {
				p.Source = e.rules[i].Table()
				table, name = e.rules[i].QuotedTable(), quoteIdent(e.rules[i].Name)
			}
		}
		switch {
		case strings.Contains(ce.Msg, "does not exist") && strings.HasSuffix(ce.Key, ".table"):
			p.Code = "source_table_missing"
			p.Fix = fmt.Sprintf("restore table %s (ALTER TABLE <new name> RENAME TO %s, if it was renamed), or fix %s in the configuration and restart; repstream then reloads under a new epoch",
				p.Source, name, ce.Key)
		case strings.Contains(ce.Msg, "column") && !strings.HasSuffix(ce.Key, ".table"):
			p.Code = "source_column_missing"
			p.Fix = fmt.Sprintf("restore the column in %s (ALTER TABLE %s RENAME COLUMN <new name> TO <the name configured>, if it was renamed), or change %s (subject, score, where) to the table's columns and restart; repstream then reloads under a new epoch",
				p.Source, table, ce.Key)
		}
		return p, true
	case errors.As(err, &pe):
		return Problem{Code: "source_unpublished", Reason: fmt.Sprintf("publication %q does not cover the sources: %s", pe.Publication, strings.Join(pe.Problems, "; ")),
			Fix: strings.Join(pe.Fix, " ") + " (as the publication's owner); repstream then reloads under a new epoch"}, true
	}
	return p, false
}

// resolveSources closes the problems of stopped sources: a session derives
// every source again.
func (e *Engine) resolveSources() {
	for _, p := range e.Problems() {
		if strings.HasPrefix(p.Code, "source_") {
			e.Resolve(p.Code, p.Source)
		}
	}
}

// watchSchema compares the catalog with the session's shapes every
// interval. A source whose shape changed stops; once the catalog serves
// every source again (tables, columns, publication) while one is stopped,
// the session ends with errReload.
func (e *Engine) watchSchema(ctx context.Context, g *guard, shapes []*shape, end context.CancelCauseFunc) {
	every := e.cfg.SchemaCheck
	if every <= 0 {
		every = defaultSchemaCheck
	}
	t := time.NewTicker(every)
	defer t.Stop()
	leaves := make([]string, len(shapes))
	for i, s := range shapes {
		leaves[i] = s.info.Leaves
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := e.checkSchema(ctx, g, shapes, leaves); err != nil {
			if errors.Is(err, errReload) {
				end(errReload)
				return
			}
			if ctx.Err() == nil {
				e.log.Warn("checking the source tables' schema failed; retrying", "err", err)
			}
		}
	}
}

// checkSchema is one pass of watchSchema; it returns errReload when the
// session should end and reload.
// leaves are the partitions each source is derived with: the session's,
// plus new empty ones accepted since.
func (e *Engine) checkSchema(ctx context.Context, g *guard, shapes []*shape, leaves []string) error {
	cur, err := e.inspect(ctx)
	if p, ok := e.startProblem(err); ok {
		// A table or column is gone: stop that source until it is back.
		for _, s := range shapes {
			if p.Source == s.rule.Table() && p.Code == "source_column_missing" {
				if fix, ok := e.columnFix(ctx, s); ok {
					p.Fix = fix
				}
			}
			if p.Source == s.rule.Table() || p.Source == "" {
				if err := g.stop(ctx, s.rule, p); err != nil {
					return err
				}
			}
		}
		e.renamedTables(ctx, g, shapes)
		return nil
	}
	if err != nil {
		return err
	}
	tables, keys, _ := layout(cur)
	pub, err := cdc.LookupPublication(ctx, e.pool, e.cfg.Publication)
	if err != nil {
		return err
	}
	if err := e.members(ctx, cur); err != nil {
		return err
	}
	ok := true
	for i, s := range shapes {
		if perr := cdc.CheckPublication(e.cfg.Publication, pub, tables[i:i+1], keys); perr != nil {
			e.keepAppWrites(ctx, pub, tables[i], cur[i].key)
			p, _ := e.startProblem(perr)
			if err := g.stop(ctx, s.rule, p); err != nil {
				return err
			}
			ok = false
			continue
		}
		if cur[i].info.Leaves != leaves[i] {
			if err := e.newEmptyPartitions(ctx, shapes, leaves, i, cur[i].info.Leaves); err != nil {
				return err
			}
		}
		base := *s
		base.info.Leaves = leaves[i]
		if p := diffShape(&base, cur[i]); p != nil {
			if err := g.stop(ctx, s.rule, *p); err != nil {
				return err
			}
		}
	}
	if ok && g.any.Load() {
		return errReload
	}
	return nil
}

// keepAppWrites publishes a table again when the publication's column list
// no longer covers its replica identity (its key changed, or it became
// FULL): Postgres rejects the application's UPDATE and DELETE until then.
// Only when repstream may manage the publication (create_publication).
func (e *Engine) keepAppWrites(ctx context.Context, pub cdc.Publication, t cdc.Table, key []string) {
	if !e.cfg.CreatePublication || cdc.CoversIdentity(pub, t, key) {
		return
	}
	if e.standby.Load() {
		e.log.Error("the publication's column list no longer covers the replica identity of a source table: the primary rejects the application's UPDATE and DELETE on it, and repstream cannot fix the list from a standby; on the primary, drop the table from the publication and add it back with its key columns (`repstream publication sql` prints the list)",
			"table", t.String(), "key", key)
		return
	}
	if err := cdc.RepublishTable(ctx, e.pool, e.cfg.Publication, t, key); err != nil {
		e.log.Error("the publication's column list no longer covers the replica identity of a source table: Postgres rejects the application's UPDATE and DELETE on it, and repstream could not fix the list",
			"table", t.String(), "err", err)
		return
	}
	e.log.Warn("published a source table again with the columns its replica identity needs now, so the application's UPDATE and DELETE are accepted; repstream reloads under a new epoch",
		"table", t.String(), "key", key)
}

// columnFix is the exact SQL that brings back the columns a source reads:
// a column renamed is found at its old position, one dropped is added again
// with its type (its old values are gone, hence the reload).
func (e *Engine) columnFix(ctx context.Context, s *shape) (string, bool) {
	cur, err := cdc.LookupTable(ctx, e.pool, s.table())
	if err != nil || !cur.Exists {
		return "", false
	}
	q := s.rule.QuotedTable()
	var stmts []string
	for _, c := range s.used() {
		if slices.Contains(cur.Columns, c) {
			continue
		}
		if j := slices.Index(s.info.Columns, c); j >= 0 && j < len(cur.Columns) && !slices.Contains(s.info.Columns, cur.Columns[j]) {
			stmts = append(stmts, fmt.Sprintf("ALTER TABLE %s RENAME COLUMN %s TO %s;", q, quoteIdent(cur.Columns[j]), quoteIdent(c)))
			continue
		}
		ct, _ := s.info.TypeOf(c)
		var typ string
		if err := e.pool.QueryRow(ctx, `SELECT format_type($1, $2)`, ct.OID, ct.Mod).Scan(&typ); err != nil {
			return "", false
		}
		stmts = append(stmts, fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s %s;", q, quoteIdent(c), typ))
	}
	if len(stmts) == 0 {
		return "", false
	}
	return strings.Join(stmts, " ") + fmt.Sprintf(" -- or change sources[%d] (subject, score, where) to the table's columns and restart; either way repstream reloads under a new epoch", s.index), true
}

// newEmptyPartitions accepts partitions added to source i that hold no
// data (CREATE TABLE … PARTITION OF, a partition created ahead of time):
// nothing of theirs was missed, so they need no reload. The stored digest
// follows, so a restart does not reload for them either.
func (e *Engine) newEmptyPartitions(ctx context.Context, shapes []*shape, leaves []string, i int, now string) error {
	was := strings.Split(leaves[i], ",")
	var added []string
	for _, l := range strings.Split(now, ",") {
		if l != "" && !slices.Contains(was, l) {
			added = append(added, l)
		}
	}
	for _, l := range was {
		if l != "" && !slices.Contains(strings.Split(now, ","), l) {
			return nil // a partition left, or its storage changed (TRUNCATE): reload
		}
	}
	for _, l := range added {
		oid, _, _ := strings.Cut(l, ":")
		var size int64
		if err := e.pool.QueryRow(ctx, `SELECT pg_relation_size($1::oid)`, oid).Scan(&size); err != nil {
			return fmt.Errorf("stream: size of a new partition: %w", err)
		}
		if size != 0 {
			return nil // it may hold rows the stream never carried: reload
		}
	}
	old := e.hash + "/" + digestWith(shapes, leaves)
	leaves[i] = now
	_, err := e.store.Pool().Exec(ctx, `UPDATE repstream.meta SET sources_hash = $1 WHERE sources_hash = $2`,
		e.hash+"/"+digestWith(shapes, leaves), old)
	if err != nil {
		return fmt.Errorf("stream: record a new partition: %w", err)
	}
	e.log.Info("a source has new empty partitions; nothing to reload", "table", shapes[i].rule.Table(), "partitions", len(added))
	return nil
}

// digestWith is shapeDigest with each source's partitions as in leaves.
func digestWith(shapes []*shape, leaves []string) string {
	cp := make([]*shape, len(shapes))
	for i, s := range shapes {
		c := *s
		c.info.Leaves = leaves[i]
		cp[i] = &c
	}
	return shapeDigest(cp)
}

// renamedTables reports a source table that is missing under its name but
// whose OID lives on under another: it was renamed.
func (e *Engine) renamedTables(ctx context.Context, g *guard, shapes []*shape) {
	for _, s := range shapes {
		var name, nsp, rel string
		err := e.pool.QueryRow(ctx, `SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1`, s.info.OID).Scan(&nsp, &rel)
		if err != nil {
			continue
		}
		name = nsp + "." + rel
		if name == s.rule.Table() {
			continue
		}
		p := checkRelation(s, &cdc.Relation{ID: s.info.OID, Namespace: nsp, Name: rel})
		if p != nil {
			g.stop(ctx, s.rule, *p) //nolint:errcheck // the next pass tries again
		}
	}
}
