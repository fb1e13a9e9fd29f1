//go:build e2e

package e2e_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/repstream/repstream/sql/demo"
	"github.com/repstream/repstream/stream"
)

// latencyTarget is what the dashboard promises: a review's effect on screen
// within a second. The test reports the figures against it; it fails only
// past latencyGuard, so a slow CI machine does not make it flaky.
const (
	latencyTarget = time.Second
	latencyGuard  = 10 * time.Second
)

// TestDashboardShowsNewReview opens the dashboard, commits reviews for
// sellers one at a time and measures how long each takes from the INSERT to
// the row's bayes cell holding the value GET /v1/subjects/{subject} reports.
func TestDashboardShowsNewReview(t *testing.T) {
	e := newEnv(t)
	e.start()
	b := newBrowser(t)
	b.screenshotOnFailure()
	b.do(chromedp.Navigate(e.dashboardURL()))
	b.waitStatus("live", 30*time.Second)
	waitFor(t, 10*time.Second, func() (bool, string) {
		n := len(b.rows())
		return n > 0, fmt.Sprintf("%d rows", n)
	}, "the leaderboard's rows")
	if loc := mustEval[string](b, `location.href`); strings.Contains(loc, "token=") {
		t.Errorf("the token stays in the address bar: %s", loc)
	}

	// Record, in the page, when each row's bayes cell changes and to what.
	mustEval[bool](b, `(() => {
  window.e2eChanges = [];
  new MutationObserver((ms) => {
    const t = performance.timeOrigin + performance.now();
    for (const m of ms) {
      const el = m.target;
      if (!el.dataset || el.dataset.testid !== 'bayes') continue;
      const row = el.closest('[data-testid="row"]');
      if (row) window.e2eChanges.push({ subject: row.dataset.subject, value: el.dataset.value, t });
    }
  }).observe(document.getElementById('rows'), { subtree: true, attributes: true, attributeFilter: ['data-value'] });
  return true;
})()`)

	rows := b.rows()
	ctx := context.Background()
	var lat []time.Duration
	for i := 0; i < 5; i++ {
		subject := rows[(i*7)%len(rows)].Subject
		seller, err := strconv.ParseInt(strings.TrimPrefix(subject, "seller:"), 10, 64)
		if err != nil {
			t.Fatalf("row subject %q: %v", subject, err)
		}
		before, err := e.subject(subject)
		if err != nil {
			t.Fatal(err)
		}
		// One star pulls any score above 1 down; five push any below 5 up.
		rating := 1
		if before.Bayes < 3 {
			rating = 5
		}
		start := time.Now()
		_, err = e.pool.Exec(ctx, `INSERT INTO reviews (seller_id, product_id, author, rating, body)
			SELECT $1, id, 'e2e-test', $2, 'written by the browser end-to-end test' FROM products WHERE seller_id = $1 ORDER BY id LIMIT 1`,
			seller, rating)
		if err != nil {
			t.Fatal(err)
		}

		var after stream.State
		waitFor(t, latencyGuard, func() (bool, string) {
			s, err := e.subject(subject)
			if err != nil {
				return false, err.Error()
			}
			after = s
			return s.LSN > before.LSN, fmt.Sprintf("lsn %s, was %s", s.LSN, before.LSN)
		}, subject+"'s new state over HTTP")
		if after.Count != before.Count+1 || after.Bayes == before.Bayes {
			t.Fatalf("%s: %+v after one review, was %+v", subject, after, before)
		}

		type change struct {
			Subject string  `json:"subject"`
			Value   string  `json:"value"`
			T       float64 `json:"t"`
		}
		var shown float64
		waitFor(t, latencyGuard-time.Since(start), func() (bool, string) {
			cs := mustEval[[]change](b, `window.e2eChanges`)
			for _, c := range cs {
				if v, err := strconv.ParseFloat(c.Value, 64); err == nil && c.Subject == subject && v == after.Bayes {
					shown = c.T
					return true, ""
				}
			}
			return false, fmt.Sprintf("changes %v, want %s bayes %v", cs, subject, after.Bayes)
		}, subject+"'s bayes on the dashboard")
		d := time.Duration((shown - float64(start.UnixMicro())/1000) * float64(time.Millisecond))
		lat = append(lat, d)
		t.Logf("%s: %d★ review: bayes %.6f → %.6f (lsn %s) on screen %s after the INSERT",
			subject, rating, before.Bayes, after.Bayes, after.LSN, d.Round(time.Millisecond))

		// The rest of the row agrees with the API too.
		for _, r := range b.rows() {
			if r.Subject == subject && (r.Count != strconv.FormatInt(after.Count, 10) || !sameFloat(r.Mean, after.Mean)) {
				t.Errorf("%s row shows count %s mean %s; the API says %d and %v", subject, r.Count, r.Mean, after.Count, after.Mean)
			}
		}
		mustEval[bool](b, `(window.e2eChanges = [], true)`)
		time.Sleep(300 * time.Millisecond)
	}
	slices.Sort(lat)
	t.Logf("LATENCY INSERT → dashboard over %d reviews: min %s, median %s, max %s (target %s; the page subscribes with its default 500 ms throttle)",
		len(lat), lat[0].Round(time.Millisecond), lat[len(lat)/2].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond), latencyTarget)
	if lat[len(lat)/2] > latencyTarget {
		t.Logf("NOTE: the median latency %s misses the %s target", lat[len(lat)/2], latencyTarget)
	}
}

