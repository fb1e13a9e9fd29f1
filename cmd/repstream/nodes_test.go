package main

// Several nodes as an operator runs them: real processes, a Redis of the
// test's own (so it can be killed and restarted), a replicating node,
// serving nodes and WebSocket clients that check every delta they get.

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/repstream/repstream/api/client"
	"github.com/repstream/repstream/cdc/localpg"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/streamtest"
)

// redisProc is a redis-server of the test's own on a fixed port.
type redisProc struct {
	t    *testing.T
	addr string
	cmd  *exec.Cmd
	done chan struct{}
}

// startRedis runs redis-server without persistence, as the README says
// the bus needs. Missing redis-server fails the test: .ci/run installs it.
func startRedis(t *testing.T) *redisProc {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server is not installed (apt-get install redis-server; .ci/run does it):", err)
	}
	r := &redisProc{t: t, addr: freeAddr(t)}
	r.start()
	t.Cleanup(r.kill)
	return r
}

func (r *redisProc) start() {
	r.t.Helper()
	_, port, _ := net.SplitHostPort(r.addr)
	r.cmd = exec.Command("redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(r.cmd, r.done) //nolint:errcheck
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", r.addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if i > 200 {
			r.t.Fatalf("redis-server on %s did not start: %v", r.addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill ends Redis with SIGKILL: everything it held is gone.
func (r *redisProc) kill() {
	if r.cmd == nil {
		return
	}
	r.cmd.Process.Signal(syscall.SIGKILL) //nolint:errcheck
	<-r.done
	r.cmd = nil
}

func (r *redisProc) url() string { return "redis://" + r.addr + "/0" }

// watcher is a WebSocket client (api/client) of one node that checks each
// delta strictly: per subject, versions rise by one from the state it
// holds; the client counts a delta at or below a held state as ignored
// (a repeat).
type watcher struct {
	t    *testing.T
	name string
	c    *client.Client

	// since is the cursor a resuming client started from (0: a snapshot).
	since stream.LSN

	mu     sync.Mutex
	held   map[string]int64 // guarded by mu; subject → version
	first  map[string]int64 // guarded by mu; a resuming client's first version of each subject
	errs   []string         // guarded by mu
	got    int              // guarded by mu; deltas applied
	lastAt time.Time        // guarded by mu; when the last delta arrived
}

func (w *watcher) Reset(string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	clear(w.held)
}

func (w *watcher) State(s stream.State) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.held[s.Subject] = s.Version
}

func (w *watcher) Delta(d stream.Delta) {
	w.mu.Lock()
	defer w.mu.Unlock()
	v, ok := w.held[d.Subject]
	if !ok && w.since != 0 {
		w.first[d.Subject] = d.Version // checked against the store's log in converged
	} else if (ok && d.Version != v+1) || (!ok && d.Version != 1) {
		w.errs = append(w.errs, fmt.Sprintf("%s: got v%d at %s while holding v%d", d.Subject, d.Version, d.LSN, v))
	}
	w.held[d.Subject] = d.Version
	w.got++
	w.lastAt = time.Now()
}

func (w *watcher) deltas() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.got
}

// watchNode runs a client of url subscribed to seller: until the test ends.
// epoch and since, when set, resume from another client's cursor.
func watchNode(t *testing.T, name, url, epoch string, since stream.LSN) *watcher {
	w := &watcher{t: t, name: name, since: since, held: map[string]int64{}, first: map[string]int64{}}
	c, err := client.New(client.Options{URL: url, Handler: w, Prefix: "seller:", Epoch: epoch, Since: since,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	w.c = c
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: client: %v", name, err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("%s: the client did not stop within 15 s of its context's end", name)
		}
	})
	return w
}

