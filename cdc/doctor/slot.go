package doctor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/repstream/repstream/cdc"
	"github.com/repstream/repstream/stream"
)

// meta is the row of repstream.meta: the epoch serve resumes.
type meta struct {
	epoch, slot, systemID, hash, checkpoint string
	loadedAt                                time.Time
	timeline                                int32
	reload                                  *string // a reload started and did not commit
	shapeKnown                              bool    // written by a version that stores idle positions before confirming them
}

// readMeta returns repstream's checkpoint row; ok=false when there is none.
// A permission error is returned as is, for a warning.
func (r *run) readMeta(ctx context.Context) (m meta, ok bool, err error) {
	var exists bool
	if err := r.store.QueryRow(ctx, `SELECT to_regclass('repstream.meta') IS NOT NULL`).Scan(&exists); err != nil {
		return m, false, fmt.Errorf("look for repstream.meta: %w", err)
	}
	if !exists {
		return m, false, nil
	}
	// Columns of later migrations are read through to_jsonb: a store not yet
	// migrated lacks them.
	err = r.store.QueryRow(ctx, `SELECT epoch, slot, system_id, sources_hash, checkpoint_lsn::text, loaded_at, timeline,
       to_jsonb(m)->>'reload_reason', to_jsonb(m)->>'shape_hash' IS NOT NULL FROM repstream.meta m`).
		Scan(&m.epoch, &m.slot, &m.systemID, &m.hash, &m.checkpoint, &m.loadedAt, &m.timeline, &m.reload, &m.shapeKnown)
	if errors.Is(err, pgx.ErrNoRows) {
		return m, false, nil
	}
	if err != nil {
		return m, false, err
	}
	return m, true, nil
}

// checkSlot checks the slot is usable by serve (plugin, database, not held
// by another process, WAL not lost, retention) and what serve will do with it.
func (r *run) checkSlot(ctx context.Context) error {
	name := r.in.Slot
	if name == "" {
		return nil
	}
	s, ok, err := cdc.LookupSlot(ctx, r.conn, name)
	if err != nil {
		return err
	}
	r.slot, r.slotOK = s, ok
	if !ok {
		r.add("slot", OK, fmt.Sprintf("slot %s does not exist; serve creates it (pgoutput) with a consistent snapshot", name), "")
	} else {
		r.add("slot", OK, fmt.Sprintf("slot %s exists (restart_lsn %s, confirmed_flush_lsn %s)", name, s.RestartLSN, s.ConfirmedFlushLSN), "")
		if err := r.checkExistingSlot(ctx, s); err != nil {
			return err
		}
	}
	keep, err := r.checkEpoch(ctx)
	if err != nil {
		return err
	}
	if keep && ok && r.pub.Exists {
		return r.checkHistory(ctx)
	}
	return nil
}