// TestDashboardSurvivesServerCrash kills the service with SIGKILL while the
// demo writer keeps writing, restarts it, and checks that the page, without
// a reload, reconnects by itself and ends in exactly the service's state:
// every leaderboard row's bayes, count and mean equal the HTTP API's, which
// equal a SQL recomputation over the reviews. It saves a screenshot of the
// dashboard as artifacts/dashboard.png.
func TestDashboardSurvivesServerCrash(t *testing.T) {
	e := newEnv(t)
	srv := e.start()
	b := newBrowser(t)
	b.screenshotOnFailure()
	b.do(chromedp.Navigate(e.dashboardURL()))
	b.waitStatus("live", 30*time.Second)
	mustEval[bool](b, `(window.e2eNoReload = true)`)

	// The marketplace keeps writing throughout, with a viral burst and the
	// story of a seller whose score drops (so the alerts have something).
	w := demo.NewWriter(e.pool, demo.WriterConfig{
		Rate: 40, Seed: uint64(time.Now().UnixNano()),
		ViralEvery: 4 * time.Second, ViralBurst: 25,
		Story: true, StoryLength: 12 * time.Second,
	})
	wctx, stopWriter := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var werr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		werr = w.Run(wctx)
	}()
	defer func() { stopWriter(); wg.Wait() }()

	time.Sleep(3 * time.Second)
	srv.kill()
	killed := time.Now()
	atKill := w.Stats().Transactions
	waitFor(t, 10*time.Second, func() (bool, string) {
		s := b.status()
		return s != "live", "status " + s
	}, "the dashboard to notice the service is gone")
	t.Logf("the page noticed the crash after %s (status %s)", time.Since(killed).Round(time.Millisecond), b.status())
	time.Sleep(3 * time.Second)
	during := w.Stats().Transactions - atKill

	e.start()
	back := time.Now()
	d := b.waitStatus("live", 60*time.Second)
	t.Logf("the service was down %s, the writer committed %d transactions meanwhile; the page was live again %s after the service was ready",
		back.Sub(killed).Round(time.Millisecond), during, d.Round(time.Millisecond))
	if during == 0 {
		t.Fatal("the writer wrote nothing while the service was down")
	}

	time.Sleep(4 * time.Second)
	stopWriter()
	wg.Wait()
	if werr != nil {
		t.Fatalf("writer: %v", werr)
	}
	st := w.Stats()
	t.Logf("writer: %+v", st)
	if st.Errors > 0 {
		t.Logf("writer: %d transactions failed and were retried", st.Errors)
	}

	// The service catches up with the database...
	ctx := context.Background()
	var api []stream.State
	waitFor(t, 60*time.Second, func() (bool, string) {
		truth, err := sqlTruth(ctx, e)
		if err != nil {
			return false, err.Error()
		}
		api, err = e.sellers()
		if err != nil {
			return false, err.Error()
		}
		diff := diffTruth(truth, api)
		return diff == "", diff
	}, "the API to equal the SQL recomputation")

	// ... and the page shows exactly what the service holds.
	waitFor(t, 15*time.Second, func() (bool, string) {
		diff := diffPage(b.rows(), api)
		return diff == "", diff
	}, "every row on the page to equal the API")
	if s := b.status(); s != "live" {
		t.Errorf("status %s at the end, want live", s)
	}
	if !mustEval[bool](b, `window.e2eNoReload === true`) {
		t.Error("the page was reloaded; it must reconnect by itself")
	}
	t.Logf("the page's %d rows equal GET /v1/subjects?prefix=seller:&order=bayes&limit=50", len(api))

	// The screenshot: the story's seller selected, its detail and chart shown.
	var storySeller int64
	if err := e.pool.QueryRow(ctx, `SELECT id FROM sellers WHERE handle = $1`, demo.DefaultStorySeller).Scan(&storySeller); err != nil {
		t.Fatal(err)
	}
	subject := fmt.Sprintf("seller:%d", storySeller)
	b.clickRow(subject)
	var note string
	waitFor(t, 10*time.Second, func() (bool, string) {
		note = mustEval[string](b, `document.querySelector('[data-testid="history-note"]').textContent`)
		shown := mustEval[string](b, `document.querySelector('[data-testid="detail"]').dataset.subject`)
		return shown == subject && note != "" && !strings.Contains(note, "loading"), "detail of " + shown + ", history note " + strconv.Quote(note)
	}, subject+"'s detail")
	if n := mustEval[int](b, `document.querySelectorAll('[data-testid="alert"]').length`); n == 0 {
		t.Errorf("no trust-score alert after the story's drop")
	}
	time.Sleep(1200 * time.Millisecond) // row flashes (900 ms) and the chart's redraw settle
	p, err := b.screenshot("dashboard.png")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", p)

	// The chart draws the subject's retained history: every delta the log
	// holds for it (the story alone made several).
	var logged int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM repstream.deltas WHERE subject = $1`, subject).Scan(&logged); err != nil {
		t.Logf("count the logged deltas: %v", err)
	}
	points := mustEval[string](b, `document.querySelector('[data-testid="chart"]').dataset.points || '0'`)
	if !strings.Contains(note, "retained history") {
		t.Errorf("%s's detail says %q; want its retained history (%d deltas in the log) on the chart, which has %s points", subject, note, logged, points)
	} else {
		t.Logf("%s's detail: %q, %s points on the chart", subject, note, points)
	}
}

// sqlTruth recomputes each seller's count and sum of published stars.
func sqlTruth(ctx context.Context, e *env) (map[string][2]int64, error) {
	rows, err := e.pool.Query(ctx, `SELECT 'seller:' || seller_id, count(*), sum(rating) FROM reviews WHERE status = 'published' GROUP BY seller_id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string][2]int64{}
	for rows.Next() {
		var s string
		var n, sum int64
		if err := rows.Scan(&s, &n, &sum); err != nil {
			return nil, err
		}
		out[s] = [2]int64{n, sum}
	}
	return out, rows.Err()
}