// converged waits until w holds every seller's version in the store, and
// checks it never saw a gap or a repeat.
func (w *watcher) converged(t *testing.T, conn *pgx.Conn, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	var diff []string
	for {
		// The store may still be catching up (a replicator that just took
		// over): read it each time.
		want := map[string]int64{}
		rows, err := conn.Query(context.Background(), `SELECT subject, version FROM repstream.subjects WHERE subject LIKE 'seller:%'`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var s string
			var v int64
			if err := rows.Scan(&s, &v); err != nil {
				t.Fatal(err)
			}
			want[s] = v
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		diff = diff[:0]
		w.mu.Lock()
		for s, v := range want {
			if _, ok := w.held[s]; !ok && w.since != 0 {
				continue // no delta since the cursor; checked below
			}
			if w.held[s] != v {
				diff = append(diff, fmt.Sprintf("%s v%d (store v%d)", s, w.held[s], v))
			}
		}
		errs := append([]string(nil), w.errs...)
		w.mu.Unlock()
		if len(errs) > 0 {
			t.Fatalf("%s: gaps in what the client received: %s", w.name, strings.Join(errs[:min(len(errs), 10)], "; "))
		}
		if len(diff) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: after %s the client still lacks %d subjects' last deltas: %s", w.name, within, len(diff), strings.Join(diff[:min(len(diff), 10)], ", "))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if w.since != 0 {
		// A resuming client's first delta of each subject is the store's
		// first one above the cursor.
		rows, err := conn.Query(context.Background(), `SELECT DISTINCT ON (subject) subject, version FROM repstream.deltas
WHERE lsn > $1 AND subject LIKE 'seller:%' ORDER BY subject, lsn`, w.since)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		w.mu.Lock()
		for rows.Next() {
			var s string
			var v int64
			if err := rows.Scan(&s, &v); err != nil {
				t.Fatal(err)
			}
			if w.first[s] != v {
				t.Errorf("%s: first delta of %s after %s: v%d, want v%d", w.name, s, w.since, w.first[s], v)
			}
			n++
		}
		if n != len(w.first) {
			t.Errorf("%s: got %d subjects' deltas after %s, the store has %d", w.name, len(w.first), w.since, n)
		}
		w.mu.Unlock()
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
	}
	if st := w.c.Stats(); st.Ignored != 0 {
		t.Errorf("%s: %d deltas were sent twice (stats %+v)", w.name, st.Ignored, st)
	}
}

// cluster is one database and Redis with repstream nodes around them.
type cluster struct {
	t      *testing.T
	dbURL  string
	name   string
	redis  *redisProc
	conn   *pgx.Conn
	writes chan struct{} // closed to stop the writer
	wg     sync.WaitGroup
	werr   error
	nw     int // transactions written
}

func newCluster(t *testing.T) *cluster {
	dbURL, name := localpg.NewDatabase(t)
	c := &cluster{t: t, dbURL: dbURL, name: name, redis: startRedis(t)}
	c.conn = streamtest.Connect(t, dbURL)
	streamtest.Exec(t, c.conn, streamtest.Schema)
	if err := streamtest.Seed(context.Background(), c.conn, 300, 50); err != nil {
		t.Fatal(err)
	}
	return c
}

// node starts repstream serve with role on addr (empty: a free one) and
// waits until it listens.
func (c *cluster) node(role, addr string, extra ...string) (*proc, string) {
	c.t.Helper()
	if addr == "" {
		addr = freeAddr(c.t)
	}
	cfg := writeConfig(c.t, c.dbURL, c.name, fmt.Sprintf("bus:\n  role: %s\n  poll_interval: 100ms\n  check_interval: 500ms\n%s", role, strings.Join(extra, "")))
	p := start(c.t, nil, "serve", "--config", cfg, "--listen", addr, "--redis-url", c.redis.url())
	listenAddr(c.t, p)
	return p, addr
}

// replicator starts a replicate node and waits until it holds the slot.
func (c *cluster) replicator() *proc {
	c.t.Helper()
	p, _ := c.node("replicate", "")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := p.waitOutput(ctx, "replication started"); err != nil {
		c.t.Fatal(err)
	}
	return p
}

// write runs the application: about 300 source transactions a second.
func (c *cluster) write() {
	c.writes = make(chan struct{})
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, c.dbURL)
		if err != nil {
			c.werr = err
			return
		}
		defer conn.Close(ctx)
		wl := streamtest.NewWorkload(rand.Uint64())
		for {
			select {
			case <-c.writes:
				return
			case <-time.After(3 * time.Millisecond):
			}
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second) // a stuck write fails the test instead of hanging it
			c.werr = wl.Step(sctx, conn)
			cancel()
			if c.werr != nil {
				return
			}
			c.nw++
		}
	}()
}

func (c *cluster) stopWriting() {
	close(c.writes)
	c.wg.Wait()
	if c.werr != nil {
		c.t.Fatal(c.werr)
	}
	c.t.Logf("%d source transactions written", c.nw)
}

func wsURL(addr string) string { return "ws://" + addr + "/v1/stream" }

