package stream

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/repstream/repstream/cdc"
)

// writer owns the dedicated connection every store write goes through: one
// transaction at a time holds a group of source transactions, so state,
// delta log, row shadow and checkpoint commit together or not at all.
type writer struct {
	conn  *pgx.Conn
	tx    pgx.Tx // an explicit transaction of the open group, nil if it needed none yet
	async bool   // synchronous_commit is off: commit returns the WAL position to wait for
	buf   []byte // binary COPY data, kept between groups
}

type rowKey struct {
	source int16
	key    string
}

func newWriter(ctx context.Context, databaseURL string, async bool) (*writer, error) {
	cfg, err := pgx.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("stream: database_url: %w", err)
	}
	cfg.RuntimeParams["application_name"] = cdc.WriterAppName()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("stream: connect store writer: %w", err)
	}
	RegisterTypes(ctx, conn) //nolint:errcheck // never fails
	w := &writer{conn: conn, async: async}
	// A commit need not wait for its fsync in async mode: the slot is
	// confirmed only once the WAL is flushed past it (see Engine.durable).
	// Otherwise the slot is confirmed as soon as a commit returns, so the
	// commit must be on disk whatever the server, database or role sets
	// (a stronger remote_* setting is kept).
	set := `SET synchronous_commit = off`
	if !async {
		set = `SELECT set_config('synchronous_commit', 'on', false) WHERE current_setting('synchronous_commit') = 'off'`
	}
	if _, err := conn.Exec(ctx, set); err != nil {
		conn.Close(ctx)
		return nil, fmt.Errorf("stream: prepare store writer: %w", err)
	}
	return w, nil
}

// slotLockClass is the first key of the advisory lock that one replicator
// of a slot holds across load and stream.
const slotLockClass = 0x72707374 // "rpst"

// lockSlot takes, for the writer's session, the advisory lock of the slot:
// during a load the slot is inactive, and a second replicator must wait
// instead of dropping it. It fails with cdc.ErrSlotInUse when another holds it.
func (w *writer) lockSlot(ctx context.Context, slot string) error {
	var ok bool
	var pid *int32
	err := w.conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, hashtext($2)),
       (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND classid = $1::int::oid AND objid = hashtext($2)::oid AND objsubid = 2 AND pid <> pg_backend_pid() LIMIT 1)`,
		int32(slotLockClass), slot).Scan(&ok, &pid)
	if err != nil {
		return fmt.Errorf("stream: lock slot %s: %w", slot, err)
	}
	if !ok {
		holder := "another session"
		if pid != nil {
			holder = fmt.Sprintf("PID %d", *pid)
		}
		return fmt.Errorf("%w: slot %s is being loaded or streamed by another repstream (%s holds its lock)", cdc.ErrSlotInUse, slot, holder)
	}
	return nil
}

// slotLockHolder is the backend holding the slot's lock (see lockSlot), 0
// when none does.
func slotLockHolder(ctx context.Context, q cdc.Querier, slot string) (int32, error) {
	var pid *int32
	err := q.QueryRow(ctx, `SELECT (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
    AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND classid = $1::int::oid AND objid = hashtext($2)::oid AND objsubid = 2 LIMIT 1)`, int32(slotLockClass), slot).Scan(&pid)
	if err != nil {
		return 0, fmt.Errorf("stream: look up the lock of slot %s: %w", slot, err)
	}
	if pid == nil {
		return 0, nil
	}
	return *pid, nil
}

// durableExec runs sql in a transaction that commits synchronously, also in
// async mode: it returns once that commit, and all WAL before it, is on disk.
func (w *writer) durableExec(ctx context.Context, sql string, args ...any) error {
	w.rollback(ctx)
	tx, err := w.conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit: a no-op
	if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit = on`); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, sql, args...); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// markReload records, durably, that a reload is about to touch the slot;
