package stream

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// writer owns the dedicated connection every store write goes through: one
// transaction at a time holds a group of source transactions, so state,
// delta log, row shadow and checkpoint commit together or not at all.
type writer struct {
	conn    *pgx.Conn
	tx      pgx.Tx // the open group, nil between groups
	commits int
	async   bool // synchronous_commit is off: commit returns the WAL position to wait for
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
	cfg.RuntimeParams["application_name"] = "repstream-writer"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("stream: connect store writer: %w", err)
	}
	RegisterTypes(ctx, conn) //nolint:errcheck // never fails
	_, err = conn.Exec(ctx, `
CREATE TEMP TABLE IF NOT EXISTS rows_stage (source smallint, key text, vals text[]);
CREATE TEMP TABLE IF NOT EXISTS subjects_stage (LIKE repstream.subjects);`)
	if err != nil {
		conn.Close(ctx)
		return nil, fmt.Errorf("stream: prepare store writer: %w", err)
	}
	w := &writer{conn: conn, async: async}
	if w.async {
		// A commit need not wait for its fsync: the slot is confirmed only
		// once the WAL is flushed past it (see Engine.durable).
		if _, err := conn.Exec(ctx, `SET synchronous_commit = off`); err != nil {
			conn.Close(ctx)
			return nil, fmt.Errorf("stream: prepare store writer: %w", err)
		}
	}
	return w, nil
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
	// The staging tables are emptied with DELETE (a TRUNCATE per group costs
	// a new file and catalog writes); temp tables are never vacuumed, so
	// truncate them now and then.
	w.commits++
	if w.commits%1000 == 0 {
		if _, err := w.tx.Exec(ctx, `TRUNCATE rows_stage, subjects_stage`); err != nil {
			w.tx.Rollback(ctx) //nolint:errcheck
			w.tx = nil
			return 0, fmt.Errorf("stream: empty staging tables: %w", err)
		}
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
	rows, err := w.tx.Query(ctx, `
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

// writeRows applies the shadow changes: new rows are copied straight in,
// stored ones updated or deleted; no upsert, whose speculative insertion
// costs more than knowing.
func (w *writer) writeRows(ctx context.Context, dirty map[rowKey]shadowRow) error {
	var delSrc []int16
	var delKey []string
	up := make([][]any, 0, len(dirty))
	ins := make([][]any, 0, len(dirty))
	for k, r := range dirty {
		switch {
		case r.vals == nil && !r.stored: // inserted and deleted within the group
		case r.vals == nil:
			delSrc = append(delSrc, k.source)
			delKey = append(delKey, k.key)
		case !r.stored:
			ins = append(ins, []any{k.source, k.key, r.vals})
		default:
			up = append(up, []any{k.source, k.key, r.vals})
		}
	}
	if len(delKey) > 0 {
		_, err := w.tx.Exec(ctx, `
DELETE FROM repstream.rows r USING unnest($1::smallint[], $2::text[]) AS k(source, key)
WHERE r.source = k.source AND r.key = k.key`, delSrc, delKey)
		if err != nil {
			return fmt.Errorf("stream: delete from row shadow: %w", err)
		}
	}
	if len(ins) > 0 {
		if _, err := w.tx.CopyFrom(ctx, pgx.Identifier{"repstream", "rows"}, []string{"source", "key", "vals"}, pgx.CopyFromRows(ins)); err != nil {
			return fmt.Errorf("stream: add to row shadow: %w", err)
		}
	}
	if len(up) == 0 {
		return nil
	}
	if _, err := w.tx.CopyFrom(ctx, pgx.Identifier{"rows_stage"}, []string{"source", "key", "vals"}, pgx.CopyFromRows(up)); err != nil {
		return fmt.Errorf("stream: stage row shadow: %w", err)
	}
	_, err := w.tx.Exec(ctx, `
UPDATE repstream.rows r SET vals = s.vals FROM rows_stage s WHERE r.source = s.source AND r.key = s.key;
DELETE FROM rows_stage`)
	if err != nil {
		return fmt.Errorf("stream: write row shadow: %w", err)
	}
	return nil
}

// fetchStates reads the states of subjects; missing ones are absent.
func (w *writer) fetchStates(ctx context.Context, subjects []string) (map[string]State, error) {
	rows, err := w.tx.Query(ctx, `SELECT `+stateCols+` FROM repstream.subjects WHERE subject = ANY($1)`, subjects)
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

// writeStates upserts states.
func (w *writer) writeStates(ctx context.Context, states []State) error {
	if len(states) == 0 {
		return nil
	}
	i := 0
	src := pgx.CopyFromFunc(func() ([]any, error) {
		if i == len(states) {
			return nil, nil
		}
		s := &states[i]
		i++
		return []any{s.Subject, s.Count, int64(s.Sum), s.Mean, s.Bayes, s.Hist, s.Version, s.LSN, s.UpdatedAt}, nil
	})
	if _, err := w.tx.CopyFrom(ctx, pgx.Identifier{"subjects_stage"},
		[]string{"subject", "count", "sum_micro", "mean", "bayes", "hist", "version", "lsn", "updated_at"}, src); err != nil {
		return fmt.Errorf("stream: stage states: %w", err)
	}
	_, err := w.tx.Exec(ctx, `
INSERT INTO repstream.subjects SELECT * FROM subjects_stage
ON CONFLICT (subject) DO UPDATE SET count = EXCLUDED.count, sum_micro = EXCLUDED.sum_micro, mean = EXCLUDED.mean,
    bayes = EXCLUDED.bayes, hist = EXCLUDED.hist, version = EXCLUDED.version, lsn = EXCLUDED.lsn, updated_at = EXCLUDED.updated_at;
DELETE FROM subjects_stage`)
	if err != nil {
		return fmt.Errorf("stream: write states: %w", err)
	}
	return nil
}

// writeDeltas appends to the delta log.
func (w *writer) writeDeltas(ctx context.Context, txns []Txn) error {
	ti, di := 0, 0
	src := pgx.CopyFromFunc(func() ([]any, error) {
		for ti < len(txns) && di >= len(txns[ti].Deltas) {
			ti, di = ti+1, 0
		}
		if ti == len(txns) {
			return nil, nil
		}
		d := &txns[ti].Deltas[di]
		di++
		return []any{d.Subject, d.LSN, d.Version, d.After.Count, int64(d.After.Sum), d.After.Mean, d.After.Bayes, d.After.Hist,
			d.Change.Count, int64(d.Change.Sum), d.Change.Mean, d.Change.Bayes, d.After.UpdatedAt}, nil
	})
	_, err := w.tx.CopyFrom(ctx, pgx.Identifier{"repstream", "deltas"},
		[]string{"subject", "lsn", "version", "count", "sum_micro", "mean", "bayes", "hist", "d_count", "d_sum_micro", "d_mean", "d_bayes", "committed_at"}, src)
	if err != nil {
		return fmt.Errorf("stream: append deltas: %w", err)
	}
	return nil
}

func (w *writer) checkpoint(ctx context.Context, lsn LSN) error {
	if _, err := w.tx.Exec(ctx, `UPDATE repstream.meta SET checkpoint_lsn = $1, updated_at = now()`, lsn); err != nil {
		return fmt.Errorf("stream: write checkpoint: %w", err)
	}
	return nil
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
func (w *writer) reset(ctx context.Context, m Meta, sourcesHash string) error {
	_, err := w.tx.Exec(ctx, `
TRUNCATE repstream.subjects, repstream.deltas, repstream.rows;
DELETE FROM repstream.meta;`)
	if err != nil {
		return fmt.Errorf("stream: clear state for a new epoch: %w", err)
	}
	_, err = w.tx.Exec(ctx, `INSERT INTO repstream.meta (epoch, slot, system_id, timeline, sources_hash, checkpoint_lsn, log_from_lsn, loaded_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, m.Epoch, m.Slot, m.SystemID, m.Timeline, sourcesHash, m.Checkpoint, m.LogFrom, m.LoadedAt)
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
