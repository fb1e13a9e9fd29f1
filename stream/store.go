package stream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Store is repstream's durable state in Postgres (schema repstream): subject
// states, the delta log, the row shadow and the checkpoint. Reads go through
// a pool and are safe for concurrent use; writes go through a Writer.
type Store struct {
	pool *pgxpool.Pool
}

// NewStore reads and writes through pool.
func NewStore(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// Pool is the store's connection pool, for status queries of the wiring.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

var _ Log = (*Store)(nil)

const metaCols = `epoch, slot, system_id, timeline, checkpoint_lsn, log_from_lsn, loaded_at`

func scanMeta(row pgx.Row) (Meta, error) {
	var m Meta
	err := row.Scan(&m.Epoch, &m.Slot, &m.SystemID, &m.Timeline, &m.Checkpoint, &m.LogFrom, &m.LoadedAt)
	return m, err
}

// ErrNoMeta means the store has never completed a snapshot load.
var ErrNoMeta = errors.New("stream: store has no checkpoint yet")

// Meta returns the epoch and positions; ErrNoMeta before the first load.
func (s *Store) Meta(ctx context.Context) (Meta, error) {
	m, err := scanMeta(s.pool.QueryRow(ctx, `SELECT `+metaCols+` FROM repstream.meta`))
	if errors.Is(err, pgx.ErrNoRows) {
		return m, ErrNoMeta
	}
	if err != nil {
		return m, fmt.Errorf("stream: read meta: %w", err)
	}
	return m, nil
}

// SourcesHash returns the fingerprint of the sources the state was built with.
func (s *Store) SourcesHash(ctx context.Context) (string, error) {
	var h string
	err := s.pool.QueryRow(ctx, `SELECT sources_hash FROM repstream.meta`).Scan(&h)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNoMeta
	}
	return h, err
}

// epochMarks is what the store records about how its state was derived,
// besides Meta. It is read in the same query as Meta, so a failed read is
// an error to retry, never a difference that starts an epoch.
type epochMarks struct {
	SourcesHash string
	// ShapeHash is nil when an older version wrote the store.
	ShapeHash *string
	// Reload is non-nil while a reload that touched the slot has not committed.
	Reload *string
}

// metaAndMarks reads Meta and the epoch marks; ErrNoMeta before the first load.
func (s *Store) metaAndMarks(ctx context.Context) (Meta, epochMarks, error) {
	var m Meta
	var k epochMarks
	err := s.pool.QueryRow(ctx, `SELECT `+metaCols+`, sources_hash, shape_hash, reload_reason FROM repstream.meta`).Scan(
		&m.Epoch, &m.Slot, &m.SystemID, &m.Timeline, &m.Checkpoint, &m.LogFrom, &m.LoadedAt, &k.SourcesHash, &k.ShapeHash, &k.Reload)
	if errors.Is(err, pgx.ErrNoRows) {
		return m, k, ErrNoMeta
	}
	if err != nil {
		return m, k, fmt.Errorf("stream: read meta: %w", err)
	}
	return m, k, nil
}

// setTimeline records that the state's history continues on a promoted
// server's timeline.
func (s *Store) setTimeline(ctx context.Context, tli int32) error {
	if _, err := s.pool.Exec(ctx, `UPDATE repstream.meta SET timeline = $1, updated_at = now()`, tli); err != nil {
		return fmt.Errorf("stream: record timeline %d: %w", tli, err)
	}
	return nil
}

const stateCols = `subject, count, sum_micro, mean, bayes, hist, version, lsn, updated_at`

func scanState(row pgx.Row) (State, error) {
	var st State
	err := row.Scan(&st.Subject, &st.Count, &st.Sum, &st.Mean, &st.Bayes, &st.Hist, &st.Version, &st.LSN, &st.UpdatedAt)
	return st, err
}