// only the load's own commit clears it (see reset). The first reason stays.
func (w *writer) markReload(ctx context.Context, reason string) error {
	if err := w.durableExec(ctx, `UPDATE repstream.meta SET reload_reason = coalesce(reload_reason, $1), updated_at = now()`, reason); err != nil {
		return fmt.Errorf("stream: mark the reload in the store: %w", err)
	}
	return nil
}

// flush makes every commit before it durable: the stored checkpoint a
// session starts from may come from an async commit not yet on disk, and
// the reader's first status report confirms it to the slot.
func (w *writer) flush(ctx context.Context) error {
	if err := w.durableExec(ctx, `UPDATE repstream.meta SET updated_at = now()`); err != nil {
		return fmt.Errorf("stream: flush the store: %w", err)
	}
	return nil
}

// setShape records the shape fingerprint in a store an older version
// wrote, and raises its checkpoint to where that version confirmed the slot.
func (w *writer) setShape(ctx context.Context, shape string, checkpoint LSN) error {
	if err := w.durableExec(ctx, `UPDATE repstream.meta SET shape_hash = $1, checkpoint_lsn = greatest(checkpoint_lsn, $2)`, shape, checkpoint); err != nil {
		return fmt.Errorf("stream: record the shape fingerprint: %w", err)
	}
	return nil
}

func (w *writer) close(ctx context.Context) {
	if w.tx != nil {
		w.tx.Rollback(ctx) //nolint:errcheck
		w.tx = nil
	}
	w.conn.Close(ctx)
}

func (w *writer) begin(ctx context.Context) error {
	if w.tx != nil {
		return nil
	}
	tx, err := w.conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("stream: begin group: %w", err)
	}
	w.tx = tx
	return nil
}

// q reads through the open transaction, so a group sees what it spilled.
func (w *writer) q() interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
} {
	if w.tx != nil {
		return w.tx
	}
	return w.conn
}

func (w *writer) rollback(ctx context.Context) {
	if w.tx != nil {
		w.tx.Rollback(ctx) //nolint:errcheck
		w.tx = nil
	}
}

// commit commits the group. With synchronous_commit off it returns a WAL
// position at or past the commit record: the group is durable once the
// server's flush position reaches it. Otherwise it returns 0.
func (w *writer) commit(ctx context.Context) (LSN, error) {
	if w.tx == nil {
		return 0, nil
	}
	err := w.tx.Commit(ctx)
	w.tx = nil
	if err != nil {
		return 0, fmt.Errorf("stream: commit group: %w", err)
	}
	if !w.async {
		return 0, nil
	}
	var wal LSN
	if err := w.conn.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()`).Scan(&wal); err != nil {
		return 0, fmt.Errorf("stream: read the commit's WAL position: %w", err)
	}
	return wal, nil
}

// fetchRows reads shadow rows for keys; missing keys are absent from the map.
func (w *writer) fetchRows(ctx context.Context, keys []rowKey) (map[rowKey][]*string, error) {
	src := make([]int16, len(keys))
	ks := make([]string, len(keys))
	for i, k := range keys {
		src[i], ks[i] = k.source, k.key
	}
	rows, err := w.q().Query(ctx, `
SELECT r.source, r.key, r.vals FROM repstream.rows r
JOIN unnest($1::smallint[], $2::text[]) AS k(source, key) ON r.source = k.source AND r.key = k.key`, src, ks)
	if err != nil {
		return nil, fmt.Errorf("stream: read row shadow: %w", err)
	}
	defer rows.Close()
	out := make(map[rowKey][]*string, len(keys))
	for rows.Next() {
		var k rowKey
		var vals []*string
		if err := rows.Scan(&k.source, &k.key, &vals); err != nil {
			return nil, fmt.Errorf("stream: read row shadow: %w", err)
		}
		out[k] = vals
	}
	return out, rows.Err()
}

// shadowRow is a pending change to the row shadow.
type shadowRow struct {
	vals   []*string // nil: the row is gone
	stored bool      // the store holds the row: update or delete it, else insert
}

// The group's writes are statements over unnest()ed arrays, so a whole group
// (BEGIN, row shadow, states, delta log, checkpoint, COMMIT) is one pipelined
// round trip to Postgres instead of a COPY and a round trip per table.
// Arrays of arrays do not unnest by row, so text[] and bigint[] values travel
// as array literals and are cast back.
const (
	sqlRowsDelete = `DELETE FROM repstream.rows r USING unnest($1::smallint[], $2::text[]) AS k(source, key)
WHERE r.source = k.source AND r.key = k.key`
	sqlRowsInsert = `INSERT INTO repstream.rows (source, key, vals)
SELECT source, key, vals::text[] FROM unnest($1::smallint[], $2::text[], $3::text[]) AS u(source, key, vals)`
	sqlRowsUpdate = `UPDATE repstream.rows r SET vals = u.vals::text[]
FROM unnest($1::smallint[], $2::text[], $3::text[]) AS u(source, key, vals)
WHERE r.source = u.source AND r.key = u.key`
	sqlStatesUpsert = `INSERT INTO repstream.subjects (` + stateCols + `)
SELECT subject, count, sum_micro, mean, bayes, hist::bigint[], version, lsn::pg_lsn, updated_at
FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::float8[], $5::float8[], $6::text[], $7::bigint[], $8::text[], $9::timestamptz[])
    AS u(subject, count, sum_micro, mean, bayes, hist, version, lsn, updated_at)
