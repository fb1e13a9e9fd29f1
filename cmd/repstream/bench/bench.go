// Package bench is the benchmark harness behind `make bench` (`repstream
// bench`): it starts a throwaway Postgres with fsync on, runs the service as
// a real process and the WebSocket clients in another, measures each figure
// of issue 6 next to its baseline in the same run, and writes RESULTS.md.
//
// The machines these runs on are shared and noisy, so every figure is the
// median of several runs and is compared as a ratio to a baseline measured
// minutes before on the same machine.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/repstream/repstream/cdc/localpg"
	"github.com/repstream/repstream/stream/streamtest"
)

// Options configure Run. Self and ServiceArgs are required.
type Options struct {
	// Self is the repstream executable; the service and the client process
	// are started from it.
	Self string
	// Service, if set, is the executable run as the service instead of
	// Self: another build measured by this harness (a before and after).
	Service string
	// ServiceArgs are the arguments that run the service with a config
	// file; tag names the run (for profiles).
	ServiceArgs func(configPath, tag string) []string
	// Quick shrinks every size for a smoke run of about three minutes.
	Quick bool
	// Runs is how many times each measurement repeats (zero: 3, quick 2).
	Runs int
	// Only, if not empty, names the measurements to run (drain, ingest,
	// latency, fanout, resume, codec, bigtxn, nodes, pgfailover).
	Only []string
	// Out is the results file; empty writes none.
	Out string
	// PprofAddr, if set, is where the service serves net/http/pprof.
	PprofAddr string
	// ProfileDir, if set, receives heap profiles fetched from PprofAddr.
	ProfileDir string
	// Stdout receives progress and the table.
	Stdout io.Writer
}

// env is one benchmark run's shared state.
type env struct {
	o         Options
	self      string
	dir       string
	cluster   *localpg.Cluster
	dbURL     string
	pgConn    string // libpq conninfo for pgbench and pg_recvlogical
	httpURL   string
	wsURL     string
	cfgPath   string
	svcLog    *os.File
	cliLog    *os.File
	svcExtra  []string // extra environment for the next service start
	svcTag    string
	svc       *service
	pool      *pgxpool.Pool
	pgVer     string
	rows      []row
	notes     []string
	runs      int
	out       io.Writer
	loadStart string
}

func (e *env) serviceArgs(cfg string) []string { return e.o.ServiceArgs(cfg, e.svcTag) }