// State returns one subject's state, or ErrNotFound.
func (s *Store) State(ctx context.Context, subject string) (State, error) {
	st, err := scanState(s.pool.QueryRow(ctx, `SELECT `+stateCols+` FROM repstream.subjects WHERE subject = $1`, subject))
	if errors.Is(err, pgx.ErrNoRows) {
		return st, ErrNotFound
	}
	if err != nil {
		return st, fmt.Errorf("stream: read state of %s: %w", subject, err)
	}
	return st, nil
}

func selWhere(sel Selector, args *[]any) string {
	if sel.All {
		return "true"
	}
	var conds []string
	if len(sel.Subjects) > 0 {
		*args = append(*args, sel.Subjects)
		conds = append(conds, fmt.Sprintf("subject = ANY($%d)", len(*args)))
	}
	if sel.Prefix != "" {
		*args = append(*args, likeEscape(sel.Prefix)+"%")
		conds = append(conds, fmt.Sprintf("subject LIKE $%d", len(*args)))
	}
	if len(conds) == 0 {
		return "false"
	}
	return "(" + strings.Join(conds, " OR ") + ")"
}

func likeEscape(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return r.Replace(s)
}

// States returns the selected states and the head they are consistent with.
func (s *Store) States(ctx context.Context, sel Selector, order Order, limit int) ([]State, LSN, error) {
	return s.states(ctx, sel, order, nil, limit)
}

// StatesAfter returns a page of the selected states: those whose subject
// sorts after after, in subject order, at most limit, with the head they
// are consistent with.
func (s *Store) StatesAfter(ctx context.Context, sel Selector, after string, limit int) ([]State, LSN, error) {
	return s.states(ctx, sel, "", &after, limit)
}