// TestNodesReplicatorKilled kills the replicating node under load, with -9
// and with SIGTERM, and restarts it: the clients of every serve node get
// every delta, contiguous, none twice. A serve node started late, with a
// client moving to it from another node's cursor, does too.
func TestNodesReplicatorKilled(t *testing.T) {
	for _, how := range []string{"kill9", "sigterm"} {
		t.Run(how, func(t *testing.T) {
			c := newCluster(t)
			r := c.replicator()
			_, a1 := c.node("serve", "")
			_, a2 := c.node("serve", "")
			w1 := watchNode(t, "serve-1", wsURL(a1), "", 0)
			w2 := watchNode(t, "serve-2", wsURL(a2), "", 0)
			c.write()
			var w3 *watcher
			for i := range 3 {
				time.Sleep(time.Duration(700+rand.IntN(800)) * time.Millisecond)
				if how == "kill9" {
					r.kill9()
				} else if err := r.stop(30 * time.Second); err != nil {
					t.Fatalf("replicator: %v", err)
				}
				if i == 0 {
					_, a3 := c.node("serve", "")
					epoch, since := w1.c.Cursor()
					w3 = watchNode(t, "serve-3 (late)", wsURL(a3), epoch, since)
				}
				time.Sleep(300 * time.Millisecond)
				r = c.replicator()
			}
			time.Sleep(time.Second)
			c.stopWriting()
			for _, w := range []*watcher{w1, w2, w3} {
				w.converged(t, c.conn, 60*time.Second)
				t.Logf("%s: %d deltas, stats %+v", w.name, w.deltas(), w.c.Stats())
			}
			// A serve node's repstream_ready says what its /readyz says.
			if v := scrape(t, "http://"+a1).value(t, "repstream_ready"); v != 1 {
				t.Errorf("serve node: repstream_ready = %v while /readyz serves, want 1", v)
			}
		})
	}
}

// TestNodesRedisDown restarts Redis, then keeps it down for 10 s, under
// load: the serve nodes' clients keep receiving (the nodes poll the
// store) and get everything exactly.
func TestNodesRedisDown(t *testing.T) {
	c := newCluster(t)
	c.replicator()
	_, a1 := c.node("serve", "")
	_, a2 := c.node("serve", "")
	w1 := watchNode(t, "serve-1", wsURL(a1), "", 0)
	w2 := watchNode(t, "serve-2", wsURL(a2), "", 0)
	c.write()
	time.Sleep(time.Second)
	c.redis.kill()
	c.redis.start() // a restart: the stream is gone
	time.Sleep(time.Second)

	c.redis.kill()
	n1, n2 := w1.deltas(), w2.deltas()
	var worst time.Duration
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); {
		time.Sleep(100 * time.Millisecond)
		for _, w := range []*watcher{w1, w2} {
			w.mu.Lock()
			worst = max(worst, time.Since(w.lastAt))
			w.mu.Unlock()
		}
	}
	if w1.deltas() == n1 || w2.deltas() == n2 {
		t.Errorf("clients received nothing while Redis was down: %d→%d, %d→%d deltas", n1, w1.deltas(), n2, w2.deltas())
	}
	t.Logf("while Redis was down for 10 s: %d and %d deltas delivered; longest silence %s", w1.deltas()-n1, w2.deltas()-n2, worst)
	c.redis.start()
	time.Sleep(time.Second)
	c.stopWriting()
	for _, w := range []*watcher{w1, w2} {
		w.converged(t, c.conn, 60*time.Second)
	}
}

// TestNodesStandbyTakeover runs two replicate nodes: the standby says whom
// it waits for (log and /v1/status), takes the slot after the active one
// is killed with -9, and the serve node's client misses nothing.
func TestNodesStandbyTakeover(t *testing.T) {
	c := newCluster(t)
	active := c.replicator()
	standby, sa := c.node("replicate", "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := standby.waitOutput(ctx, "waiting to take over"); err != nil {
		t.Fatal(err)
	}
	who := fmt.Sprintf("pid %d", active.cmd.Process.Pid)
	var st struct {
		Standby struct {
			WaitingFor string `json:"waiting_for"`
		} `json:"standby"`
	}
	code, body := httpGet(t, "http://"+sa+"/v1/status", "")
	if err := json.Unmarshal(body, &st); code != 200 || err != nil || !strings.Contains(st.Standby.WaitingFor, who) {
		t.Fatalf("standby /v1/status %d %s: want standby.waiting_for naming %q", code, body, who)
	}
	if !strings.Contains(standby.output(), who) {
		t.Errorf("the standby's log does not name %q:\n%s", who, standby.output())
	}
	_, a1 := c.node("serve", "")
	w := watchNode(t, "serve-1", wsURL(a1), "", 0)
	c.write()
	time.Sleep(1500 * time.Millisecond)
	killed := time.Now()
	active.kill9()
	if err := standby.waitOutput(ctx, "replication started"); err != nil {
		t.Fatal(err)
	}
	t.Logf("standby took the slot %s after the active node was killed", time.Since(killed).Round(time.Millisecond))
	time.Sleep(time.Second)
	c.stopWriting()
	w.converged(t, c.conn, 60*time.Second)
	if strings.Contains(standby.output(), "STARTING A NEW EPOCH") {
		t.Error("the takeover started a new epoch")
	}
}

