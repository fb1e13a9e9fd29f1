package stream_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/repstream/repstream/cdc/localpg"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/streamtest"
)

// TestPruneRaisesLogStart: pruning deletes deltas past retention and raises
// the log's start to the newest pruned LSN, so older cursors reset instead
// of silently missing deltas; later deltas stay readable.
func TestPruneRaisesLogStart(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	ctx := context.Background()
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, streamtest.Schema)
	e, stop := startEngine(t, url, name, &recorder{})
	defer stop()
	for i := 0; i < 10; i++ {
		streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating) VALUES (1, 4)`)
	}
	streamtest.WaitConverged(t, conn, 20*time.Second)
	var all []stream.LSN
	rows, err := conn.Query(ctx, `SELECT lsn::text FROM repstream.deltas WHERE subject = 'seller:1' ORDER BY lsn`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		l, _ := stream.ParseLSN(s)
		all = append(all, l)
	}
	if len(all) != 10 {
		t.Fatalf("%d deltas for seller:1, want 10", len(all))
	}
	cut := all[5]
	streamtest.Exec(t, conn, `UPDATE repstream.deltas SET recorded_at = now() - interval '10 days' WHERE lsn <= $1::text::pg_lsn`, cut.String())
	n, err := e.Store().Prune(ctx, time.Now().Add(-7*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if n != 6 {
		t.Fatalf("pruned %d deltas, want 6", n)
	}
	m, err := e.Store().Meta(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m.LogFrom != cut {
		t.Fatalf("log starts after %s, want %s", m.LogFrom, cut)
	}
	left, err := e.Store().Deltas(ctx, stream.Selector{Subjects: []string{"seller:1"}}, m.LogFrom, m.Checkpoint, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 4 || left[0].LSN != all[6] || left[0].Version != 7 {
		t.Fatalf("after pruning: %d deltas starting %+v, want 4 starting at %s v7", len(left), left, all[6])
	}
	// A cursor below the log's start reads ErrPruned, not the deltas left.
	for _, sel := range []stream.Selector{{Subjects: []string{"seller:1"}}, {Prefix: "seller:"}} {
		if ds, err := e.Store().Deltas(ctx, sel, all[2], m.Checkpoint, 3); !errors.Is(err, stream.ErrPruned) {
			t.Fatalf("%+v from a pruned cursor: %d deltas, %v; want ErrPruned", sel, len(ds), err)
		}
	}
}

// TestDeltasLimitKeepsTransactionsWhole: a page limit that falls inside a
// transaction is widened to its end, so a page never splits one.
func TestDeltasLimitKeepsTransactionsWhole(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	ctx := context.Background()
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, streamtest.Schema)
	e, stop := startEngine(t, url, name, &recorder{})
	defer stop()
	streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating) VALUES (1, 5), (2, 4), (3, 3)`)
	streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating) VALUES (1, 1)`)
	streamtest.WaitConverged(t, conn, 20*time.Second)
	m, err := e.Store().Meta(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sel := stream.Selector{Prefix: "seller:"}
	page, err := e.Store().Deltas(ctx, sel, m.LogFrom, m.Checkpoint, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(page) != 3 || page[0].LSN != page[2].LSN {
		t.Fatalf("limit 1 returned %d deltas (%+v); want the whole first transaction of 3", len(page), page)
	}
	rest, err := e.Store().Deltas(ctx, sel, page[0].LSN, m.Checkpoint, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(rest) != 1 || rest[0].Subject != "seller:1" || rest[0].Version != 2 {
		t.Fatalf("second page %+v; want seller:1 v2 alone", rest)
	}

	// Subject lists take their own query paths (one subject; several, named
	// twice): the same pages, in (lsn, subject) order, each delta once.
	for _, subjects := range [][]string{{"seller:1"}, {"seller:3", "seller:1", "seller:3"}} {
		var got []string
		since := m.LogFrom
		for {
			page, err := e.Store().Deltas(ctx, stream.Selector{Subjects: subjects}, since, m.Checkpoint, 1)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			for _, d := range page {
				got = append(got, fmt.Sprintf("%s v%d", d.Subject, d.Version))
			}
			since = page[len(page)-1].LSN
		}
		want := "seller:1 v1, seller:1 v2"
		if len(subjects) > 1 {
			want = "seller:1 v1, seller:3 v1, seller:1 v2"
		}
		if g := strings.Join(got, ", "); g != want {
			t.Errorf("subjects %v, pages of 1: %s; want %s", subjects, g, want)
		}
	}

	// States page by subject, as snapshots read them.
	var pages []string
	after := ""
	for {
		page, head, err := e.Store().StatesAfter(ctx, sel, after, 2)
		if err != nil {
			t.Fatal(err)
		}
		if head != m.Checkpoint {
			t.Fatalf("page head %s, want %s", head, m.Checkpoint)
		}
		if len(page) == 0 {
			break
		}
		var names []string
		for _, st := range page {
			names = append(names, st.Subject)
		}
		pages = append(pages, strings.Join(names, " "))
		after = page[len(page)-1].Subject
	}
	if g := strings.Join(pages, " | "); g != "seller:1 seller:2 | seller:3" {
		t.Errorf("state pages of 2: %s", g)
	}
}