func (s *Store) states(ctx context.Context, sel Selector, order Order, after *string, limit int) ([]State, LSN, error) {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, 0, fmt.Errorf("stream: read states: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	var head LSN
	if err := tx.QueryRow(ctx, `SELECT checkpoint_lsn FROM repstream.meta`).Scan(&head); err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, 0, fmt.Errorf("stream: read head: %w", err)
	}
	var args []any
	q := `SELECT ` + stateCols + ` FROM repstream.subjects WHERE ` + selWhere(sel, &args)
	if after != nil {
		args = append(args, *after)
		q += fmt.Sprintf(` AND subject > $%d`, len(args))
	}
	switch order {
	case "":
		q += ` ORDER BY subject`
	case OrderBayes, OrderMean, OrderCount, OrderUpdatedAt:
		q += ` ORDER BY ` + string(order) + ` DESC, subject`
	default:
		return nil, 0, fmt.Errorf("stream: unknown order %q (want bayes, mean, count or updated_at)", order)
	}
	if limit > 0 {
		q += fmt.Sprintf(` LIMIT %d`, limit)
	}
	rows, err := tx.Query(ctx, q, args...)
	if err != nil {
		return nil, 0, fmt.Errorf("stream: read states: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (State, error) { return scanState(r) })
	if err != nil {
		return nil, 0, fmt.Errorf("stream: read states: %w", err)
	}
	return out, head, nil
}

const deltaCols = `subject, lsn, version, count, sum_micro, mean, bayes, hist, d_count, d_sum_micro, d_mean, d_bayes, committed_at`

func scanDelta(row pgx.Row) (Delta, error) {
	var d Delta
	err := row.Scan(&d.Subject, &d.LSN, &d.Version, &d.After.Count, &d.After.Sum, &d.After.Mean, &d.After.Bayes, &d.After.Hist,
		&d.Change.Count, &d.Change.Sum, &d.Change.Mean, &d.Change.Bayes, &d.After.UpdatedAt)
	d.After.Subject, d.After.Version, d.After.LSN, d.Coalesced = d.Subject, d.Version, d.LSN, 1
	return d, err
}

// Deltas returns the selected deltas with since < lsn <= upto in LSN order.
// A limit never splits a transaction: a full page is completed with the rest
// of its last transaction.
//
// The page is read in one repeatable-read transaction with the log's
// start: a prune that raised it past since (Prune deletes and raises it in
// one statement) is seen, and answered ErrPruned, never read as a gap.
func (s *Store) Deltas(ctx context.Context, sel Selector, since, upto LSN, limit int) ([]Delta, error) {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("stream: read deltas: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	var from LSN
	if err := tx.QueryRow(ctx, `SELECT log_from_lsn FROM repstream.meta`).Scan(&from); err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("stream: read the log's start: %w", err)
	}
	if since < from {
		return nil, fmt.Errorf("%w: cursor %s, log starts after %s", ErrPruned, since, from)
	}
	args := []any{since, upto}
	lim := ""
	if limit > 0 {
		lim = ` LIMIT ` + strconv.Itoa(limit)
	}
	var q string
	switch {
	case len(sel.Subjects) == 1 && sel.Prefix == "":
		// The primary key (subject, lsn) yields one subject's deltas in
		// order: the scan stops at the limit.
		args = append(args, sel.Subjects[0])
		q = `SELECT ` + deltaCols + ` FROM repstream.deltas WHERE subject = $3 AND lsn > $1 AND lsn <= $2 ORDER BY lsn` + lim
	case len(sel.Subjects) > 1 && sel.Prefix == "" && limit > 0:
		// subject = ANY(...) would sort every remaining delta of the list
		// for each page; take at most a page per subject, in order, instead.
		args = append(args, sel.Subjects)
		q = `SELECT d.* FROM (SELECT DISTINCT unnest($3::text[]) AS subject) AS s, LATERAL (
    SELECT ` + deltaCols + ` FROM repstream.deltas WHERE subject = s.subject AND lsn > $1 AND lsn <= $2 ORDER BY lsn` + lim + `
) AS d ORDER BY d.lsn, d.subject` + lim
	default:
		q = `SELECT ` + deltaCols + ` FROM repstream.deltas WHERE lsn > $1 AND lsn <= $2 AND ` + selWhere(sel, &args) + ` ORDER BY lsn, subject` + lim
	}
	out, err := collectDeltas(ctx, tx, nil, q, args)
	if err != nil || limit <= 0 || len(out) < limit {
		return out, err
	}
	last := out[len(out)-1]
	args = []any{last.LSN, last.Subject}
	q = `SELECT ` + deltaCols + ` FROM repstream.deltas WHERE lsn = $1 AND subject > $2 AND ` + selWhere(sel, &args) + ` ORDER BY subject`
	return collectDeltas(ctx, tx, out, q, args)
}

func collectDeltas(ctx context.Context, tx pgx.Tx, out []Delta, q string, args []any) ([]Delta, error) {
	rows, err := tx.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("stream: read deltas: %w", err)
	}
	out, err = pgx.AppendRows(out, rows, func(r pgx.CollectableRow) (Delta, error) { return scanDelta(r) })
	if err != nil {
		return nil, fmt.Errorf("stream: read deltas: %w", err)
	}
	return out, nil
}

// Prune deletes deltas recorded before cutoff, in batches, and raises the
// log's start so older cursors get a reset instead of a silent gap.
func (s *Store) Prune(ctx context.Context, cutoff time.Time) (int64, error) {
	var total int64
	for {
		var n int64
		err := s.pool.QueryRow(ctx, `
WITH oldest AS (
    SELECT subject, lsn, recorded_at FROM repstream.deltas ORDER BY lsn LIMIT 10000
), victims AS (
    SELECT subject, lsn FROM oldest WHERE recorded_at < $1
), gone AS (
    DELETE FROM repstream.deltas d USING victims v WHERE d.subject = v.subject AND d.lsn = v.lsn RETURNING d.lsn
), top AS (SELECT max(lsn) AS lsn, count(*) AS n FROM gone)
UPDATE repstream.meta SET log_from_lsn = greatest(log_from_lsn, (SELECT lsn FROM top))
WHERE (SELECT n FROM top) > 0
RETURNING (SELECT n FROM top)`, cutoff).Scan(&n)
		if errors.Is(err, pgx.ErrNoRows) {
			return total, nil
		}
		if err != nil {
			return total, fmt.Errorf("stream: prune deltas: %w", err)
		}
		total += n
		if n < 10000 {
			return total, nil
		}
	}
}
