package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/repstream/repstream/api/client"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/streamtest"
)

// nodes measures several nodes (issue 11): failover from the active
// replicating node to the standby after kill -9, and how long a committed
// delta waits before it reaches a serve node's client while Redis is down
// for 10 s (the node polls the store), next to the same with Redis up; the
// same client load through nginx to two serve nodes against one directly;
// and the cost of the bus per delivery: one serve node fed over Redis by
// the replicating node against one node with no bus. The nodes use a slot
// of their own; the single service is stopped meanwhile.
func (e *env) nodes(ctx context.Context) error {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return fmt.Errorf("redis-server is not installed: %w", err)
	}
	if err := e.stopService(); err != nil {
		return err
	}
	defer func() {
		if err := e.ensureService(ctx, "after-nodes"); err != nil {
			e.note("the service did not come back after the nodes measurement: %v", err)
		}
	}()
	redisPort, err := freePort()
	if err != nil {
		return err
	}
	startRedis := func() (*exec.Cmd, error) {
		cmd := exec.Command("redis-server", "--port", strconv.Itoa(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		for i := 0; i < 250; i++ {
			if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", redisPort)); err == nil {
				c.Close()
				return cmd, nil
			}
			time.Sleep(20 * time.Millisecond)
		}
		return cmd, fmt.Errorf("redis-server did not start")
	}
	stopProc := func(c *exec.Cmd, sig syscall.Signal) {
		if c != nil && c.Process != nil {
			_ = c.Process.Signal(sig)
			_, _ = c.Process.Wait()
		}
	}
	redis, err := startRedis()
	defer func() { stopProc(redis, syscall.SIGKILL) }()
	if err != nil {
		return err
	}
	cfg := filepath.Join(e.dir, "nodes.yaml")
	busLine := fmt.Sprintf(`bus: { redis_url: "redis://127.0.0.1:%d/0" }`, redisPort)
	body := fmt.Sprintf(`database_url: %s
slot: bench_nodes
publication: bench_nodes
heartbeat: 1s
log: { level: info }
auth: { insecure: true }
%s
%s`, e.dbURL, busLine, streamtest.SourcesYAML)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		return err
	}
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			stopProc(p, syscall.SIGKILL)
		}
	}()
	node := func(role string) (*exec.Cmd, string, error) {
		port, err := freePort()
		if err != nil {
			return nil, "", err
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		args := []string{"serve", "--config", cfg, "--listen", addr}
		if role != "" {
			args = append(args, "--role", role)
		}
		cmd := exec.Command(e.self, args...)
		cmd.Stdout, cmd.Stderr = e.svcLog, e.svcLog
		if err := cmd.Start(); err != nil {
			return nil, "", err
		}
		procs = append(procs, cmd)
		return cmd, addr, nil
	}
	active, aAddr, err := node("replicate")
	if err != nil {
		return err
	}
	if err := waitReplicating(ctx, aAddr, 3*time.Minute); err != nil {
		return fmt.Errorf("active node: %w", err)
	}
	// Its slot is new, so it loaded every row, and decodes the load's own
	// WAL (the store shares the database) before the first new change:
	// after bigtxn's millions of rows that takes minutes, which must not
	// count as the measurements' delay.
	t0 := time.Now()
	if err := e.caughtUp(ctx); err != nil {
		return fmt.Errorf("active node: %w", err)
	}
	e.logf("  nodes: the replicating node caught up %.1f s after it held the slot", time.Since(t0).Seconds())
	standby, sAddr, err := node("replicate")
	if err != nil {
		return err
	}
	vNode, vAddr, err := node("serve")
	if err != nil {
		return err
	}

	// The application writes about 200 reviews a second throughout.
	wctx, stopWriting := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stopWriting(); wg.Wait() }()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; wctx.Err() == nil; i++ {
			_, _ = e.pool.Exec(wctx, `INSERT INTO reviews (seller_id, rating, status) VALUES ($1, $2, 'published')`, i%1000, 1+i%5)
			time.Sleep(5 * time.Millisecond)
		}
	}()

	// A client of the serve node notes how long each delta took from its
	// source commit to arrival.
	lat := &arrivals{}
	cl, err := client.New(client.Options{URL: "ws://" + vAddr + "/v1/stream", Prefix: "seller:", Handler: lat,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	if err != nil {
		return err
	}
	cctx, stopClient := context.WithCancel(ctx)
	wg.Add(1)
	go func() { defer wg.Done(); _ = cl.Run(cctx) }()
	defer stopClient()
	time.Sleep(3 * time.Second)

	// Gap to live: Redis up, then Redis down, 10 s each.
	lat.reset()
	time.Sleep(10 * time.Second)
	upWorst, upN := lat.reset()
	stopProc(redis, syscall.SIGKILL)
	time.Sleep(10 * time.Second)
	downWorst, downN := lat.reset()
	if redis, err = startRedis(); err != nil {
		return err
	}
	e.add(row{Measurement: "nodes: longest wait of a committed delta for a serve node's client while Redis is down 10 s (polling the store, bus.poll_interval 250ms)",
		Baseline: fmt.Sprintf("%s with Redis up (%d deltas)", upWorst.Round(time.Millisecond), upN),
		Result:   fmt.Sprintf("%s (%d deltas)", downWorst.Round(time.Millisecond), downN),
		Ratio:    fmt.Sprintf("%.1f×", float64(downWorst)/float64(max(upWorst, time.Millisecond))),
		Target:   "≤ 1 s", Verdict: verdict(downN > 0 && downWorst <= time.Second)})
	time.Sleep(2 * time.Second)

	// Failover: kill -9 the active node; the standby holds the slot.
	var took []float64
	for range e.runs {
		if err := waitStandby(ctx, sAddr, 30*time.Second); err != nil {
			return err
		}
		killed := time.Now()
		stopProc(active, syscall.SIGKILL)
		if err := waitReplicating(ctx, sAddr, 60*time.Second); err != nil {
			return fmt.Errorf("standby did not take over: %w", err)
		}
		took = append(took, time.Since(killed).Seconds())
		// The killed node comes back as the next standby.
		active, aAddr = standby, sAddr
		if standby, sAddr, err = node("replicate"); err != nil {
			return err
		}
	}
	med := time.Duration(median(took) * float64(time.Second))
	worst := 0.0
	for _, x := range took {
		worst = max(worst, x)
	}
	e.add(row{Measurement: fmt.Sprintf("nodes: failover, kill -9 of the replicating node until the standby holds the slot (median of %d)", len(took)),
		Result: fmt.Sprintf("%s (worst %.2f s)", med.Round(time.Millisecond), worst),
		Target: "≤ 5 s", Verdict: verdict(worst <= 5)})
	_ = active

	// nginx (deploy/nginx/repstream.conf) in front of two serve nodes
	// against one serve node directly: the same clients, the same writes.
	v2, v2Addr, err := node("serve")
	if err != nil {
		return err
	}
	if ngAddr, ngPid, stopNginx, err := e.startNginx(vAddr, v2Addr); err != nil {
		e.note("nginx not measured: %v", err)
	} else {
		// CPU per delivery: nginx's own (master_process off: one process)
		// is its overhead; the serve nodes' is measured both ways so the
		// row shows whether splitting the clients across two costs more.
		var direct, proxied []loadResult
		for range e.runs {
			var r loadResult
			if r, err = clientLoad(ctx, "ws://"+vAddr+"/v1/stream", 50, 10*time.Second, vNode.Process.Pid); err != nil {
				break
			}
			direct = append(direct, r)
			if r, err = clientLoad(ctx, "ws://"+ngAddr+"/v1/stream", 50, 10*time.Second, ngPid, vNode.Process.Pid, v2.Process.Pid); err != nil {
				break
			}
			proxied = append(proxied, r)
		}
		stopNginx()
		if err != nil {
			return err
		}
		d, p := medianLoad(direct), medianLoad(proxied)
		e.add(row{Measurement: fmt.Sprintf("nodes: 50 clients of seller:* through nginx to two serve nodes, against one serve node directly (writes at ~200 tx/s; arrival − source commit, ms precision; CPU: /proc/<pid>/stat over the 10 s, divided by the deliveries; of %d runs each, the one of median rate)", len(direct)),
			Baseline: fmt.Sprintf("direct: %.0f deliveries/s, p50 %s, p99 %s, serve node CPU %.1f µs per delivery", d.rate, d.p50.Round(time.Millisecond), d.p99.Round(time.Millisecond), d.perProc(0)),
			Result: fmt.Sprintf("nginx: %.0f deliveries/s, p50 %s, p99 %s; CPU per delivery: nginx %.1f µs, serve nodes %.1f µs (%.1f + %.1f)",
				p.rate, p.p50.Round(time.Millisecond), p.p99.Round(time.Millisecond), p.perProc(0), p.perProc(1)+p.perProc(2), p.perProc(1), p.perProc(2)),
			Ratio:  fmt.Sprintf("nginx adds %.1f µs CPU per delivery; p50 %+d ms, p99 %+d ms", p.perProc(0), (p.p50 - d.p50).Milliseconds(), (p.p99 - d.p99).Milliseconds()),
			Target: "report", Verdict: "reported"})
	}

	// The bus against no bus: the same clients and writes on one serve node
	// fed over Redis by the replicating node, then on one node that
	// replicates and serves with no bus (the default single-node mode, the
	// same configuration without bus:, the same slot). Nothing else of
	// repstream runs meanwhile: the second serve node and the standby stop.
	stopProc(v2, syscall.SIGTERM)
	stopProc(standby, syscall.SIGTERM)
	wsURL := "ws://" + vAddr + "/v1/stream"
	var bus []loadResult
	for range e.runs {
		r, err := clientLoad(ctx, wsURL, 50, 10*time.Second, active.Process.Pid, vNode.Process.Pid, redis.Process.Pid)
		if err != nil {
			return err
		}
		bus = append(bus, r)
	}
	stopProc(vNode, syscall.SIGTERM)
	stopProc(active, syscall.SIGTERM)
	single := filepath.Join(e.dir, "nodes-nobus.yaml")
	if err := os.WriteFile(single, []byte(strings.Replace(body, busLine, "", 1)), 0o600); err != nil {
		return err
	}
	cfg = single
	one, oAddr, err := node("")
	if err != nil {
		return err
	}
	if err := waitReplicating(ctx, oAddr, 3*time.Minute); err != nil {
		return fmt.Errorf("the node without a bus: %w", err)
	}
	wsURL = "ws://" + oAddr + "/v1/stream"
	var alone []loadResult
	for range e.runs {
		r, err := clientLoad(ctx, wsURL, 50, 10*time.Second, one.Process.Pid)
		if err != nil {
			return err
		}
		alone = append(alone, r)
	}
	b, a := medianLoad(bus), medianLoad(alone)
	perB, perA := b.cpuPerDelivery(), a.cpuPerDelivery()
	e.add(row{Measurement: fmt.Sprintf("nodes: bus against no bus: 50 clients of seller:* on one serve node fed over Redis by a replicating node, against one node replicating and serving without a bus (the same configuration but bus:, the same slot, the same writer, ~%.0f tx/s; arrival − source commit, ms precision; CPU: /proc/<pid>/stat over the 10 s, divided by the deliveries; of %d runs, the one of median rate, the lower for an even count)", a.rate/50, len(alone)),
		Baseline: fmt.Sprintf("no bus (1 repstream process): %.0f deliveries/s, p50 %s, p99 %s, CPU %.0f µs per delivery", a.rate, a.p50.Round(time.Millisecond), a.p99.Round(time.Millisecond), perA),
		Result: fmt.Sprintf("bus (replicate + serve + Redis): %.0f deliveries/s, p50 %s, p99 %s, CPU %.0f µs per delivery (replicate %.0f, serve %.0f, Redis %.0f)",
			b.rate, b.p50.Round(time.Millisecond), b.p99.Round(time.Millisecond), perB, b.perProc(0), b.perProc(1), b.perProc(2)),
		Ratio:  fmt.Sprintf("CPU %.2f×; p50 %+d ms, p99 %+d ms", perB/perA, (b.p50 - a.p50).Milliseconds(), (b.p99 - a.p99).Milliseconds()),
		Target: "report", Verdict: "reported"})
	return nil
}

type loadResult struct {
	rate     float64
	p50, p99 time.Duration
	n        int             // deliveries in the window
	cpu      []time.Duration // CPU time of each process asked for, in the window
}

// cpuPerDelivery is the CPU time of all the processes per delivery, in µs.
func (r loadResult) cpuPerDelivery() float64 {
	var sum time.Duration
	for _, c := range r.cpu {
		sum += c
	}
	return float64(sum.Microseconds()) / float64(max(r.n, 1))
}

// perProc is process i's CPU time per delivery, in µs.
func (r loadResult) perProc(i int) float64 {
	return float64(r.cpu[i].Microseconds()) / float64(max(r.n, 1))
}

// medianLoad is the run with the median rate; its own latencies and CPU
// go with it, so the figures of a row come from one run.
func medianLoad(rs []loadResult) loadResult {
	s := append([]loadResult(nil), rs...)
	sort.Slice(s, func(i, j int) bool { return s[i].rate < s[j].rate })
	return s[(len(s)-1)/2]
}

// clientLoad runs n clients of url for d and returns their deliveries per
// second, the 50th and 99th percentiles of arrival − source commit, and
// the CPU time each of pids spent in the same window.
func clientLoad(ctx context.Context, url string, n int, d time.Duration, pids ...int) (loadResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rec := &waits{}
	var wg sync.WaitGroup
	defer wg.Wait()
	var live atomic.Int32
	for range n {
		c, err := client.New(client.Options{URL: url, Prefix: "seller:", Handler: &firstDelta{waits: rec, live: &live}, MinBackoff: 50 * time.Millisecond})
		if err != nil {
			return loadResult{}, err
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = c.Run(ctx) }()
	}
	// Measure live delivery only: every client past its snapshot (a
	// client's first delta comes after it; with 10,000 sellers, 50
	// snapshots at once took longer than a fixed 3 s wait, and the window
	// measured catch-up instead, or nothing), then a second to settle.
	for deadline := time.Now().Add(2 * time.Minute); live.Load() < int32(n); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return loadResult{}, fmt.Errorf("%d of %d clients of %s had no delta within 2 min", n-int(live.Load()), n, url)
		}
	}
	time.Sleep(time.Second)
	cpu := make([]time.Duration, len(pids))
	for i, pid := range pids {
		c, err := cpuTime(pid)
		if err != nil {
			return loadResult{}, err
		}
		cpu[i] = -c
	}
	rec.start()
	time.Sleep(d)
	ws := rec.stop()
	for i, pid := range pids {
		c, err := cpuTime(pid)
		if err != nil {
			return loadResult{}, err
		}
		cpu[i] += c
	}
	cancel()
	if len(ws) == 0 {
		return loadResult{}, fmt.Errorf("no delivery through %s", url)
	}
	sort.Slice(ws, func(i, j int) bool { return ws[i] < ws[j] })
	return loadResult{rate: float64(len(ws)) / d.Seconds(), p50: ws[len(ws)/2], p99: ws[len(ws)*99/100], n: len(ws), cpu: cpu}, nil
}

