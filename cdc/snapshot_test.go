package cdc_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/repstream/repstream/cdc"
	"github.com/repstream/repstream/cdc/localpg"
)

// zoo has a column of every type a source may use in a key, a subject
// template, a where or a score, and a composite primary key.
const zoo = `
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN stars AS int CHECK (VALUE BETWEEN 0 AND 5);
CREATE DOMAIN label AS text;
CREATE TABLE zoo (
  k_char char(6), k_int int,
  b bool, i2 int2, i4 int4, i8 int8, n numeric, n2 numeric(5,2), f4 float4, f8 float8,
  t text, vc varchar(10), c char(6), u uuid, ip inet, e mood, d_int stars, d_text label,
  dt date, ts timestamptz, iv interval, by bytea,
  PRIMARY KEY (k_char, k_int)
);
INSERT INTO zoo VALUES
  ('a1', 1, true, -32768, 2147483647, -9223372036854775808, 5, 5, 0.1, 0.1,
   'héllo', 'vc', 'ab', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '10.0.0.1/32', 'happy', 5, 'x',
   '2024-02-29', '2024-03-01 12:34:56.789+05:30', '1 day 02:03:04', '\x00ff'),
  ('a2 ', 2, false, 0, 0, 0, 1.50, 1.5, 1e-7, 1.0/3, '', '', '', '00000000-0000-0000-0000-000000000000', '::1', 'sad', 0, '',
   '0001-01-01 BC', '1999-12-31 23:59:59.999999-08', '-1 mon 3 days', ''),
  ('a3', 3, NULL, NULL, NULL, NULL, 'NaN', NULL, '-Infinity', 12345678.9, NULL, NULL, NULL, NULL, '192.168.0.0/16', NULL, NULL, NULL,
   'infinity', '-infinity', NULL, NULL),
  ('ä4', -4, true, 1, 1, 1, 123456789012345678901234567890.123456789, -0.01, 3.4e38, 2.2250738585072014e-308,
   'tab	and ''quote''', 'é', 'éé', 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A12', '2001:db8::/32', 'ok', 3, 'label',
   '2000-01-01', '2024-06-30 00:00:00+00', '0', '\x');
`

var zooCols = []string{"b", "i2", "i4", "i8", "n", "n2", "f4", "f8", "t", "vc", "c", "u", "ip", "e", "d_int", "d_text", "dt", "ts", "iv", "by"}