func (r *run) checkExistingSlot(ctx context.Context, s cdc.Slot) error {
	name := s.Name
	dropFix := fmt.Sprintf("SELECT pg_drop_replication_slot(%s); -- only if nothing else uses it; or set `slot:` to another name", quoteLiteral(name))
	switch {
	case s.Plugin == "":
		r.add("slot.plugin", Fail, fmt.Sprintf("slot %s is a physical slot; repstream needs a logical pgoutput slot", name), dropFix)
	case s.Plugin != "pgoutput":
		r.add("slot.plugin", Fail, fmt.Sprintf("slot %s uses plugin %s; repstream needs pgoutput", name, s.Plugin), dropFix)
	default:
		r.add("slot.plugin", OK, fmt.Sprintf("slot %s uses pgoutput", name), "")
	}
	if s.Plugin != "" {
		if s.Database != r.role.database {
			r.add("slot.database", Fail, fmt.Sprintf("slot %s belongs to database %s, repstream reads %s", name, s.Database, r.role.database),
				fmt.Sprintf("set `slot:` to another name; or, connected to %s: %s", s.Database, dropFix))
		} else {
			r.add("slot.database", OK, fmt.Sprintf("slot %s belongs to database %s", name, s.Database), "")
		}
	}
	if s.Active && s.ActivePID != 0 {
		b, _, err := cdc.LookupBackend(ctx, r.conn, s.ActivePID)
		if err != nil {
			return err
		}
		term := fmt.Sprintf("SELECT pg_terminate_backend(%d);", s.ActivePID)
		if cdc.IsReplicationAppName(b.ApplicationName) { // probably the service itself
			r.add("slot.active", Warn, fmt.Sprintf("slot %s is in use by %s: a running repstream; another one waits until it is released", name, b),
				"nothing, if that is your running repstream; to move replication elsewhere, stop that repstream (it releases the slot on the way out)")
		} else {
			r.add("slot.active", Fail, fmt.Sprintf("slot %s is held by %s: serve cannot stream until it is released", name, b),
				"stop that client; or end its session: "+term+" -- or `repstream slot drop --yes --force` to discard the slot")
		}
	} else {
		r.add("slot.active", OK, fmt.Sprintf("slot %s is not held by any process", name), "")
	}
	resync := "`repstream slot drop --yes`; serve then starts a new epoch from a fresh snapshot (clients resync)"
	if s.Active {
		resync = "`repstream slot drop --yes --force` (it ends the session holding the slot); serve then starts a new epoch from a fresh snapshot (clients resync)"
	}
	switch s.WALStatus {
	case "lost":
		r.add("slot.wal_status", Warn, fmt.Sprintf("slot %s lost WAL it needed (wal_status = lost, beyond max_slot_wal_keep_size): it can no longer stream, so the next serve starts a new epoch by itself (it re-creates the slot, reloads from a fresh snapshot, and clients reset)", name),
			"nothing by hand; to keep it from happening again, give the slot more room: ALTER SYSTEM SET max_slot_wal_keep_size = '100GB'; SELECT pg_reload_conf();")
	case "unreserved":
		r.add("slot.wal_status", Warn, fmt.Sprintf("slot %s holds more WAL than max_slot_wal_keep_size (wal_status = unreserved): the next checkpoint removes it unless repstream catches up", name),
			"start repstream now so it confirms progress; or give it room: ALTER SYSTEM SET max_slot_wal_keep_size = '100GB'; SELECT pg_reload_conf();")
	default:
		r.add("slot.wal_status", OK, fmt.Sprintf("slot %s wal_status = %s", name, s.WALStatus), "")
	}
	if s.RetainedBytes > r.in.RetainedWarnBytes {
		r.add("slot.retained_wal", Warn, fmt.Sprintf("slot %s retains %s of WAL (pg_current_wal_lsn() - restart_lsn), over %s", name, Bytes(s.RetainedBytes), Bytes(r.in.RetainedWarnBytes)),
			"start repstream (or find why it lags) so the slot advances; if the slot is abandoned: "+resync)
	} else {
		r.add("slot.retained_wal", OK, fmt.Sprintf("slot %s retains %s of WAL", name, Bytes(s.RetainedBytes)), "")
	}
	return nil
}

// checkEpoch says what serve will do with the slot, mirroring its start
// (stream.Engine.session): resume the checkpoint, or start a new epoch and
// re-create the slot. keep is true when the existing slot will be resumed.
func (r *run) checkEpoch(ctx context.Context) (keep bool, err error) {
	name := r.in.Slot
	m, has, err := r.readMeta(ctx)
	if err != nil {
		r.add("epoch", Warn, fmt.Sprintf("cannot read repstream.meta to tell whether serve resumes slot %s: %v", name, err),
			fmt.Sprintf("GRANT USAGE ON SCHEMA repstream TO %s; GRANT SELECT ON repstream.meta TO %s;", quoteIdent(r.role.name), quoteIdent(r.role.name)))
		return true, nil
	}
	if !has {
		if r.slotOK {
			r.add("epoch", Warn, fmt.Sprintf("slot %s exists but repstream has no checkpoint: serve will drop it and create a new one (only a new slot exports a consistent snapshot)", name),
				"nothing, if the slot is a repstream leftover; if another consumer uses it, set `slot:` to another name")
			return false, nil
		}
		r.add("epoch", OK, fmt.Sprintf("first start: serve creates slot %s and loads existing rows from its snapshot", name), "")
		return false, nil
	}
	reason := ""
	checkpoint, _ := pglogrepl.ParseLSN(m.checkpoint)
	switch {
	case m.reload != nil:
		reason = fmt.Sprintf("a reload did not finish (it started because %s)", *m.reload)
	case r.sys != nil && m.systemID != r.sys.ID:
		reason = fmt.Sprintf("the database was replaced (system id %s, checkpoint's %s)", r.sys.ID, m.systemID)
	case r.sys != nil && m.timeline != r.sys.Timeline:
		reason = fmt.Sprintf("the server's timeline changed (%d, checkpoint's %d)", r.sys.Timeline, m.timeline)
	case m.slot != name:
		reason = fmt.Sprintf("the slot changed (%s, checkpoint's %s)", name, m.slot)
	case !r.slotOK:
		reason = fmt.Sprintf("slot %s is gone (dropped, or invalidated); changes since %s are lost to it", name, m.checkpoint)
	case r.slot.WALStatus == "lost":
		reason = fmt.Sprintf("slot %s lost required WAL", name)
	case m.shapeKnown && r.slot.ConfirmedFlushLSN > checkpoint:
		reason = fmt.Sprintf("slot %s was advanced or re-created behind repstream's back (confirmed_flush_lsn %s, checkpoint %s): the changes in between were skipped",
			name, r.slot.ConfirmedFlushLSN, m.checkpoint)
	case strings.HasPrefix(m.hash, "stopped:"):
		reason = fmt.Sprintf("a source stopped while serving (%s: its table changed under it) and is reloaded once the catalog serves it again", strings.TrimPrefix(m.hash, "stopped:"))
	case r.rules != nil && strings.Split(m.hash, "/")[0] != stream.Fingerprint(r.rules, r.in.Prior):
		reason = "the sources configuration changed (or reputation's prior)"
	}
	if reason == "" {
		r.add("epoch", OK, fmt.Sprintf("serve resumes epoch %s from checkpoint %s on slot %s", m.epoch, m.checkpoint, name), "")
		return true, nil
	}
	fix := "nothing, if that is intended"
	if m.slot != name {
		if _, old, err := cdc.LookupSlot(ctx, r.conn, m.slot); err == nil && old {
			fix = fmt.Sprintf("the old slot %s still holds WAL; once serve runs on %s: SELECT pg_drop_replication_slot(%s);", m.slot, name, quoteLiteral(m.slot))
		}
	}
	r.add("epoch", Warn, fmt.Sprintf("serve will start a new epoch: %s; it re-creates slot %s, reloads the tables from a snapshot, and clients of epoch %s reset", reason, name, m.epoch), fix)
	return false, nil
}

