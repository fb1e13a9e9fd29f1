package bench

import (
	"context"
	"fmt"
	"os"
	"time"
)

const markerSubject = "seller:999999"

// drain measures backlog drain against pg_recvlogical on an identical
// backlog, for single-row transactions and for 1,000-row transactions.
func (e *env) drain(ctx context.Context) error {
	n1, nBig := 200000, 500000
	if e.o.Quick {
		n1, nBig = 40000, 100000
	}
	if err := e.drainOne(ctx, n1, 1); err != nil {
		return err
	}
	return e.drainOne(ctx, nBig, 1000)
}

func (e *env) drainOne(ctx context.Context, rows, perTx int) error {
	var raw, svc, svcFromConnect []float64
	for r := 0; r < e.runs; r++ {
		if err := e.settleSlot(ctx); err != nil {
			return err
		}
		if err := e.stopService(); err != nil {
			return err
		}
		const slot = "bench_raw"
		e.dropSlot(ctx, slot)
		if err := e.createSlot(ctx, slot); err != nil {
			return err
		}
		v0, err := e.version(ctx, markerSubject)
		if err != nil {
			return err
		}
		t := time.Now()
		if err := e.backlog(ctx, rows-1, perTx); err != nil {
			return err
		}
		// The last transaction marks the end for the service.
		if _, err := e.pool.Exec(ctx, `INSERT INTO reviews (seller_id, rating, status) VALUES (999999, 5, 'published')`); err != nil {
			return err
		}
		end, err := e.walLSN(ctx)
		if err != nil {
			return err
		}
		e.logf("  run %d: backlog of %d rows (%d per tx) written in %s", r+1, rows, perTx, time.Since(t).Round(time.Millisecond))

		devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		cmd := e.recvlogical(ctx, slot, end)
		cmd.Stdout = devnull
		cmd.Stderr = e.svcLog
		t = time.Now()
		err = cmd.Run()
		rawTook := time.Since(t)
		devnull.Close()
		if err != nil {
			return fmt.Errorf("pg_recvlogical: %w", err)
		}
		e.dropSlot(ctx, slot)

		e.svcTag = fmt.Sprintf("drain-%d-%d", perTx, r)
		t = time.Now()
		s, err := e.startService()
		if err != nil {
			return err
		}
		e.svc = s
		if err := e.waitVersion(ctx, markerSubject, v0+1, 5*time.Millisecond, 10*time.Minute); err != nil {
			return err
		}
		svcTook := time.Since(t)
		if sum, cnt, err := e.metric("repstream_store_commit_seconds"); err == nil && cnt > 0 {
			e.logf("  run %d: service wrote %.0f groups (%.0f changes each) in %.2f s of store write+commit (%.0f%% of the drain)",
				r+1, cnt, float64(rows)/cnt, sum, 100*sum/svcTook.Seconds())
		}
		if err := s.waitReady(ctx, time.Minute); err != nil {
			return err
		}
		raw = append(raw, float64(rows)/rawTook.Seconds())
		svc = append(svc, float64(rows)/svcTook.Seconds())
		_ = svcFromConnect
		e.logf("  run %d: pg_recvlogical %s (%.0f rows/s), repstream %s (%.0f rows/s)", r+1,
			rawTook.Round(time.Millisecond), raw[r], svcTook.Round(time.Millisecond), svc[r])
	}
	mr, ms := median(raw), median(svc)
	ratio := ms / mr
	name := fmt.Sprintf("backlog drain, %dk single-row tx", rows/1000)
	if perTx > 1 {
		name = fmt.Sprintf("backlog drain, %dk rows in %d-row tx", rows/1000, perTx)
	}
	target := "≥ 0.5 × raw and ≥ 20,000 changes/s"
	ok := ratio >= 0.5 && ms >= 20000
	e.add(row{Measurement: name, Baseline: fmt.Sprintf("pg_recvlogical %.0f rows/s", mr), Result: fmt.Sprintf("%.0f changes/s", ms),
		Ratio: fmt.Sprintf("%.2f", ratio), Target: target, Verdict: verdict(ok) + margin(ok, ratio/0.5, ms/20000)})
	return nil
}

// margin says by how much a two-part target was met or missed.
func margin(ok bool, a, b float64) string {
	m := min(a, b)
	if ok {
		return fmt.Sprintf(" (by %.1f×)", m)
	}
	return fmt.Sprintf(" (%.2f× of target)", m)
}

// settleSlot makes the service's slot restart close to its confirmed
// position, so that after a restart its walsender does not re-read WAL
// it already sent (pg_recvlogical's fresh slot would not, and the
// comparison would be unfair). A CHECKPOINT logs the running-transactions
// record a logical slot needs to move its restart_lsn.
func (e *env) settleSlot(ctx context.Context) error {
	if e.svc == nil {
		if err := e.ensureService(ctx, "settle"); err != nil {
			return err
		}
	}
	target, err := e.walLSN(ctx)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := e.pool.Exec(ctx, `CHECKPOINT`); err != nil {
			return err
		}
		for i := 0; i < 30; i++ {
			var ok bool
			if err := e.pool.QueryRow(ctx, `SELECT coalesce((SELECT restart_lsn >= $1::text::pg_lsn FROM pg_replication_slots WHERE slot_name = 'repstream'), false)`, target.String()).Scan(&ok); err != nil {
				return err
			}
			if ok {
				return nil
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	e.note("the service's slot restart_lsn did not reach the current WAL position before a drain run; that run re-reads some older WAL")
	return nil
}
