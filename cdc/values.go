package cdc

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// outputSettings fix every setting a type's output function reads, on the
// walsender (where pgoutput prints values) and on the snapshot session
// alike: a value then has the same bytes in the load and in the stream, and
// a DBA changing a server, database or role default changes no subject and
// no key. Startup parameters outrank those defaults.
var outputSettings = [][2]string{
	{"client_encoding", "UTF8"},
	{"DateStyle", "ISO, MDY"},
	{"IntervalStyle", "postgres"},
	{"TimeZone", "UTC"},
	{"extra_float_digits", "1"},
	{"bytea_output", "hex"},
	{"lc_monetary", "C"},
}

// setOutputSettings puts outputSettings in cfg's startup parameters,
// replacing any spelling of the same names the URL set.
func setOutputSettings(cfg *pgconn.Config) {
	for _, s := range outputSettings {
		for k := range cfg.RuntimeParams {
			if strings.EqualFold(k, s[0]) {
				delete(cfg.RuntimeParams, k)
			}
		}
		cfg.RuntimeParams[s[0]] = s[1]
	}
}

// checkOutputSettings verifies, through the settings the server reports on
// its own, that it took outputSettings: a pooler that drops startup
// parameters would make the load and the stream disagree.
func checkOutputSettings(conn *pgconn.PgConn) error {
	for _, s := range outputSettings {
		got := conn.ParameterStatus(s[0])
		if got == "" { // not a reported setting
			continue
		}
		if got != s[1] {
			return fmt.Errorf("cdc: the server runs this session with %s = %q, not the %q that was asked for; connect to Postgres directly, not through a pooler that drops startup parameters", s[0], got, s[1])
		}
	}
	return nil
}

// NotAValueError means a literal is no value of a column: its type rejects
// it, or holds it only changed (a char(4) would cut "abcdef" to "abcd").
type NotAValueError struct {
	Column, Type, Reason string
}

func (e *NotAValueError) Error() string { return e.Column + " is " + e.Type + ", " + e.Reason }

// PrintAs returns literal as column of t prints it once stored there: the
// column's type parses it (a domain checks it too) and its output function
// prints it, so a configured value compares equal to the text the rows
// carry exactly when SQL's = would. Except for numeric (decimal is true),
// whose equal values print with their own scales ("2", "2.0"). conn must
// come from ConnectSnapshot, for its output settings.
func PrintAs(ctx context.Context, conn *pgx.Conn, t Table, column, literal string) (text string, decimal bool, err error) {
	var typed, bare string
	err = conn.QueryRow(ctx, `
SELECT format_type(a.atttypid, a.atttypmod), format('%I.%I', tn.nspname, ty.typname),
       coalesce(nullif(ty.typbasetype, 0), ty.oid) = 'pg_catalog.numeric'::regtype
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type ty ON ty.oid = a.atttypid JOIN pg_namespace tn ON tn.oid = ty.typnamespace
WHERE n.nspname = $1 AND c.relname = $2 AND a.attname = $3 AND a.attnum > 0 AND NOT a.attisdropped`,
		t.Schema, t.Name, column).Scan(&typed, &bare, &decimal)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, fmt.Errorf("cdc: %s has no column %q", t, column)
	}
	if err != nil {
		return "", false, fmt.Errorf("cdc: type of %s.%s: %w", t, column, err)
	}
	// An explicit cast to char(n), varchar(n) or numeric(p,s) cuts or rounds
	// silently; the value must survive it unchanged, compared with the type
	// without a modifier (bare: schema.typname, as "character" means char(1)).
	var out string
	var same *bool
	err = conn.QueryRow(ctx, `SELECT CAST($1::text AS `+typed+`), CAST($1::text AS `+typed+`) = CAST($1::text AS `+bare+`)`,
		pgx.QueryResultFormats{pgx.TextFormatCode, pgx.BinaryFormatCode}, literal).Scan(&out, &same)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42883" { // no = for the type: the cast alone
		err = conn.QueryRow(ctx, `SELECT CAST($1::text AS `+typed+`)`, pgx.QueryResultFormats{pgx.TextFormatCode}, literal).Scan(&out)
	}
	switch {
	case errors.As(err, &pgErr) && (pgErr.Code[:2] == "22" || pgErr.Code == "23514"): // data exception, domain check
		return "", false, &NotAValueError{column, typed, "and " + pgErr.Message}
	case err != nil:
		return "", false, fmt.Errorf("cdc: %q as %s.%s: %w", literal, t, column, err)
	case same != nil && !*same:
		return "", false, &NotAValueError{column, typed, fmt.Sprintf("which would hold %q as %q", literal, out)}
	}
	return out, decimal, nil
}