// checkHistory detects a publication, or a source table's membership in it,
// that is newer than the slot: pgoutput reads the publication as of each
// change, so the slot never streams a table's changes from before the table
// joined, and on PostgreSQL before 18 decoding WAL from before the
// publication existed fails ("publication ... does not exist").
//
// Postgres records no creation point for a slot, and no LSN for a catalog
// row, so this compares transaction ids: the xmin of the pg_publication,
// pg_publication_rel or pg_publication_namespace row against the slot's
// catalog_xmin, the oldest catalog state the slot may still decode with. A
// row at or after catalog_xmin was written after the slot's decoding horizon,
// hence after the slot was created: a finding is certain. The converse is not:
// catalog_xmin moves forward as the slot is confirmed, so an addition older
// than the current horizon cannot be dated (nor can a frozen row) and passes.
// A drop and re-add in one transaction (how doctor's own column fix works)
// also shows as new, though it lost nothing.
func (r *run) checkHistory(ctx context.Context) error {
	name, slot := r.in.Publication, r.in.Slot
	var slotAge *int32
	var catalogXmin *string
	if err := r.conn.QueryRow(ctx, `SELECT age(catalog_xmin), catalog_xmin::text FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&slotAge, &catalogXmin); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		return fmt.Errorf("read catalog_xmin of slot %s: %w", slot, err)
	}
	if slotAge == nil || catalogXmin == nil {
		r.add("publication.history", OK, fmt.Sprintf("slot %s has no catalog_xmin to compare the publication with", slot), "")
		return nil
	}
	pubAge, pubXid, members, err := r.memberships(ctx, name)
	if err != nil {
		return err
	}
	newer := func(age *int32) bool { return age != nil && *age <= *slotAge }
	var late []string
	if newer(pubAge) {
		late = append(late, fmt.Sprintf("publication %s was created or altered (xid %s)", name, pubXid))
	}
	for _, t := range r.tables {
		if mb, ok := members[t.String()]; ok && mb.via != "all tables" && newer(mb.age) {
			late = append(late, fmt.Sprintf("table %s joined it (xid %s, via %s)", t, mb.xid, mb.via))
		}
	}
	if len(late) > 0 {
		r.add("publication.history", Fail, fmt.Sprintf("after slot %s's decoding horizon (catalog_xmin %s): %s; the slot misses the changes before that, so the scores would drift from the tables",
			slot, *catalogXmin, strings.Join(late, "; ")),
			"`repstream slot drop --yes`; serve then creates a new slot after the publication and reloads from its snapshot (clients resync)")
		return nil
	}
	r.add("publication.history", OK, fmt.Sprintf("publication %s and its source tables predate slot %s's catalog_xmin %s (older additions cannot be dated by transaction id)", name, slot, *catalogXmin), "")
	return nil
}

// Bytes formats a byte count for people: 1.5 GiB.
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
