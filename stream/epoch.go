package stream

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/repstream/repstream/cdc"
)

// This file holds the engine's epoch decisions: when the stored state can
// continue from the slot, and how a reload is guarded so that it is always
// finished, never churns the slot, and says why it cannot proceed.

// epochReason says why the stored state cannot continue from the slot, or
// "" when it can. Each reason is proven by what was read. hash is the
// sources hash the state must have been built with (configuration and
// shapes' digest), shapeFP its shapeFingerprint.
func (e *Engine) epochReason(meta Meta, marks epochMarks, hasMeta bool, sys cdc.System, slot cdc.Slot, slotOK bool, hash, shapeFP string) string {
	switch {
	case !hasMeta:
		return "first start: loading existing rows from a snapshot"
	case marks.Reload != nil:
		return fmt.Sprintf("a reload did not finish (it started because %s)", *marks.Reload)
	case meta.SystemID != sys.ID:
		return fmt.Sprintf("the database was replaced (system id %s, was %s)", sys.ID, meta.SystemID)
	case meta.Timeline != sys.Timeline:
		return fmt.Sprintf("the server's timeline changed (%d, was %d): it was promoted or restored, and its history may differ from the state's", sys.Timeline, meta.Timeline)
	case meta.Slot != e.cfg.Slot:
		return fmt.Sprintf("the slot changed (%s, was %s)", e.cfg.Slot, meta.Slot)
	case !slotOK:
		return fmt.Sprintf("replication slot %s is gone (dropped, or invalidated by max_slot_wal_keep_size); changes since %s are lost to it", e.cfg.Slot, meta.Checkpoint)
	case slot.WALStatus == "lost":
		return fmt.Sprintf("replication slot %s lost required WAL (wal_status=lost)", e.cfg.Slot)
	case slot.ConfirmedFlushLSN > meta.Checkpoint && marks.ShapeHash != nil:
		// repstream confirms only positions its store holds (idle ones
		// included), so the slot was advanced, or dropped and re-created,
		// by someone else. (An older version confirmed idle positions
		// without storing them: ShapeHash nil.)
		return fmt.Sprintf("replication slot %s was advanced or re-created behind repstream's back (confirmed_flush_lsn %s, stored checkpoint %s): the changes in between were skipped",
			e.cfg.Slot, slot.ConfirmedFlushLSN, meta.Checkpoint)
	case strings.HasPrefix(marks.SourcesHash, stoppedHash):
		return fmt.Sprintf("a source stopped (%s) and is servable again", strings.TrimPrefix(marks.SourcesHash, stoppedHash))
	case marks.SourcesHash != hash && strings.HasPrefix(marks.SourcesHash, e.hash+"/"):
		return "a source table changed while repstream was stopped (its key, a column's type, its partitions or its publication membership)"
	case marks.SourcesHash != hash:
		return "the sources configuration changed"
	case marks.ShapeHash != nil && *marks.ShapeHash != shapeFP:
		return "a source table's identity, key columns, or the publication's row filter or publish_via_partition_root changed"
	}
	return ""
}

// invalidation says why Postgres invalidated a slot, and what keeps it
// from happening again, when the server says (conflicting: 16+, the
// reason: 17+).
func invalidation(x cdc.SlotExtra) string {
	const feedback = "; on the standby, set hot_standby_feedback = on and primary_slot_name to a physical slot on the primary, so the primary keeps what the slot needs"
	switch x.InvalidationReason {
	case "rows_removed":
		return ": invalidated by a recovery conflict on the standby (rows_removed: the primary's vacuum removed catalog rows the slot still needed)" + feedback
	case "wal_level_insufficient":
		return ": invalidated on the standby because the primary's wal_level dropped below logical; set it back to logical on the primary"
	case "wal_removed":
		return ": invalidated because the WAL it needed was removed (max_slot_wal_keep_size)"
	case "idle_timeout":
		return ": invalidated because it stayed unused longer than idle_replication_slot_timeout"
	case "":
		if x.Conflicting {
			return ": invalidated by a recovery conflict on the standby (the primary removed rows the slot needed, or lowered wal_level)" + feedback
		}
		return ""
	}
	return ": invalidated (" + x.InvalidationReason + ")"
}

