package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/repstream/repstream/api/client"
	"github.com/repstream/repstream/cdc/localpg"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/streamtest"
)

// markerBase is the first seller id written after the failover: a delta
// of seller markerBase or above was committed on the promoted standby.
const markerBase = 2_000_000

// pgFailover measures a primary failover (issue 14) on the pinned
// PostgreSQL 17 build: on the failover tests' topology (streamtest.Failover:
// a primary, a physical standby, a proxy), with writes running, the primary
// is stopped in immediate mode (no shutdown checkpoint, as kill -9), the
// standby promoted and the proxy moved to it, until the first delta written
// on the new primary reaches a WebSocket client of `serve`. Once with
// repstream's failover slot synchronized to the standby (same epoch, no
// client reset), once without (a new epoch: the client resets first). Each
// run builds the topology afresh.
func (e *env) pgFailover(ctx context.Context) error {
	bin, err := localpg.VersionBinDir("17")
	if err != nil {
		return fmt.Errorf("the pinned PostgreSQL 17 (make pgversions): %w", err)
	}
	for _, synced := range []bool{true, false} {
		var total, stop, promote, retarget, resume []float64
		version := ""
		for r := range e.runs {
			fr, err := e.failoverOnce(ctx, bin, synced)
			if err != nil {
				return fmt.Errorf("synced slot %v, run %d: %w", synced, r+1, err)
			}
			e.logf("  synced slot %v, run %d: first delta %s after the stop (stop %s, promote %s, proxy switch %s, repstream resume %s; first write on the new primary committed %s after the switch)",
				synced, r+1, fr.total.Round(time.Millisecond), fr.kill.Round(time.Millisecond), fr.promote.Round(time.Millisecond),
				fr.retarget.Round(time.Microsecond), fr.resume.Round(time.Millisecond), fr.firstWrite.Round(time.Millisecond))
			total = append(total, fr.total.Seconds())
			stop = append(stop, fr.kill.Seconds())
			promote = append(promote, fr.promote.Seconds())
			retarget = append(retarget, fr.retarget.Seconds())
			resume = append(resume, fr.resume.Seconds())
			version = fr.version
		}
		worst := 0.0
		for _, x := range total {
			worst = max(worst, x)
		}
		what := "repstream's failover slot synchronized to the standby (same epoch, no client reset)"
		if !synced {
			what = "the slot not synchronized (a new epoch: the client resets, then the first delta)"
		}
		e.add(row{Measurement: fmt.Sprintf("primary failover (PostgreSQL %s), %s: immediate stop of the primary → standby promoted → proxy switched → first delta written on the new primary reaches a WebSocket client", version, what),
			Baseline: "—",
			Result: fmt.Sprintf("median %.2f s, worst %.2f s (%d runs); medians of the parts: immediate stop %.2f s, promotion %.2f s, proxy switch %.0f µs, repstream resume %.2f s",
				median(total), worst, len(total), median(stop), median(promote), median(retarget)*1e6, median(resume)),
			Ratio: "—", Target: "report", Verdict: "reported"})
	}
	return nil
}

// failoverRun is one failover's timeline.
type failoverRun struct {
	version    string
	kill       time.Duration // pg_ctl stop -m immediate of the primary
	promote    time.Duration // pg_ctl promote -w of the standby
	retarget   time.Duration // the proxy moved
	firstWrite time.Duration // from the switch to the first commit on the new primary
	resume     time.Duration // from the switch to the first new delta at the client
	total      time.Duration // from the stop to the first new delta at the client
}

