package cdc

import (
	"fmt"
	"strings"

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
