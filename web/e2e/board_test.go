//go:build e2e

package e2e_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/repstream/repstream/stream"
)

// TestDashboardTopPanel checks the "Top 10" panel, a leaderboard the server
// ranks: it shows the same subjects, in the same order, as GET
// /v1/subjects?prefix=seller:&order=<order>&limit=10, before and after a
// review moves the leader, and after the order is switched.
func TestDashboardTopPanel(t *testing.T) {
	e := newEnv(t)
	e.start()
	b := newBrowser(t)
	b.screenshotOnFailure()
	b.do(chromedp.Navigate(e.dashboardURL()))
	b.waitStatus("live", 30*time.Second)

	top := func(order string) []stream.State {
		var list struct {
			Items []stream.State `json:"items"`
		}
		if _, err := e.get("/v1/subjects?prefix=seller:&order="+order+"&limit=10", &list); err != nil {
			t.Fatal(err)
		}
		return list.Items
	}
	same := func(order string) {
		t.Helper()
		waitFor(t, 15*time.Second, func() (bool, string) {
			shown := mustEval[[]string](b, `[...document.querySelectorAll('[data-testid="top-board"] li')].map((li) => li.dataset.rank + ' ' + li.dataset.subject)`)
			var want []string
			for i, s := range top(order) {
				want = append(want, strconv.Itoa(i+1)+" "+s.Subject)
			}
			return len(want) > 0 && strings.Join(shown, ",") == strings.Join(want, ","), fmt.Sprintf("panel %v; HTTP %v", shown, want)
		}, "the top panel ranked by "+order)
	}
	same("bayes")
	if lsn := mustEval[string](b, `document.querySelector('[data-testid="top-board"]').dataset.lsn`); lsn == "" {
		t.Fatal("the top panel has no lsn")
	}

	// Sink the leader with one-star reviews: the panel follows.
	leader := top("bayes")[0].Subject
	seller, err := strconv.ParseInt(strings.TrimPrefix(leader, "seller:"), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if _, err := e.pool.Exec(context.Background(), `INSERT INTO reviews (seller_id, product_id, author, rating, body)
			SELECT $1, id, 'e2e-test', 1, 'sinks the leader' FROM products WHERE seller_id = $1 ORDER BY id LIMIT 1`, seller); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 15*time.Second, func() (bool, string) {
		first := top("bayes")[0].Subject
		return first != leader, "leader still " + first
	}, "a new leader over HTTP")
	same("bayes")

	mustEval[bool](b, `(() => { const s = document.getElementById('top-order'); s.value = 'count'; return s.dispatchEvent(new Event('change')); })()`)
	same("count")
}