// TestNodesStandbyTakeoverStopped stops the active node with SIGSTOP: its
// connection stays open, so the standby ends the silent holder's
// connections after bus.takeover_after and takes over. When the stopped
// node runs again it finds its connections gone, becomes the standby, and
// commits nothing twice: the store converges exactly and its log has no
// gap and no repeat.
func TestNodesStandbyTakeoverStopped(t *testing.T) {
	c := newCluster(t)
	active := c.replicator()
	standby, _ := c.node("replicate", "", "  takeover_after: 2s\n")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := standby.waitOutput(ctx, "waiting to take over"); err != nil {
		t.Fatal(err)
	}
	_, a1 := c.node("serve", "")
	w := watchNode(t, "serve-1", wsURL(a1), "", 0)
	c.write()
	time.Sleep(1500 * time.Millisecond)
	stopped := time.Now()
	active.cmd.Process.Signal(syscall.SIGSTOP) //nolint:errcheck
	if err := standby.waitOutput(ctx, "replication started"); err != nil {
		active.cmd.Process.Signal(syscall.SIGCONT) //nolint:errcheck
		t.Fatal(err)
	}
	t.Logf("standby took the slot %s after the active node was stopped (takeover_after 2s)", time.Since(stopped).Round(time.Millisecond))
	time.Sleep(time.Second)
	active.cmd.Process.Signal(syscall.SIGCONT) //nolint:errcheck
	if err := active.waitOutput(ctx, "waiting to take over"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	c.stopWriting()
	w.converged(t, c.conn, 60*time.Second)
	streamtest.WaitConverged(t, c.conn, 60*time.Second)
	streamtest.CheckLog(t, c.conn)
}

// TestNodesLostNewEpochReset starts a new epoch whose Reset never reaches
// the serve nodes (the new replicator publishes under another bus key, as
// a Reset lost to Redis would be): the nodes notice the epoch from the
// store by their periodic check, and every client resets and follows the
// new epoch; none hangs.
func TestNodesLostNewEpochReset(t *testing.T) {
	c := newCluster(t)
	r := c.replicator()
	_, a1 := c.node("serve", "")
	_, a2 := c.node("serve", "")
	w1 := watchNode(t, "serve-1", wsURL(a1), "", 0)
	w2 := watchNode(t, "serve-2", wsURL(a2), "", 0)
	c.write()
	time.Sleep(time.Second)
	if err := r.stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	var epoch string
	if err := c.conn.QueryRow(context.Background(), `SELECT epoch FROM repstream.meta`).Scan(&epoch); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, c.dbURL, c.name, "")
	if out, err := exec.Command(binary, "slot", "drop", "--config", cfg, "--yes").CombinedOutput(); err != nil {
		t.Fatalf("slot drop: %v\n%s", err, out)
	}
	p, _ := c.node("replicate", "", "  redis_key: somewhere-else\n")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := p.waitOutput(ctx, "replication started"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	c.stopWriting()
	for _, w := range []*watcher{w1, w2} {
		w.converged(t, c.conn, 60*time.Second)
		e, _ := w.c.Cursor()
		if e == epoch || w.c.Stats().Resets == 0 {
			t.Errorf("%s: epoch %q (old %q), stats %+v: the client did not reset", w.name, e, epoch, w.c.Stats())
		}
	}
}

// TestNodesReplicatorLosesDatabase ends the active node's replication
// connection from the database side (a network cut, a DBA's
// pg_terminate_backend): one of the two replicate nodes holds the slot
// again at once, and the serve node's client misses nothing.
func TestNodesReplicatorLosesDatabase(t *testing.T) {
	c := newCluster(t)
	c.replicator()
	standby, _ := c.node("replicate", "")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := standby.waitOutput(ctx, "waiting to take over"); err != nil {
		t.Fatal(err)
	}
	_, a1 := c.node("serve", "")
	w := watchNode(t, "serve-1", wsURL(a1), "", 0)
	c.write()
	time.Sleep(time.Second)
	var old int32
	if err := c.conn.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1 AND active`, c.name).Scan(&old); err != nil {
		t.Fatal(err)
	}
	if _, err := c.conn.Exec(ctx, `SELECT pg_terminate_backend($1)`, old); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	for {
		var pid *int32
		if err := c.conn.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, c.name).Scan(&pid); err != nil {
			t.Fatal(err)
		}
		if pid != nil && *pid != old {
			break
		}
		if time.Since(cut) > 30*time.Second {
			t.Fatal("nobody took the slot again")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("the slot was held again %s after the active node's connection was ended", time.Since(cut).Round(time.Millisecond))
	time.Sleep(time.Second)
	c.stopWriting()
	w.converged(t, c.conn, 60*time.Second)
	streamtest.CheckLog(t, c.conn)
}