func (e *env) failoverOnce(ctx context.Context, bin string, synced bool) (failoverRun, error) {
	var fr failoverRun
	f, err := streamtest.StartFailover(ctx, localpg.Options{BinDir: bin, Settings: []string{"wal_sender_timeout = '10s'"}}, synced)
	if err != nil {
		return fr, err
	}
	defer f.Stop() //nolint:errcheck // the primary was stopped by the failover
	fr.version = fmt.Sprintf("%d.%d", f.Version/10000, f.Version%10000)
	port, err := freePort()
	if err != nil {
		return fr, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cfg := filepath.Join(e.dir, "pgfailover.yaml")
	body := fmt.Sprintf("database_url: %q\npublication: app\nslot: app\nlisten: %s\nheartbeat: 500ms\nlog: { level: info }\nauth: { insecure: true }\n%s",
		f.URL(), addr, streamtest.SourcesYAML)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		return fr, err
	}
	svc := exec.Command(e.self, "serve", "--config", cfg)
	svc.Stdout, svc.Stderr = e.svcLog, e.svcLog
	if err := svc.Start(); err != nil {
		return fr, err
	}
	defer stopWithin(svc, 30*time.Second)
	if err := waitReplicating(ctx, addr, 3*time.Minute); err != nil {
		return fr, err
	}

	// One write every 5 ms through the proxy: sellers below 1000 before the
	// failover, none while it runs, marker sellers after the switch.
	var phase atomic.Int32 // 0 before, 1 during, 2 after
	var firstWrite atomic.Int64
	wctx, stopWriting := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stopWriting(); wg.Wait() }()
	wg.Add(1)
	go func() {
		defer wg.Done()
		var conn *pgx.Conn
		defer func() {
			if conn != nil {
				conn.Close(context.Background())
			}
		}()
		for i := 0; wctx.Err() == nil; i++ {
			p := phase.Load()
			if p == 1 {
				time.Sleep(time.Millisecond)
				continue
			}
			if conn == nil {
				c, err := pgx.Connect(wctx, f.URL())
				if err != nil {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				conn = c
			}
			seller := i % 1000
			if p == 2 {
				seller = markerBase + i
			}
			if _, err := conn.Exec(wctx, `INSERT INTO reviews (seller_id, rating, status) VALUES ($1, 5, 'published')`, seller); err != nil {
				conn.Close(context.Background())
				conn = nil
				continue
			}
			if p == 2 {
				firstWrite.CompareAndSwap(0, time.Now().UnixNano())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()

	w := &failoverWatch{first: make(chan time.Time, 1)}
	cl, err := client.New(client.Options{URL: "ws://" + addr + "/v1/stream", Prefix: "seller:", Handler: w,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		return fr, err
	}
	cctx, stopClient := context.WithCancel(ctx)
	wg.Add(1)
	go func() { defer wg.Done(); _ = cl.Run(cctx) }()
	defer stopClient()
	time.Sleep(1500 * time.Millisecond)
	if synced {
		if err := localpg.WaitSlotSynced(ctx, f.Primary, f.Standby, "app", 90*time.Second); err != nil {
			return fr, err
		}
	}
	time.Sleep(500 * time.Millisecond)
	if w.deltas.Load() == 0 {
		return fr, fmt.Errorf("no delta reached the client before the failover")
	}

	phase.Store(1)
	t0 := time.Now()
	if fr.kill, fr.promote, fr.retarget, err = f.Switch(ctx); err != nil {
		return fr, err
	}
	sw := time.Now()
	phase.Store(2)
	select {
	case at := <-w.first:
		fr.total, fr.resume = at.Sub(t0), at.Sub(sw)
	case <-time.After(2 * time.Minute):
		return fr, fmt.Errorf("no delta from the new primary within 2 minutes")
	case <-ctx.Done():
		return fr, ctx.Err()
	}
	if fw := firstWrite.Load(); fw != 0 {
		fr.firstWrite = time.Unix(0, fw).Sub(sw)
	}
	switch resets := w.resets.Load(); {
	case synced && resets != 0:
		return fr, fmt.Errorf("the client reset %d times although the slot was synchronized: a new epoch", resets)
	case !synced && resets == 0:
		return fr, fmt.Errorf("the client did not reset although the slot was not synchronized")
	}
	return fr, nil
}

// failoverWatch is the client's handler: it counts deltas and resets and
// reports when the first delta of a marker seller arrives.
type failoverWatch struct {
	deltas, resets atomic.Int64
	once           sync.Once
	first          chan time.Time
}

func (w *failoverWatch) Reset(string)       { w.resets.Add(1) }
func (w *failoverWatch) State(stream.State) {}
func (w *failoverWatch) Delta(d stream.Delta) {
	at := time.Now()
	w.deltas.Add(1)
	var id int
	if _, err := fmt.Sscanf(strings.TrimPrefix(d.Subject, "seller:"), "%d", &id); err == nil && id >= markerBase {
		w.once.Do(func() { w.first <- at })
	}
}

// stopWithin ends a child process with SIGTERM, and SIGKILL after d.
func stopWithin(cmd *exec.Cmd, d time.Duration) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _, _ = cmd.Process.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		_ = cmd.Process.Kill()
		<-done
	}
}