func (e *env) logf(format string, args ...any) {
	fmt.Fprintf(e.out, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// Run runs the benchmarks and writes the results.
func Run(ctx context.Context, o Options) error {
	RaiseNoFile()
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	e := &env{o: o, self: o.Self, out: o.Stdout, runs: o.Runs}
	if e.runs <= 0 {
		e.runs = 3
		if o.Quick {
			e.runs = 2
		}
	}
	var err error
	if e.dir, err = os.MkdirTemp("", "repstream-bench-"); err != nil {
		return err
	}
	keep := false
	defer func() {
		if keep {
			fmt.Fprintf(e.out, "bench: kept logs in %s\n", e.dir)
			return
		}
		os.RemoveAll(e.dir)
	}()
	if e.svcLog, err = os.Create(filepath.Join(e.dir, "service.log")); err != nil {
		return err
	}
	if e.cliLog, err = os.Create(filepath.Join(e.dir, "clients.log")); err != nil {
		return err
	}
	started := time.Now()
	e.loadStart = loadavg()
	e.logf("starting a throwaway Postgres (fsync on)")
	e.cluster, err = localpg.Start(ctx, localpg.Options{Settings: []string{
		"max_wal_size = '4GB'", "checkpoint_timeout = '30min'", "wal_sender_timeout = '60s'",
	}})
	if err != nil {
		return err
	}
	defer e.cluster.Stop() //nolint:errcheck
	if err := localpg.CreateDatabase(ctx, e.cluster.URL(""), "bench"); err != nil {
		return err
	}
	e.dbURL = e.cluster.URL("bench")
	e.pgConn = fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=bench sslmode=disable", e.cluster.Port)
	if e.pool, err = pgxpool.New(ctx, e.dbURL); err != nil {
		return err
	}
	defer e.pool.Close()
	if err := e.pool.QueryRow(ctx, `SELECT version()`).Scan(&e.pgVer); err != nil {
		return err
	}
	if _, err := e.pool.Exec(ctx, streamtest.Schema); err != nil {
		return err
	}
	// Existing rows: 1,000 sellers with 20 reviews each.
	if _, err := e.pool.Exec(ctx, `INSERT INTO reviews (seller_id, rating, status) SELECT i % 1000, 1 + i % 5, 'published' FROM generate_series(1, 20000) i`); err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	e.httpURL = fmt.Sprintf("http://127.0.0.1:%d", port)
	e.wsURL = fmt.Sprintf("ws://127.0.0.1:%d/v1/stream", port)
	e.cfgPath = filepath.Join(e.dir, "repstream.yaml")
	cfg := fmt.Sprintf(`database_url: %s
listen: 127.0.0.1:%d
heartbeat: 1s
log: { level: warn }
auth: { insecure: true }
api: { max_connections: 30000, heartbeat: 30s, max_subjects: 100000 }
%s`, e.dbURL, port, streamtest.SourcesYAML)
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}
	e.svcTag = "initial"
	if e.svc, err = e.startService(); err != nil {
		return err
	}
	defer func() {
		if e.svc != nil {
			e.svc.stop() //nolint:errcheck
		}
	}()
	if err := e.svc.waitReady(ctx, 2*time.Minute); err != nil {
		return err
	}
	e.logf("service ready at %s (pid %d); logs in %s", e.httpURL, e.svc.pid(), e.dir)

	steps := []struct {
		name string
		f    func(context.Context) error
	}{
		{"codec", e.codec},
		{"drain", e.drain},
		{"ingest", e.ingest},
		{"latency", e.latency},
		{"fanout", e.fanout},
		{"resume", e.resume},
		{"bigtxn", e.bigTxn},
		{"nodes", e.nodes},
		{"pgfailover", e.pgFailover},
	}
	var failed []string
	for _, s := range steps {
		if len(o.Only) > 0 && !contains(o.Only, s.name) {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		t := time.Now()
		e.logf("== %s", s.name)
		// One measurement's WAL must not bill the next with its checkpoint.
		if _, err := e.pool.Exec(ctx, `CHECKPOINT`); err != nil {
			e.logf("  checkpoint before %s: %v", s.name, err)
		}
		if err := s.f(ctx); err != nil {
			e.logf("%s failed: %v", s.name, err)
			failed = append(failed, s.name+": "+err.Error())
			e.rows = append(e.rows, row{Measurement: s.name, Result: "error: " + oneLine(err.Error()), Verdict: "ERROR"})
			// Leave a running, caught-up service for the next measurement.
			if e.svc == nil {
				if e.svc, err = e.startService(); err == nil {
					err = e.svc.waitReady(ctx, 2*time.Minute)
				}
				if err != nil {
					return err
				}
			}
		}
		e.logf("%s took %s", s.name, time.Since(t).Round(time.Second))
	}
	text := e.render(time.Since(started))
	fmt.Fprintln(e.out)
	fmt.Fprint(e.out, text)
	if o.Out != "" && len(o.Only) == 0 {
		if err := os.WriteFile(o.Out, []byte(text), 0o644); err != nil {
			return err
		}
		e.logf("wrote %s", o.Out)
	}
	if len(failed) > 0 {
		keep = true
		return fmt.Errorf("bench: %s", strings.Join(failed, "; "))
	}
	return nil
}

// restartService stops the service (if running) and starts it with tag.
func (e *env) stopService() error {
	if e.svc == nil {
		return nil
	}
	err := e.svc.stop()
	e.svc = nil
	if errors.Is(err, errStopHung) {
		// A known shutdown hang (see the report); the process was killed,
		// which the service must survive anyway: carry on.
		e.note("the service hung on SIGTERM once and was killed after 30 s (%v)", err)
		return nil
	}
	return err
}

func (e *env) ensureService(ctx context.Context, tag string) error {
	if e.svc != nil {
		return nil
	}
	e.svcTag = tag
	s, err := e.startService()
	if err != nil {
		return err
	}
	e.svc = s
	if err := s.waitReady(ctx, 3*time.Minute); err != nil {
		return err
	}
	return e.caughtUp(ctx)
}

// caughtUp commits a marker transaction and waits until the service has
// applied it: /readyz can report ready while the walsender has not yet
// sent a backlog, so readiness alone does not mean caught up.
func (e *env) caughtUp(ctx context.Context) error {
	v0, err := e.version(ctx, markerSubject)
	if err != nil {
		return err
	}
	if _, err := e.pool.Exec(ctx, `INSERT INTO reviews (seller_id, rating, status) VALUES (999999, 5, 'published')`); err != nil {
		return err
	}
	return e.waitVersion(ctx, markerSubject, v0+1, 10*time.Millisecond, 10*time.Minute)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// conn opens a single connection to the bench database.
func (e *env) conn(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, e.dbURL) }

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func machine() (cores int, memGiB float64) {
	cores = runtime.NumCPU()
	b, _ := os.ReadFile("/proc/meminfo")
	for _, l := range strings.Split(string(b), "\n") {
		var kb float64
		if n, _ := fmt.Sscanf(l, "MemTotal: %f kB", &kb); n == 1 {
			memGiB = kb / (1 << 20)
		}
	}
	return cores, memGiB
}