// Problem codes of a load that cannot succeed as things stand.
const (
	ProblemSourceNotReadable = "source_not_readable"
	ProblemStoreNotWritable  = "store_not_writable"
	ProblemLoadFailed        = "load_failed"
)

// reload checks that a load can succeed, durably marks it in progress, and
// loads. A load that cannot succeed is reported and retried (with the
// session's backoff) without touching the slot.
func (e *Engine) reload(ctx context.Context, rconn *pgconn.PgConn, w *writer, sys cdc.System, tables []cdc.Table, keys map[string][]string, pub cdc.Publication, hash, shapeFP, reason string, hasMeta, slotExists bool) (Meta, error) {
	if err := e.preflight(ctx, tables, keys); err != nil {
		return Meta{}, err
	}
	if hasMeta {
		if err := w.markReload(ctx, reason); err != nil {
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || (pe.Code != "42501" && pe.Code != "25006") { // insufficient_privilege, read_only_sql_transaction
				return Meta{}, err
			}
			e.Report(Problem{Code: ProblemStoreNotWritable, Reason: "repstream cannot write its own tables: " + err.Error(),
				Fix: "GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA repstream TO <repstream's role> (or make that role their owner)"})
			return Meta{}, err
		}
	}
	meta, err := e.load(ctx, rconn, w, sys, tables, keys, pub, slotExists, hash, shapeFP)
	if err != nil {
		if ctx.Err() == nil {
			e.Report(Problem{Code: ProblemLoadFailed, Reason: "the snapshot load failed; nothing is streamed until it succeeds: " + err.Error(),
				Fix: "see the error; the load is retried, and the store stays marked for a reload meanwhile"})
		}
		return Meta{}, err
	}
	e.Resolve(ProblemLoadFailed, "")
	return meta, nil
}

// resolveLoadProblems closes what a blocked load reported once a session
// streams without needing a load.
func (e *Engine) resolveLoadProblems(tables []cdc.Table) {
	for _, t := range tables {
		e.Resolve(ProblemSourceNotReadable, t.String())
	}
	e.Resolve(ProblemStoreNotWritable, "")
	e.Resolve(ProblemLoadFailed, "")
}