ON CONFLICT (subject) DO UPDATE SET count = EXCLUDED.count, sum_micro = EXCLUDED.sum_micro, mean = EXCLUDED.mean,
    bayes = EXCLUDED.bayes, hist = EXCLUDED.hist, version = EXCLUDED.version, lsn = EXCLUDED.lsn, updated_at = EXCLUDED.updated_at`
	sqlDeltasInsert = `INSERT INTO repstream.deltas (` + deltaCols + `)
SELECT subject, lsn::pg_lsn, version, count, sum_micro, mean, bayes, hist::bigint[], d_count, d_sum_micro, d_mean, d_bayes, committed_at
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::float8[], $7::float8[], $8::text[],
    $9::bigint[], $10::bigint[], $11::float8[], $12::float8[], $13::timestamptz[])
    AS u(subject, lsn, version, count, sum_micro, mean, bayes, hist, d_count, d_sum_micro, d_mean, d_bayes, committed_at)`
	sqlCheckpoint = `UPDATE repstream.meta SET checkpoint_lsn = $1, updated_at = now()`
)

// statesChunk bounds the states one statement writes (a snapshot load may
// hold millions).
const statesChunk = 20000

// queueRows queues the shadow changes: new rows inserted, stored ones
// updated or deleted; no upsert, whose speculative insertion costs more
// than knowing. With copyNew, new rows are appended to it as binary COPY
// tuples instead, and counted in n.
func queueRows(b *pgx.Batch, dirty map[rowKey]shadowRow, copyNew *[]byte) (n int) {
	var del, insq, up struct {
		src  []int16
		key  []string
		vals []string
	}
	var lit []byte
	for k, r := range dirty {
		switch {
		case r.vals == nil && !r.stored: // inserted and deleted within the group
		case r.vals == nil:
			del.src, del.key = append(del.src, k.source), append(del.key, k.key)
		case !r.stored && copyNew != nil:
			*copyNew = appendRowCopy(*copyNew, k.source, k.key, r.vals)
			n++
		case !r.stored:
			lit = appendTextArray(lit[:0], r.vals)
			insq.src, insq.key, insq.vals = append(insq.src, k.source), append(insq.key, k.key), append(insq.vals, string(lit))
		default:
			lit = appendTextArray(lit[:0], r.vals)
			up.src, up.key, up.vals = append(up.src, k.source), append(up.key, k.key), append(up.vals, string(lit))
		}
	}
	if len(del.key) > 0 {
		b.Queue(sqlRowsDelete, del.src, del.key)
	}
	if len(insq.key) > 0 {
		b.Queue(sqlRowsInsert, insq.src, insq.key, insq.vals)
	}
	if len(up.key) > 0 {
		b.Queue(sqlRowsUpdate, up.src, up.key, up.vals)
	}
	return n
}

// queueStates queues an upsert of states.
func queueStates(b *pgx.Batch, states []State) {
	for len(states) > 0 {
		chunk := states[:min(len(states), statesChunk)]
		states = states[len(chunk):]
		n := len(chunk)
		var (
			subject = make([]string, n)
			count   = make([]int64, n)
			sum     = make([]int64, n)
			mean    = make([]float64, n)
			bayes   = make([]float64, n)
			hist    = make([]*string, n)
			version = make([]int64, n)
			lsn     = make([]string, n)
			at      = make([]time.Time, n)
		)
		for i := range chunk {
			s := &chunk[i]
			subject[i], count[i], sum[i], mean[i], bayes[i] = s.Subject, s.Count, int64(s.Sum), s.Mean, s.Bayes
			hist[i], version[i], lsn[i], at[i] = int64ArrayLiteral(s.Hist), s.Version, s.LSN.String(), s.UpdatedAt
		}
		b.Queue(sqlStatesUpsert, subject, count, sum, mean, bayes, hist, version, lsn, at)
	}
}

// copyAbove is the group size, in deltas or shadow rows, above which the
// delta log and new shadow rows are written with COPY.
const copyAbove = 1000

func countDeltas(txns []Txn) int {
	n := 0
	for i := range txns {
		n += len(txns[i].Deltas)
	}
	return n
}

// keepCopyBuf is the largest COPY buffer kept for the next group; the one
// of a rare huge group is left to the garbage collector.
const keepCopyBuf = 16 << 20

// copyIn runs a binary COPY of the tuples in w.buf (after its header) in
// the open transaction.
func (w *writer) copyIn(ctx context.Context, sql string) error {
	w.buf = appendCopyTrailer(w.buf)
	_, err := w.conn.PgConn().CopyFrom(ctx, bytes.NewReader(w.buf), sql)
	if cap(w.buf) > keepCopyBuf {
		w.buf = nil
	}
	return err
}

// copyDeltas appends to the delta log with COPY, in the open transaction.
func (w *writer) copyDeltas(ctx context.Context, txns []Txn) error {
	w.buf = appendDeltasCopy(appendCopyHeader(w.buf[:0]), txns)
	if err := w.copyIn(ctx, sqlCopyDeltas); err != nil {
		return fmt.Errorf("stream: append deltas: %w", err)
	}
	return nil
}

// queueRowsCopy queues the shadow changes, but first writes the new rows
// with COPY in the open transaction when there are many.
func (w *writer) queueRowsCopy(ctx context.Context, b *pgx.Batch, dirty map[rowKey]shadowRow) error {
	if len(dirty) <= copyAbove || w.tx == nil {
		queueRows(b, dirty, nil)
		return nil
	}
	w.buf = appendCopyHeader(w.buf[:0])
	if queueRows(b, dirty, &w.buf) == 0 {
		return nil
	}
	if err := w.copyIn(ctx, sqlCopyRows); err != nil {
		return fmt.Errorf("stream: write row shadow: %w", err)
	}
	return nil
}

// queueDeltas queues the group's appends to the delta log.
func queueDeltas(b *pgx.Batch, txns []Txn) {
	n := countDeltas(txns)
	if n == 0 {
		return
	}
	var (
		subject = make([]string, 0, n)
		lsn     = make([]string, 0, n)
		version = make([]int64, 0, n)
		count   = make([]int64, 0, n)
		sum     = make([]int64, 0, n)
		mean    = make([]float64, 0, n)
		bayes   = make([]float64, 0, n)
		hist    = make([]*string, 0, n)
		dCount  = make([]int64, 0, n)
		dSum    = make([]int64, 0, n)
		dMean   = make([]float64, 0, n)
		dBayes  = make([]float64, 0, n)
		at      = make([]time.Time, 0, n)
	)
	for i := range txns {
		txnLSN := txns[i].LSN.String() // every delta of a transaction has its LSN
		for j := range txns[i].Deltas {
			d := &txns[i].Deltas[j]
			l := txnLSN
			if d.LSN != txns[i].LSN {
				l = d.LSN.String()
			}
			subject, lsn, version = append(subject, d.Subject), append(lsn, l), append(version, d.Version)
			count, sum = append(count, d.After.Count), append(sum, int64(d.After.Sum))
			mean, bayes, hist = append(mean, d.After.Mean), append(bayes, d.After.Bayes), append(hist, int64ArrayLiteral(d.After.Hist))
			dCount, dSum = append(dCount, d.Change.Count), append(dSum, int64(d.Change.Sum))
			dMean, dBayes, at = append(dMean, d.Change.Mean), append(dBayes, d.Change.Bayes), append(at, d.After.UpdatedAt)
		}
	}
	b.Queue(sqlDeltasInsert, subject, lsn, version, count, sum, mean, bayes, hist, dCount, dSum, dMean, dBayes, at)
}

// appendTextArray appends vals as a Postgres text[] literal.
func appendTextArray(b []byte, vals []*string) []byte {
	b = append(b, '{')
	for i, v := range vals {
		if i > 0 {
			b = append(b, ',')
		}
		if v == nil {
			b = append(b, "NULL"...)
			continue
		}
		b = append(b, '"')
		for j := 0; j < len(*v); j++ {
			if c := (*v)[j]; c == '"' || c == '\\' {
				b = append(b, '\\', c)
			} else {
				b = append(b, c)
			}
		}
		b = append(b, '"')
	}
	return append(b, '}')
}

// int64ArrayLiteral is h as a Postgres bigint[] literal; nil for nil.
func int64ArrayLiteral(h []int64) *string {
	if h == nil {
		return nil
	}
	b := make([]byte, 0, 2+len(h)*4)
	b = append(b, '{')
	for i, v := range h {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, v, 10)
	}
	s := string(append(b, '}'))
	return &s
}

// send runs a batch in the open transaction, or on its own when none is open.
func (w *writer) send(ctx context.Context, b *pgx.Batch) error {
	if b.Len() == 0 {
		return nil
	}
	if w.tx != nil {
		return w.tx.SendBatch(ctx, b).Close()
	}
	return w.conn.SendBatch(ctx, b).Close()
}

// writeRows writes shadow changes into the open transaction (a huge source
// transaction spills its shadow before its group commits).
func (w *writer) writeRows(ctx context.Context, dirty map[rowKey]shadowRow) error {
	b := &pgx.Batch{}
	if err := w.queueRowsCopy(ctx, b, dirty); err != nil {
		return err
	}
	if err := w.send(ctx, b); err != nil {
		return fmt.Errorf("stream: write row shadow: %w", err)
	}
	return nil
}

// writeStates upserts states in the open transaction.
func (w *writer) writeStates(ctx context.Context, states []State) error {
	b := &pgx.Batch{}
	queueStates(b, states)
	if err := w.send(ctx, b); err != nil {
		return fmt.Errorf("stream: write states: %w", err)
	}
	return nil
}

// commitGroup writes a group and commits it, in one round trip unless a
// transaction was opened for it already (a spill or a TRUNCATE). With
// synchronous_commit off it returns a WAL position at or past the commit
// record: the group is durable once the server's flush position reaches it.
// Otherwise it returns 0.
func (w *writer) commitGroup(ctx context.Context, dirty map[rowKey]shadowRow, states []State, txns []Txn, pos LSN) (LSN, error) {
	b := &pgx.Batch{}
	if nd := countDeltas(txns); nd > copyAbove || len(dirty) > copyAbove {
		// A big group: COPY moves the delta log and new shadow rows faster
		// than unnest(), and a few more round trips do not matter.
		if err := w.begin(ctx); err != nil {
			return 0, err
		}
		if err := w.queueRowsCopy(ctx, b, dirty); err != nil {
			w.rollback(ctx)
			return 0, err
		}
		dirty = nil
		if nd > 0 {
			if err := w.copyDeltas(ctx, txns); err != nil {
				w.rollback(ctx)
				return 0, err
			}
			txns = nil
		}
	}
	open := w.tx != nil
	if !open {
		b.Queue(`BEGIN`)
	}
	queueRows(b, dirty, nil)
	queueStates(b, states)
	queueDeltas(b, txns)
	b.Queue(sqlCheckpoint, pos)
	if !open {
		b.Queue(`COMMIT`)
	}
	var wal LSN
	if w.async && !open {
		b.Queue(`SELECT pg_current_wal_insert_lsn()`).QueryRow(func(r pgx.Row) error { return r.Scan(&wal) })
	}
	if err := w.send(ctx, b); err != nil {
		w.rollback(ctx)
		if !open {
			// A statement failed inside the batch's BEGIN: end that transaction.
			w.conn.Exec(ctx, `ROLLBACK`) //nolint:errcheck // the session restarts anyway
		}
		return 0, fmt.Errorf("stream: write group: %w", err)
	}
	if open {
		return w.commit(ctx)
	}
	return wal, nil
}

// fetchStates reads the states of subjects; missing ones are absent.
func (w *writer) fetchStates(ctx context.Context, subjects []string) (map[string]State, error) {
	rows, err := w.q().Query(ctx, `SELECT `+stateCols+` FROM repstream.subjects WHERE subject = ANY($1)`, subjects)
	if err != nil {
		return nil, fmt.Errorf("stream: read states: %w", err)
	}
	defer rows.Close()
	out := make(map[string]State, len(subjects))
	for rows.Next() {
		st, err := scanState(rows)
		if err != nil {
			return nil, fmt.Errorf("stream: read states: %w", err)
		}
		out[st.Subject] = st
	}
	return out, rows.Err()
}

// scanSource streams every shadow row of a source (for TRUNCATE).
func (w *writer) scanSource(ctx context.Context, source int16, fn func(vals []*string)) error {
	rows, err := w.tx.Query(ctx, `SELECT vals FROM repstream.rows WHERE source = $1`, source)
	if err != nil {
		return fmt.Errorf("stream: read row shadow of source %d: %w", source, err)
	}
	defer rows.Close()
	for rows.Next() {
		var vals []*string
		if err := rows.Scan(&vals); err != nil {
			return fmt.Errorf("stream: read row shadow of source %d: %w", source, err)
		}
		fn(vals)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("stream: read row shadow of source %d: %w", source, err)
	}
	if _, err := w.tx.Exec(ctx, `DELETE FROM repstream.rows WHERE source = $1`, source); err != nil {
		return fmt.Errorf("stream: clear row shadow of source %d: %w", source, err)
	}
	return nil
}

// reset empties the derived state for a new epoch and records its meta.
func (w *writer) reset(ctx context.Context, m Meta, sourcesHash, shapeHash string) error {
	_, err := w.tx.Exec(ctx, `
TRUNCATE repstream.subjects, repstream.deltas, repstream.rows;
DELETE FROM repstream.meta;`)
	if err != nil {
		return fmt.Errorf("stream: clear state for a new epoch: %w", err)
	}
	_, err = w.tx.Exec(ctx, `INSERT INTO repstream.meta (epoch, slot, system_id, timeline, sources_hash, shape_hash, checkpoint_lsn, log_from_lsn, loaded_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`, m.Epoch, m.Slot, m.SystemID, m.Timeline, sourcesHash, shapeHash, m.Checkpoint, m.LogFrom, m.LoadedAt)
	if err != nil {
		return fmt.Errorf("stream: record new epoch: %w", err)
	}
	return nil
}

// copyRows streams rows into the shadow during a snapshot load.
func (w *writer) copyRows(ctx context.Context, next func() ([]any, error)) (int64, error) {
	n, err := w.tx.CopyFrom(ctx, pgx.Identifier{"repstream", "rows"}, []string{"source", "key", "vals"}, pgx.CopyFromFunc(next))
	if err != nil {
		return n, fmt.Errorf("stream: load row shadow: %w", err)
	}
	return n, nil
}