// firstDelta counts its client in live at the client's first delta.
type firstDelta struct {
	*waits
	live *atomic.Int32
	got  atomic.Bool
}

func (f *firstDelta) Delta(d stream.Delta) {
	if !f.got.Swap(true) {
		f.live.Add(1)
	}
	f.waits.Delta(d)
}

// waits records arrival − source commit of every delta while on.
type waits struct {
	mu sync.Mutex
	on bool
	ws []time.Duration
}

func (w *waits) Reset(string)       {}
func (w *waits) State(stream.State) {}
func (w *waits) Delta(d stream.Delta) {
	x := time.Since(d.After.UpdatedAt)
	w.mu.Lock()
	if w.on {
		w.ws = append(w.ws, x)
	}
	w.mu.Unlock()
}
func (w *waits) start() { w.mu.Lock(); w.on = true; w.mu.Unlock() }
func (w *waits) stop() []time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.on = false
	return w.ws
}

// startNginx runs Debian's nginx with deploy/nginx/repstream.conf in front
// of the two upstreams; it returns nginx's address and pid (one process:
// master_process off), and how to stop it.
func (e *env) startNginx(up1, up2 string) (addr string, pid int, stop func(), err error) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/nginx"); serr != nil {
			return "", 0, nil, fmt.Errorf("nginx is not installed")
		}
		bin = "/usr/sbin/nginx"
	}
	conf, err := os.ReadFile("deploy/nginx/repstream.conf")
	if err != nil {
		return "", 0, nil, err
	}
	port, err := freePort()
	if err != nil {
		return "", 0, nil, err
	}
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	dir := filepath.Join(e.dir, "nginx")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", 0, nil, err
	}
	site := strings.Replace(string(conf), "listen 80;", "listen "+addr+";", 1)
	site = strings.Replace(site, "serve-1:8080", up1, 1)
	site = strings.Replace(site, "serve-2:8080", up2, 1)
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;"
	}
	main := fmt.Sprintf("%s\ndaemon off;\nmaster_process off;\nerror_log %[2]s/error.log;\npid %[2]s/nginx.pid;\nevents { worker_connections 4096; }\nhttp {\n access_log off;\n client_body_temp_path %[2]s/body;\n proxy_temp_path %[2]s/proxy;\n fastcgi_temp_path %[2]s/fastcgi;\n uwsgi_temp_path %[2]s/uwsgi;\n scgi_temp_path %[2]s/scgi;\n include %[2]s/repstream.conf;\n}\n", user, dir)
	if err := os.WriteFile(filepath.Join(dir, "repstream.conf"), []byte(site), 0o644); err != nil {
		return "", 0, nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(main), 0o644); err != nil {
		return "", 0, nil, err
	}
	cmd := exec.Command(bin, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"))
	cmd.Stdout, cmd.Stderr = e.svcLog, e.svcLog
	if err := cmd.Start(); err != nil {
		return "", 0, nil, err
	}
	stop = func() { _ = cmd.Process.Signal(syscall.SIGTERM); _, _ = cmd.Process.Wait() }
	for i := 0; i < 250; i++ {
		if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return addr, cmd.Process.Pid, stop, nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	return "", 0, nil, fmt.Errorf("nginx did not answer on %s", addr)
}

// arrivals is a client.Handler keeping the longest source-commit-to-
// arrival time of the deltas since the last reset.
type arrivals struct {
	mu    sync.Mutex
	worst time.Duration
	n     int
}

func (l *arrivals) Reset(string)       {}
func (l *arrivals) State(stream.State) {}
func (l *arrivals) Delta(d stream.Delta) {
	w := time.Since(d.After.UpdatedAt)
	l.mu.Lock()
	l.worst = max(l.worst, w)
	l.n++
	l.mu.Unlock()
}

func (l *arrivals) reset() (time.Duration, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w, n := l.worst, l.n
	l.worst, l.n = 0, 0
	return w, n
}

// nodeStatus reads a node's /v1/status.
func nodeStatus(addr string) (replicating, standby bool, err error) {
	resp, err := http.Get("http://" + addr + "/v1/status")
	if err != nil {
		return false, false, err
	}
	defer resp.Body.Close()
	var st struct {
		Replication struct {
			Connected bool `json:"connected"`
		} `json:"replication"`
		Standby *struct {
			WaitingFor string `json:"waiting_for"`
		} `json:"standby"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return false, false, err
	}
	return st.Replication.Connected, st.Standby != nil, nil
}

func waitReplicating(ctx context.Context, addr string, within time.Duration) error {
	return pollNode(ctx, addr, within, func(r, _ bool) bool { return r })
}

func waitStandby(ctx context.Context, addr string, within time.Duration) error {
	return pollNode(ctx, addr, within, func(_, s bool) bool { return s })
}

func pollNode(ctx context.Context, addr string, within time.Duration, ok func(replicating, standby bool) bool) error {
	deadline := time.Now().Add(within)
	for {
		r, s, err := nodeStatus(addr)
		if err == nil && ok(r, s) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s: not there within %s (last error %v)", addr, within, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}