// preflight checks the privileges a load needs, before the slot is touched:
// SELECT on the columns read from each source, no row-level security that
// would hide rows from the snapshot, and write access to repstream's tables.
// Each missing one is reported with its fix, and resolved once granted.
func (e *Engine) preflight(ctx context.Context, tables []cdc.Table, keys map[string][]string) error {
	var errs []error
	for i, t := range tables {
		var usage bool
		if err := e.pool.QueryRow(ctx, `SELECT has_schema_privilege($1, 'USAGE')`, t.Schema).Scan(&usage); err != nil {
			return fmt.Errorf("stream: check USAGE on schema %s: %w", t.Schema, err)
		}
		if !usage {
			err := fmt.Errorf("stream: the role has no USAGE on schema %s, so it cannot read %s: the snapshot load would fail", t.Schema, t)
			e.Report(Problem{Code: ProblemSourceNotReadable, Source: t.String(), Reason: err.Error(),
				Fix: fmt.Sprintf("GRANT USAGE ON SCHEMA %s TO <repstream's role>", pgx.Identifier{t.Schema}.Sanitize())})
			errs = append(errs, err)
			continue
		}
		cols := append(append([]string{}, keys[t.String()]...), e.rules[i].Columns...)
		var missing []string
		var rls bool
		err := e.pool.QueryRow(ctx, `
SELECT array(SELECT DISTINCT c FROM unnest($2::text[]) c WHERE NOT has_column_privilege($1::regclass, c, 'SELECT') ORDER BY c),
       c.relrowsecurity AND NOT (SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user)
           AND (c.relforcerowsecurity OR NOT pg_has_role(c.relowner, 'USAGE'))
FROM pg_class c WHERE c.oid = $1::regclass`, t.Qualified(), cols).Scan(&missing, &rls)
		if err != nil {
			return fmt.Errorf("stream: check privileges on %s: %w", t, err)
		}
		switch {
		case len(missing) > 0:
			err := fmt.Errorf("stream: the role may not read %s (columns %v): the snapshot load would fail", t, missing)
			e.Report(Problem{Code: ProblemSourceNotReadable, Source: t.String(), Reason: err.Error(),
				Fix: fmt.Sprintf("GRANT SELECT ON %s TO <repstream's role>", t.Qualified())})
			errs = append(errs, err)
		case rls:
			err := fmt.Errorf("stream: row-level security on %s would hide rows from the snapshot, not from the stream", t)
			e.Report(Problem{Code: ProblemSourceNotReadable, Source: t.String(), Reason: err.Error(),
				Fix: "ALTER ROLE <repstream's role> BYPASSRLS (or ALTER TABLE " + t.Qualified() + " DISABLE ROW LEVEL SECURITY)"})
			errs = append(errs, err)
		default:
			e.Resolve(ProblemSourceNotReadable, t.String())
		}
	}
	var missing []string
	err := e.store.Pool().QueryRow(ctx, `
SELECT array(SELECT t || ' ' || p FROM (VALUES
    ('repstream.meta', 'SELECT'), ('repstream.meta', 'INSERT'), ('repstream.meta', 'UPDATE'), ('repstream.meta', 'DELETE'),
    ('repstream.subjects', 'SELECT'), ('repstream.subjects', 'INSERT'), ('repstream.subjects', 'UPDATE'), ('repstream.subjects', 'TRUNCATE'),
    ('repstream.deltas', 'SELECT'), ('repstream.deltas', 'INSERT'), ('repstream.deltas', 'DELETE'), ('repstream.deltas', 'TRUNCATE'),
    ('repstream.rows', 'SELECT'), ('repstream.rows', 'INSERT'), ('repstream.rows', 'UPDATE'), ('repstream.rows', 'DELETE'), ('repstream.rows', 'TRUNCATE')
) AS need(t, p) WHERE NOT has_table_privilege(t, p))`).Scan(&missing)
	if err != nil {
		return fmt.Errorf("stream: check privileges on repstream's tables: %w", err)
	}
	if len(missing) > 0 {
		err := fmt.Errorf("stream: the role lacks %v on repstream's own tables: the load could not be stored", missing)
		e.Report(Problem{Code: ProblemStoreNotWritable, Reason: err.Error(),
			Fix: "GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA repstream TO <repstream's role> (or make that role their owner)"})
		errs = append(errs, err)
	} else {
		e.Resolve(ProblemStoreNotWritable, "")
	}
	return errors.Join(errs...)
}

// unsureGroup is a group of an epoch whose commit outcome is unknown.
type unsureGroup struct {
	epoch string
	pos   LSN
	txns  []Txn
}

// publishUnsure publishes the group whose commit reported an error if the
// store shows it committed (its checkpoint reached the group's): live
// clients would otherwise never get its deltas, since the stream resumes
// after it. If it did not commit, it is read and folded again.
func (e *Engine) publishUnsure(meta Meta) {
	u := e.unsure
	e.unsure = nil
	if u == nil || u.epoch != meta.Epoch {
		return
	}
	if meta.Checkpoint >= u.pos {
		e.log.Warn("a store commit that reported an error had committed; publishing its deltas", "lsn", u.pos.String(), "txns", len(u.txns))
		e.pub.Publish(u.pos, u.txns)
	}
}
