package bench

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/repstream/repstream/stream"
)

// ingest measures Postgres's own maximum single-row INSERT rate with the
// service stopped, then runs the same load with the service on and samples
// the lag.
func (e *env) ingest(ctx context.Context) error {
	clients := []int{2, 4, 8}
	d := 12 * time.Second
	if e.o.Quick {
		clients, d = []int{4}, 8*time.Second
	}
	if err := e.stopService(); err != nil {
		return err
	}
	best, bestC := 0.0, 0
	for _, c := range clients {
		var tps []float64
		runs := e.runs
		if len(clients) > 1 {
			runs = 1
		}
		for r := 0; r < runs; r++ {
			t, err := e.pgbenchInsert(ctx, c, d)
			if err != nil {
				return err
			}
			tps = append(tps, t)
		}
		m := median(tps)
		e.logf("  Postgres alone, %d clients: %.0f tx/s", c, m)
		if m > best {
			best, bestC = m, c
		}
	}
	if len(clients) > 1 { // repeat the best client count for a median
		tps := []float64{best}
		for r := 1; r < e.runs; r++ {
			t, err := e.pgbenchInsert(ctx, bestC, d)
			if err != nil {
				return err
			}
			tps = append(tps, t)
		}
		best = median(tps)
	}
	if err := e.ensureService(ctx, "ingest"); err != nil { // drains what pgbench wrote
		return err
	}
	var withTPS, p99s, maxs, catchups []float64
	for r := 0; r < e.runs; r++ {
		lags, tps, catchup, err := e.ingestRun(ctx, bestC, d)
		if err != nil {
			return err
		}
		sort.Float64s(lags)
		p99, mx := quantileOf(lags, 0.99), lags[len(lags)-1]
		e.logf("  run %d: with repstream %.0f tx/s; lag p50 %.0f ms, p99 %.0f ms, max %.0f ms; caught up %.0f ms after the load stopped",
			r+1, tps, quantileOf(lags, 0.5)*1000, p99*1000, mx*1000, catchup*1000)
		withTPS, p99s, maxs, catchups = append(withTPS, tps), append(p99s, p99), append(maxs, mx), append(catchups, catchup)
	}
	wt, mx := median(withTPS), median(maxs)
	ok := mx < 1
	e.add(row{Measurement: fmt.Sprintf("sustained ingest, single-row tx, %d pgbench clients", bestC),
		Baseline: fmt.Sprintf("Postgres max %.0f tx/s (service stopped)", best),
		Result:   fmt.Sprintf("%.0f tx/s offered with the service on; lag p99 %.0f ms, max %.0f ms; caught up %.0f ms after", wt, median(p99s)*1000, mx*1000, median(catchups)*1000),
		Ratio:    fmt.Sprintf("%.2f of max tx/s", wt/best), Target: "keeps up: lag < 1 s",
		Verdict: verdict(ok) + fmt.Sprintf(" (max lag %.2f s)", mx)})
	return nil
}

// ingestRun runs pgbench while sampling the lag every 50 ms; it returns
// the lag samples in seconds, pgbench's tps and the catch-up time after.
func (e *env) ingestRun(ctx context.Context, clients int, d time.Duration) (lags []float64, tps, catchup float64, err error) {
	type sample struct {
		t   time.Time
		wal stream.LSN
	}
	var samples []sample
	done := make(chan struct{})
	var benchErr error
	go func() {
		defer close(done)
		tps, benchErr = e.pgbenchInsert(ctx, clients, d)
	}()
	c, err := e.conn(ctx)
	if err != nil {
		return nil, 0, 0, err
	}
	defer c.Close(ctx)
	poll := func() (stream.LSN, stream.LSN, error) {
		var w, cp string
		if err := c.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text, (SELECT checkpoint_lsn::text FROM repstream.meta)`).Scan(&w, &cp); err != nil {
			return 0, 0, err
		}
		wl, _ := stream.ParseLSN(w)
		cl, _ := stream.ParseLSN(cp)
		return wl, cl, nil
	}
	lagAt := func(now time.Time, cp stream.LSN) float64 {
		// Everything written before the last sample whose WAL position the
		// checkpoint covers has been applied: the lag is at most now − then.
		i := sort.Search(len(samples), func(i int) bool { return samples[i].wal > cp })
		if i == 0 {
			return now.Sub(samples[0].t).Seconds()
		}
		if i == len(samples) {
			return 0
		}
		return now.Sub(samples[i].t).Seconds()
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	running := true
	for running {
		select {
		case <-done:
			running = false
		case <-tick.C:
		}
		now := time.Now()
		w, cp, err := poll()
		if err != nil {
			return nil, 0, 0, err
		}
		samples = append(samples, sample{now, w})
		lags = append(lags, lagAt(now, cp))
	}
	if benchErr != nil {
		return nil, 0, 0, benchErr
	}
	// Catch-up: a marker transaction committed now is applied once
	// everything before it is.
	stop := time.Now()
	v0, err := e.version(ctx, markerSubject)
	if err != nil {
		return nil, 0, 0, err
	}
	if _, err := c.Exec(ctx, `INSERT INTO reviews (seller_id, rating, status) VALUES (999999, 5, 'published')`); err != nil {
		return nil, 0, 0, err
	}
	if err := e.waitVersion(ctx, markerSubject, v0+1, 5*time.Millisecond, 5*time.Minute); err != nil {
		return nil, 0, 0, err
	}
	return lags, tps, time.Since(stop).Seconds(), nil
}

func quantileOf(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