func diffTruth(truth map[string][2]int64, api []stream.State) string {
	var b strings.Builder
	seen := map[string]bool{}
	for _, s := range api {
		seen[s.Subject] = true
		want := truth[s.Subject]
		if s.Count != want[0] || s.Sum != stream.Micro(want[1]*stream.MicroUnit) {
			fmt.Fprintf(&b, "%s: API count %d sum %s, SQL %d %d; ", s.Subject, s.Count, s.Sum, want[0], want[1])
		}
	}
	for s, f := range truth {
		if !seen[s] && f[0] > 0 {
			fmt.Fprintf(&b, "%s: missing from the API (SQL count %d); ", s, f[0])
		}
	}
	return b.String()
}

func diffPage(rows []pageRow, api []stream.State) string {
	var b strings.Builder
	byS := map[string]pageRow{}
	for _, r := range rows {
		byS[r.Subject] = r
	}
	if len(rows) != len(api) {
		fmt.Fprintf(&b, "%d rows on the page, %d from the API; ", len(rows), len(api))
	}
	for _, s := range api {
		r, ok := byS[s.Subject]
		switch {
		case !ok:
			fmt.Fprintf(&b, "%s: not on the page; ", s.Subject)
		case !sameFloat(r.Bayes, s.Bayes) || r.Count != strconv.FormatInt(s.Count, 10) || !sameFloat(r.Mean, s.Mean):
			fmt.Fprintf(&b, "%s: page bayes %s count %s mean %s, API %v %d %v; ", s.Subject, r.Bayes, r.Count, r.Mean, s.Bayes, s.Count, s.Mean)
		}
	}
	return b.String()
}

// sameFloat compares a data-value (JavaScript's String(number)) with the
// number the API sent: both are the same float64, exactly.
func sameFloat(attr string, v float64) bool {
	f, err := strconv.ParseFloat(attr, 64)
	return err == nil && f == v
}
