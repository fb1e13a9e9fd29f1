package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/repstream/repstream/stream/streamtest"
)

// bigTxn measures the service's peak memory while it applies one source
// transaction of 1M rows, then of 5M, for each shape: inserts, updates,
// a mix, deletes. Each transaction meets a service started just before it,
// so its peak RSS (VmHWM) is that transaction's.
func (e *env) bigTxn(ctx context.Context) error {
	sizes := []int{1_000_000, 5_000_000}
	if e.o.Quick {
		sizes = []int{200_000, 1_000_000}
	}
	type shape struct{ name, sql string }
	// $1 is the size, $2 (if used) the greatest id before the size's
	// inserts: the shapes after the insert work on the rows it added.
	shapes := []shape{
		{"inserts", `INSERT INTO reviews (seller_id, rating, status) SELECT i % 10000, 1 + i % 5, 'published' FROM generate_series(1, $1::int) i`},
		{"updates", `UPDATE reviews SET rating = 6 - rating WHERE id > $2 AND id <= $2 + $1`},
		{"mixed (¼ deletes, ¼ updates, ½ inserts)", `WITH d AS (DELETE FROM reviews WHERE id > $2 AND id % 4 = 0),
u AS (UPDATE reviews SET seller_id = seller_id + 1 WHERE id > $2 AND id % 4 = 1)
INSERT INTO reviews (seller_id, rating, status) SELECT i % 10000, 1 + i % 5, 'published' FROM generate_series(1, $1::int / 2) i`},
		{"deletes", `DELETE FROM reviews WHERE id IN (SELECT id FROM reviews WHERE id > $2 ORDER BY id LIMIT $1)`},
	}
	peaks := map[string]int64{} // KiB, by shape, of the first size
	for si, n := range sizes {
		var mark int64
		if err := e.pool.QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM reviews`).Scan(&mark); err != nil {
			return err
		}
		for _, s := range shapes {
			m, err := e.bigTxnOne(ctx, s.name, s.sql, n, mark)
			if err != nil {
				return fmt.Errorf("%d-row %s: %w", n, s.name, err)
			}
			name := fmt.Sprintf("one source transaction of %s rows, %s: service peak RSS", millions(n), s.name)
			res := fmt.Sprintf("%.0f MB (VmHWM; Go heap + stacks peak %.0f MB); applied in %.1f s (%.0f changes/s), %.1f s of service CPU",
				mb(m.peakKB), mb(int64(m.goPeakKB)), m.apply.Seconds(), float64(n)/m.apply.Seconds(), m.cpu.Seconds())
			if si == 0 {
				peaks[s.name] = m.peakKB
				ok := mb(m.peakKB) <= 150
				e.add(row{Measurement: name, Baseline: fmt.Sprintf("idle service %.0f MB", mb(m.idleKB)), Result: res,
					Ratio: fmt.Sprintf("%.2f× target", mb(m.peakKB)/150), Target: "≤ 150 MB", Verdict: verdict(ok)})
				continue
			}
			small := peaks[s.name]
			ratio := float64(m.peakKB) / float64(small)
			// Two runs of the same 1M-row transaction peaked 10 MB apart
			// (105 and 115 MB: when the collector runs and what the runtime
			// has not yet returned to the kernel): "no higher" allows that.
			e.add(row{Measurement: name, Baseline: fmt.Sprintf("%s rows: %.0f MB", millions(sizes[0]), mb(small)), Result: res,
				Ratio: fmt.Sprintf("%.2f", ratio), Target: fmt.Sprintf("no higher than the %s-row peak (within the 10%% run-to-run noise)", millions(sizes[0])),
				Verdict: verdict(ratio <= 1.10)})
		}
	}
	return nil
}

type bigTxnResult struct {
	idleKB, peakKB int64
	goPeakKB       float64
	apply          time.Duration
	cpu            time.Duration // the service's CPU time while applying
}

// bigTxnOne restarts the service, commits one transaction and waits until
// the service has applied it; the state must then equal the SQL truth.
func (e *env) bigTxnOne(ctx context.Context, shape, sql string, n int, mark int64) (bigTxnResult, error) {
	var r bigTxnResult
	if err := e.stopService(); err != nil {
		return r, err
	}
	if err := e.ensureService(ctx, "bigtxn"); err != nil {
		return r, err
	}
	time.Sleep(time.Second)
	var err error
	if r.idleKB, err = e.svc.rssKB(); err != nil {
		return r, err
	}
	// The Go heap is sampled from /metrics while the transaction is applied.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if kb, err := e.goMemKB(); err == nil {
				r.goPeakKB = max(r.goPeakKB, kb)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	args := []any{n}
	if strings.Contains(sql, "$2") {
		args = append(args, mark)
	}
	cpu0, err := cpuTime(e.svc.pid())
	if err != nil {
		close(stop)
		wg.Wait()
		return r, err
	}
	t := time.Now()
	tag, err := e.pool.Exec(ctx, sql, args...)
	if err != nil {
		close(stop)
		wg.Wait()
		return r, err
	}
	committed := time.Now()
	err = e.caughtUp(ctx)
	r.apply = time.Since(committed)
	close(stop)
	wg.Wait()
	if err != nil {
		return r, err
	}
	if r.peakKB, err = peakRSS(e.svc.pid()); err != nil {
		return r, err
	}
	cpu1, err := cpuTime(e.svc.pid())
	if err != nil {
		return r, err
	}
	r.cpu = cpu1 - cpu0
	e.logf("  %d-row %s: %s in %.1f s; applied %.1f s after commit, %.1f s of service CPU; RSS idle %.0f MB, peak %.0f MB; Go heap + stacks peak %.0f MB",
		n, shape, tag, committed.Sub(t).Seconds(), r.apply.Seconds(), r.cpu.Seconds(), mb(r.idleKB), mb(r.peakKB), mb(int64(r.goPeakKB)))
	c, err := e.conn(ctx)
	if err != nil {
		return r, err
	}
	defer c.Close(ctx)
	truth, err := streamtest.Truth(ctx, c)
	if err != nil {
		return r, err
	}
	derived, err := streamtest.Derived(ctx, c)
	if err != nil {
		return r, err
	}
	if d := streamtest.Diff(truth, derived); d != "" {
		return r, fmt.Errorf("the derived state differs from the SQL recomputation: %s", d)
	}
	return r, nil
}

// peakRSS reads a process's high-water resident set size (VmHWM), in KiB.
func peakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
			return strconv.ParseInt(f[1], 10, 64)
		}
	}
	return 0, fmt.Errorf("bench: no VmHWM for pid %d", pid)
}

// cpuTime reads a process's user and system CPU time.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command (which may hold spaces) start at state (3):
	// utime and stime are fields 14 and 15, in clock ticks (100 a second).
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("bench: short /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bench: /proc/%d/stat: %q %q", pid, f[11], f[12])
	}
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

// mb converts KiB to MB (10^6 bytes), the unit of the memory targets.
func mb(kb int64) float64 { return float64(kb) * 1024 / 1e6 }

func millions(n int) string {
	if n%1_000_000 == 0 {
		return fmt.Sprintf("%dM", n/1_000_000)
	}
	return fmt.Sprintf("%dk", n/1000)
}
