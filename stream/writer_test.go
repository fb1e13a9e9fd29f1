package stream

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/repstream/repstream/cdc/localpg"
	"github.com/repstream/repstream/sql/migrations"
)

// storeWriter is a writer on a fresh, migrated database of the test
// cluster, closed when the test ends.
func storeWriter(tb testing.TB) *writer {
	tb.Helper()
	url, _ := localpg.NewDatabase(tb)
	if err := migrations.Up(url); err != nil {
		tb.Fatal(err)
	}
	ctx := context.Background()
	w, err := newWriter(ctx, url, false)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { w.close(ctx) })
	return w
}

// The group write sends text[] and bigint[] values as array literals; every
// value must come back from Postgres exactly as it went in.
func TestArrayLiteralsRoundTrip(t *testing.T) {
	url, _ := localpg.NewDatabase(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	s := func(v string) *string { return &v }
	cases := [][]*string{
		{},
		{nil},
		{s("")},
		{s("NULL"), nil, s("null")},
		{s(`a "quoted" word`), s(`back\slash`), s(`\"`), s(`trailing\`)},
		{s("{braces}"), s("a,b"), s(" spaced "), s("ünïcødé ★"), s("line\nbreak\ttab")},
	}
	for _, vals := range cases {
		lit := string(appendTextArray(nil, vals))
		var got []*string
		if err := conn.QueryRow(ctx, `SELECT $1::text::text[]`, lit).Scan(&got); err != nil {
			t.Fatalf("%s: %v", lit, err)
		}
		if !slices.EqualFunc(got, vals, func(a, b *string) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }) {
			t.Errorf("%s came back as %q", lit, deref(got))
		}
	}
	for _, h := range [][]int64{nil, {}, {0}, {1, -2, 9223372036854775807, -9223372036854775808}} {
		var got []int64
		if err := conn.QueryRow(ctx, `SELECT $1::text::bigint[]`, int64ArrayLiteral(h)).Scan(&got); err != nil {
			t.Fatalf("%v: %v", h, err)
		}
		if (h == nil) != (got == nil) || !slices.Equal(got, h) {
			t.Errorf("%v came back as %v", h, got)
		}
	}
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

// A group whose write fails (here: a delta already in the log) leaves
// nothing behind, and the writer's connection takes the next group: a
// statement failing inside the pipelined BEGIN … COMMIT must not leave the
// session in an aborted transaction. Both paths: small groups (one batch)
// and big ones (COPY first).
func TestFailedGroupLeavesNothingAndWriterGoesOn(t *testing.T) {
	ctx := context.Background()
	w := storeWriter(t)
	at := time.Now()
	group := func(first LSN, n int, key string) (map[rowKey]shadowRow, []State, []Txn) {
		v := "4"
		var st State
		txns := make([]Txn, n)
		for i := range txns {
			d := Fold(st, "seller:1", 1, 4_000000, nil, first+LSN(i), at, Prior{Mean: 3.5, Weight: 10})
			st = d.After
			txns[i] = Txn{LSN: d.LSN, CommitAt: at, Deltas: []Delta{d}}
		}
		return map[rowKey]shadowRow{{0, key}: {vals: []*string{&v}}}, []State{st}, txns
	}
	count := func(q string) (n int64) {
		if err := w.conn.QueryRow(ctx, q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for _, n := range []int{1, copyAbove + 1} {
		base := LSN(1_000_000 * n)
		dirty, states, txns := group(base, n, fmt.Sprint("ok", n))
		if _, err := w.commitGroup(ctx, dirty, states, txns, base+LSN(n)); err != nil {
			t.Fatal(err)
		}
		dirty, states, _ = group(base, n, fmt.Sprint("lost", n))
		if _, err := w.commitGroup(ctx, dirty, states, txns, base+LSN(2*n)); err == nil {
			t.Fatalf("%d deltas: writing logged deltas again did not fail", n)
		}
		if got := count(fmt.Sprintf(`SELECT count(*) FROM repstream.rows WHERE key = 'lost%d'`, n)); got != 0 {
			t.Errorf("%d deltas: the failed group left its shadow row", n)
		}
		dirty, states, txns = group(base+LSN(3*n), n, fmt.Sprint("next", n))
		if _, err := w.commitGroup(ctx, dirty, states, txns, base+LSN(4*n)); err != nil {
			t.Fatalf("%d deltas: the group after a failed one: %v", n, err)
		}
		if got := count(fmt.Sprintf(`SELECT count(*) FROM repstream.rows WHERE key IN ('ok%d', 'next%d')`, n, n)); got != 2 {
			t.Errorf("%d deltas: %d of the 2 good groups' shadow rows stored", n, got)
		}
	}
}

// TestWriterCommitsSynchronously: in the default mode the slot is confirmed
// as soon as a store commit returns, so the writer's commits wait for their
// fsync even where the server, database or role turned synchronous_commit
// off; a stronger remote_* setting is kept, and async mode turns it off.
func TestWriterCommitsSynchronously(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	ctx := context.Background()
	if err := migrations.Up(url); err != nil {
		t.Fatal(err)
	}
	admin, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	for _, c := range []struct {
		database string
		async    bool
		want     string
	}{
		{"off", false, "on"},
		{"local", false, "local"},
		{"remote_apply", false, "remote_apply"},
		{"on", true, "off"},
	} {
		if _, err := admin.Exec(ctx, fmt.Sprintf(`ALTER DATABASE %q SET synchronous_commit = %s`, name, c.database)); err != nil {
			t.Fatal(err)
		}
		w, err := newWriter(ctx, url, c.async)
		if err != nil {
			t.Fatal(err)
		}
		var got string
		err = w.conn.QueryRow(ctx, `SHOW synchronous_commit`).Scan(&got)
		w.close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("database synchronous_commit=%s, async=%v: the writer runs with %s, want %s", c.database, c.async, got, c.want)
		}
	}
}

// TestShutdownNeverCommitsAHalfAppliedTransaction: on the way out in async
// mode the store is flushed so the slot can be confirmed; a transaction the
// writer left open holds part of a source transaction (a spill or a
// TRUNCATE) and must be rolled back, not committed by that flush.
func TestShutdownNeverCommitsAHalfAppliedTransaction(t *testing.T) {
	url, _ := localpg.NewDatabase(t)
	ctx := context.Background()
	if err := migrations.Up(url); err != nil {
		t.Fatal(err)
	}
	w, err := newWriter(ctx, url, true)
	if err != nil {
		t.Fatal(err)
	}
	defer w.close(ctx)
	if _, err := w.conn.Exec(ctx, `INSERT INTO repstream.meta (epoch, system_id, timeline, slot, sources_hash, checkpoint_lsn, log_from_lsn) VALUES ('e', 's', 1, 'x', 'h', '0/10', '0/10')`); err != nil {
		t.Fatal(err)
	}
	// A spill of a half-read source transaction.
	if err := w.begin(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.writeRows(ctx, map[rowKey]shadowRow{{1, "k"}: {vals: []*string{nil}}}); err != nil {
		t.Fatal(err)
	}
	var confirmed LSN
	d := &durable{confirm: func(l LSN) { confirmed = l }, wake: make(chan struct{}, 1)}
	d.add(0x20, 1) // a group committed before, waiting for its flush
	e := &Engine{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	e.flushForShutdown(w, d)
	if confirmed != 0x20 {
		t.Errorf("confirmed %s after the flush, want 0/20", confirmed)
	}
	var n int
	if err := w.conn.QueryRow(ctx, `SELECT count(*) FROM repstream.rows`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("the shutdown flush committed %d shadow rows of a half-applied source transaction", n)
	}
}
