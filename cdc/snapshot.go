package cdc

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Snapshot reads source tables exactly as of a slot's exported snapshot, so
// the rows it returns and the changes streamed from the slot's consistent
// point meet without a gap or an overlap.
type Snapshot struct {
	tx pgx.Tx
}

// ConnectSnapshot opens the connection a snapshot load reads on, with the
// same output settings as ConnectReplication's, so Scan prints every value
// as pgoutput does.
func ConnectSnapshot(ctx context.Context, databaseURL string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("cdc: database_url: %w", err)
	}
	setOutputSettings(&cfg.Config)
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("cdc: connect for snapshot: %w", err)
	}
	if err := checkOutputSettings(conn.PgConn()); err != nil {
		conn.Close(ctx)
		return nil, err
	}
	return conn, nil
}

// BeginSnapshot imports snapshot name into a read-only repeatable-read
// transaction on conn, which must come from ConnectSnapshot. Close it as soon as the load is done: an open
// snapshot holds back vacuum.
func BeginSnapshot(ctx context.Context, conn *pgx.Conn, name string) (*Snapshot, error) {
	if err := checkOutputSettings(conn.PgConn()); err != nil {
		return nil, fmt.Errorf("%w (open the snapshot's connection with ConnectSnapshot)", err)
	}
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("cdc: begin snapshot: %w", err)
	}
	if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+escapeLiteral(name)+"'"); err != nil {
		tx.Rollback(ctx) //nolint:errcheck
		return nil, fmt.Errorf("cdc: import snapshot %s: %w", name, err)
	}
	return &Snapshot{tx: tx}, nil
}

// Scan calls fn for every row of t (restricted by the publication's row
// filter, if any) with the text values of key and then t.Columns; nil is
// NULL. The slices are reused between calls. A value is its type's output
// function's text, byte for byte what pgoutput sends on a connection from
// ConnectReplication when the snapshot's connection is from ConnectSnapshot
// (a ::text cast is not: it prints a boolean "true", trims char(n) and
// gives an inet its /32).
func (s *Snapshot) Scan(ctx context.Context, t Table, key []string, rowFilter string, fn func(key, vals []*string) error) error {
	sel := make([]string, 0, len(key)+len(t.Columns))
	for _, c := range append(append([]string{}, key...), t.Columns...) {
		sel = append(sel, quoteIdent(c))
	}
	q := "SELECT " + strings.Join(sel, ", ") + " FROM " + t.Qualified()
	if rowFilter != "" {
		q += " WHERE " + rowFilter
	}
	rows, err := s.tx.Query(ctx, q, pgx.QueryResultFormats{pgx.TextFormatCode})
	if err != nil {
		return fmt.Errorf("cdc: snapshot of %s: %w", t, err)
	}
	defer rows.Close()
	vals := make([]*string, len(sel))
	for rows.Next() {
		for i, raw := range rows.RawValues() {
			if raw == nil {
				vals[i] = nil
				continue
			}
			v := string(raw)
			vals[i] = &v
		}
		if err := fn(vals[:len(key)], vals[len(key):]); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("cdc: snapshot of %s: %w", t, err)
	}
	return nil
}

// Close ends the snapshot transaction.
func (s *Snapshot) Close(ctx context.Context) error {
	return s.tx.Rollback(ctx)
}