// TestSnapshotValuesMatchPgoutput: every value the snapshot load reads is
// byte for byte what pgoutput sends for the same row, for the key in a
// DELETE's old tuple and for every column in an UPDATE's new tuple, even
// when the database's defaults for the settings output functions read are
// unusual.
func TestSnapshotValuesMatchPgoutput(t *testing.T) {
	for _, tc := range []struct {
		name     string
		defaults string
	}{
		{"server defaults", ""},
		{"odd database defaults", `SET DateStyle = 'SQL, DMY'; SET TimeZone = 'America/St_Johns'; SET IntervalStyle = 'sql_standard'; SET extra_float_digits = 3; SET bytea_output = 'escape'`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, name := localpg.NewDatabase(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			conn := connect(t, url)
			exec(t, conn, zoo)
			for _, s := range strings.Split(tc.defaults, ";") {
				if s = strings.TrimSpace(s); s != "" {
					exec(t, conn, "ALTER DATABASE "+name+" "+s)
				}
			}
			exec(t, conn, "CREATE PUBLICATION "+name+" FOR TABLE zoo")

			rconn, err := cdc.ConnectReplication(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			defer rconn.Close(context.Background())
			created, err := cdc.CreateSlot(ctx, rconn, name)
			if err != nil {
				t.Fatal(err)
			}
			snapped := scanSnapshot(t, ctx, url, created.SnapshotName)
			if len(snapped) != 4 {
				t.Fatalf("snapshot has %d rows, want 4", len(snapped))
			}

			// The same rows, as pgoutput sends them.
			exec(t, conn, "UPDATE zoo SET k_int = k_int")
			exec(t, conn, "DELETE FROM zoo")
			out := make(chan cdc.Event, 64)
			rctx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			r := cdc.NewReader(rconn, cdc.ReaderConfig{Slot: name, Publication: name, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
			go func() { done <- r.Run(rctx, created.ConsistentPoint, out) }()
			defer func() {
				stop()
				<-done
			}()
			updated, deleted := map[string][]string{}, map[string]bool{}
			for len(updated) < len(snapped) || len(deleted) < len(snapped) {
				var ev cdc.Event
				select {
				case ev = <-out:
				case err := <-done:
					t.Fatalf("reader stopped: %v", err)
				case <-ctx.Done():
					t.Fatalf("timed out with %d updates and %d deletes", len(updated), len(deleted))
				}
				switch ev.Kind {
				case cdc.EventUpdate:
					key := texts(ev.Rel, ev.New, []string{"k_char", "k_int"})
					updated[strings.Join(key, "|")] = texts(ev.Rel, ev.New, zooCols)
				case cdc.EventDelete:
					if ev.OldKind != cdc.OldKey {
						t.Fatalf("delete old tuple kind %q, want K", ev.OldKind)
					}
					deleted[strings.Join(texts(ev.Rel, ev.Old, []string{"k_char", "k_int"}), "|")] = true
				}
			}
			for key, vals := range snapped {
				if !deleted[key] {
					t.Errorf("snapshot key %q: no DELETE has that key (deleted: %v)", key, deleted)
				}
				got, ok := updated[key]
				if !ok {
					t.Errorf("snapshot key %q: no UPDATE has that key", key)
					continue
				}
				for i, c := range zooCols {
					if vals[i] != got[i] {
						t.Errorf("row %q column %s: snapshot %q, pgoutput %q", key, c, vals[i], got[i])
					}
				}
			}
			// The settings are fixed, not the server's: a DBA changing them
			// must not change a subject or a key.
			a1 := snapped["a1    |1"]
			if a1 == nil {
				t.Fatalf("snapshot has no key \"a1    |1\" (char(6) padding kept): %v", keys(snapped))
			}
			for i, want := range map[string]string{"b": "t", "c": "ab    ", "ip": "10.0.0.1", "f4": "0.1", "f8": "0.1",
				"dt": "2024-02-29", "ts": "2024-03-01 07:04:56.789+00", "iv": "1 day 02:03:04", "by": `\x00ff`} {
				if got := a1[indexOf(zooCols, i)]; got != want {
					t.Errorf("a1.%s = %q, want %q", i, got, want)
				}
			}
		})
	}
}

func scanSnapshot(t *testing.T, ctx context.Context, url, snapshot string) map[string][]string {
	t.Helper()
	sconn, err := cdc.ConnectSnapshot(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer sconn.Close(context.Background())
	snap, err := cdc.BeginSnapshot(ctx, sconn, snapshot)
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close(context.Background()) //nolint:errcheck
	got := map[string][]string{}
	err = snap.Scan(ctx, cdc.Table{Schema: "public", Name: "zoo", Columns: zooCols}, []string{"k_char", "k_int"}, "", func(key, vals []*string) error {
		got[strings.Join(deref(key), "|")] = deref(vals)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// texts are the named columns of tup as strings; NULL is "<NULL>".
func texts(rel *cdc.Relation, tup cdc.Tuple, cols []string) []string {
	out := make([]string, len(cols))
	for i, c := range cols {
		j := rel.ColumnIndex(c)
		switch {
		case j < 0 || j >= len(tup):
			out[i] = "<absent>"
		case tup[j].Kind == cdc.ValueNull:
			out[i] = "<NULL>"
		case tup[j].Kind == cdc.ValueText:
			out[i] = string(tup[j].Data)
		default:
			out[i] = fmt.Sprintf("<kind %c>", tup[j].Kind)
		}
	}
	return out
}

func deref(vals []*string) []string {
	out := make([]string, len(vals))
	for i, v := range vals {
		if v == nil {
			out[i] = "<NULL>"
		} else {
			out[i] = *v
		}
	}
	return out
}

func keys(m map[string][]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func indexOf(s []string, v string) int {
	for i := range s {
		if s[i] == v {
			return i
		}
	}
	return -1
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func exec(t *testing.T, conn *pgx.Conn, sql string) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}
