package stream

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/repstream/repstream/cdc"
)

// resolveWhere resolves the engine's where values before a session reads rows.
func (e *Engine) resolveWhere(ctx context.Context) error {
	return ResolveWhere(ctx, e.cfg.DatabaseURL, e.rules)
}

// ResolveWhere turns each configured where value of rules into the text its
// column prints it as, so it compares with rows as SQL's = would ("5" is
// "5.0" in a numeric(3,1), "ab" is "ab  " in a char(4), "yes" is "t"). A
// value the column cannot hold would match nothing, silently: it is a
// ConfigError naming its key. The tables and columns must exist.
func ResolveWhere(ctx context.Context, databaseURL string, rules []*Rule) error {
	var conn *pgx.Conn
	for _, r := range rules {
		for j := range r.where {
			w := &r.where[j]
			if w.null {
				continue
			}
			if conn == nil {
				c, err := cdc.ConnectSnapshot(ctx, databaseURL)
				if err != nil {
					return fmt.Errorf("stream: where values: %w", err)
				}
				defer c.Close(context.Background())
				conn = c
			}
			col := r.Columns[w.col]
			v, decimal, err := cdc.PrintAs(ctx, conn, cdc.Table{Schema: r.Schema, Name: r.Name}, col, w.lit)
			var nv *cdc.NotAValueError
			if errors.As(err, &nv) {
				return &ConfigError{fmt.Sprintf("sources[%d].where.%s", r.ID, col),
					fmt.Sprintf("%q would match no row: %v; write a value the column holds, as in SQL", w.lit, nv)}
			}
			if err != nil {
				return fmt.Errorf("stream: where values: %w", err)
			}
			w.val, w.decimal = v, decimal
			if decimal {
				w.val = trimDecimal(v)
			}
		}
	}
	return nil
}

// trimDecimal drops a numeric's trailing fractional zeros, so equal values
// printed with different scales ("2", "2.0", "2.00") compare equal as text.
func trimDecimal(s string) string {
	if strings.IndexByte(s, '.') < 0 {
		return s
	}
	return strings.TrimSuffix(strings.TrimRight(s, "0"), ".")
}
