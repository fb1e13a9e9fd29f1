package bench

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
)

// row is one line of the results table.
type row struct {
	Measurement string
	Baseline    string
	Result      string
	Ratio       string
	Target      string
	Verdict     string
}

func (e *env) add(r row) {
	e.rows = append(e.rows, r)
	e.logf("  %s: %s (baseline %s; ratio %s; target %s) %s", r.Measurement, r.Result, r.Baseline, r.Ratio, r.Target, r.Verdict)
}

func (e *env) note(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	e.notes = append(e.notes, s)
	e.logf("  note: %s", s)
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT MET"
}

func esc(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// render is RESULTS.md.
func (e *env) render(took time.Duration) string {
	var b strings.Builder
	cores, mem := machine()
	mode := "full"
	if e.o.Quick {
		mode = "quick (BENCH_QUICK=1: smaller sizes, fewer runs)"
	}
	fmt.Fprintf(&b, "# repstream benchmark results\n\n")
	fmt.Fprintf(&b, "Written by `make bench` (`repstream bench`, cmd/repstream/bench). Each figure is the median of %d runs unless it says otherwise; baselines were measured in the same run on the same machine.\n\n", e.runs)
	fmt.Fprintf(&b, "- date: %s\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "- machine: %d cores, %.1f GiB memory, %s/%s, %s\n", cores, mem, runtime.GOOS, runtime.GOARCH, runtime.Version())
	fmt.Fprintf(&b, "- Postgres: %s (throwaway cluster, fsync on, synchronous_commit on, shared_buffers 128MB)\n", e.pgVer)
	fmt.Fprintf(&b, "- mode: %s; the whole run took %s\n", mode, took.Round(time.Second))
	fmt.Fprintf(&b, "- 1-minute load average at the start and the end: %s and %s (above 2 means other jobs shared the cores)\n", e.loadStart, loadavg())
	fmt.Fprintf(&b, "- Postgres, the service and the client process share the cores: every figure includes that contention.\n\n")
	b.WriteString("| measurement | baseline | result | ratio | target (2 cores) | verdict |\n|---|---|---|---|---|---|\n")
	for _, r := range e.rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", esc(r.Measurement), esc(r.Baseline), esc(r.Result), esc(r.Ratio), esc(r.Target), esc(r.Verdict))
	}
	if len(e.notes) > 0 {
		b.WriteString("\n## Notes\n\n")
		for _, n := range e.notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	b.WriteString(methodText)
	return b.String()
}

const methodText = `
## How each figure is measured

Each measurement starts with a Postgres CHECKPOINT, so the WAL one
measurement wrote is not flushed during the next.

- **backlog drain**: the service is stopped (SIGTERM), a second slot is
  created on the same publication, and N single-row review transactions
  (and, separately, N rows in 1,000-row transactions) are committed. Then
  ` + "`pg_recvlogical --start -o proto_version=1 -o publication_names=repstream -E <end>`" + `
  drains the second slot to stdout (/dev/null): the raw decode rate. Then the
  service is started and timed from process start until the last backlog
  transaction's delta is in repstream.subjects (so startup, migrations check and
  replication connect are included).
- **sustained ingest**: pgbench (single-row INSERT into reviews, prepared,
  several client counts) measures Postgres's own maximum with the service
  stopped; then the same pgbench runs with the service on, and the lag is
  sampled every 50 ms as the age of the oldest WAL position not yet covered
  by the service's committed checkpoint (repstream.meta).
- **latency**: one writer in the bench process commits single-row
  transactions at 1,000/s, each for a new subject; latency runs from the
  moment COMMIT returns on the writer to the moment the frame for that subject
  reaches a WebSocket client in the bench process (the service is another
  process). The baseline is the same writer with ` + "`pg_recvlogical`" + ` on its own slot,
  its stdout read by the bench process and each row's bytes timestamped as they
  arrive. Negative baseline samples are possible: the walsender may send a
  commit before the committing backend's reply reaches the writer.
- **fan-out**: 10,000 WebSockets in the client process, each subscribed to
  one of 100 subjects (100 subscribers per subject). Transactions of 10 rows
  for 10 distinct subjects are committed at a rising rate; latency runs from
  the source commit timestamp (after.updated_at, millisecond precision, so
  up to +1 ms) to the frame's arrival. A step is held if p99 ≤ 50 ms, at least
  95% of the expected deliveries arrived, and no connection was dropped.
  The baseline, the floor, is the same ramp with the same client process
  against a bare gorilla/websocket broadcast server (` + "`repstream bench floor`" + `:
  a reader and a writer goroutine per connection, a channel between them,
  no Postgres, no store, no hub), which sends the deltas itself: what the
  floor cannot hold on this machine, no server built that way can.
- **memory per idle connection**: service RSS (VmRSS) before and after the
  10,000 connections connected and subscribed, divided by 10,000. Beside
  it, the Go heap and stacks in use (go_memstats_heap_inuse_bytes +
  go_memstats_stack_inuse_bytes from /metrics), before and after: RSS also
  holds the garbage collector's headroom (GOGC=100 lets the heap reach twice
  what is live) and memory freed after the connect burst that the runtime
  has not yet returned to the kernel. The second row repeats it on a service
  restarted with GOGC=25, which keeps less headroom at some CPU (see the
  README's note on memory).
- **resume**: a client 10,000 deltas behind on one subject resubscribes with
  its cursor; time from sending subscribe to the 10,000th delta (in memory:
  the hub's ring; from the store: the service restarted with api.ring_deltas: -1).
- **reconnect storm**: the client process drops all 10,000 connections and
  redials them all at once, each resuming from its cursor while a light
  write load continues; time until each has its subscribed message.
- **JSON vs protobuf**: in-process encode of a representative delta
  (testing.Benchmark) and its frame size.
- **one huge source transaction**: for 1M rows, then 5M, and each shape
  (inserts; updates of the rows just inserted; a mix of deletes, updates
  and inserts; deletes), the service is restarted, one statement commits
  the whole transaction, and a marker transaction committed after it tells
  when it has been applied. The result is the service's peak RSS (VmHWM:
  startup included, so it is the process's peak, not its growth), with
  its Go heap and stacks in use sampled every 100 ms from /metrics beside
  it. Single runs; after each the derived state must equal the SQL
  recomputation.
- **several nodes, bus against no bus**: a writer commits single-row
  reviews (about 150–200 a second) while 50 clients of ` + "`seller:*`" + ` run for 10 s
  against one serve node fed over Redis by the replicating node (the
  standby and the second serve node stopped), then against one node that
  replicates and serves with no bus (the same configuration without
  ` + "`bus:`" + `, the same slot). Latency is arrival − the source commit timestamp. The
  window opens once every client has had its first delta (it is past its
  snapshot of every seller) and a second has passed, the same for the
  nginx row.
  CPU is utime + stime from /proc/<pid>/stat of the processes named,
  Redis's included, over the same 10 s, divided by the deliveries: each
  transaction is delivered 50 times, so the replicating side's work per
  transaction is spread over 50 deliveries.
- **several nodes, nginx**: the same writer and 50 clients for 10 s,
  alternately against one serve node directly and through nginx
  (Debian's package, ` + "`deploy/nginx/repstream.conf`" + ` as shipped, one process:
  ` + "`master_process off`" + `) balancing two serve nodes. nginx's CPU per
  delivery is the overhead of the proxy; the serve nodes' CPU is given
  both ways.
- **primary failover**: on the pinned PostgreSQL 17, a primary, a physical
  standby made by a cold copy of its data directory (hot_standby_feedback
  on; with the synchronized slot, sync_replication_slots on the standby and
  synchronized_standby_slots on the primary) and a TCP proxy in front of
  the primary, which ` + "`serve`" + ` and a writer (one review every 5 ms) use.
  With the slot synchronized (waited for), the primary is stopped in
  immediate mode (no shutdown checkpoint, as kill -9), the standby promoted
  (` + "`pg_ctl promote -w`" + `) and the proxy moved to it; the writer, paused during
  the switch, then writes marker sellers, and the time runs to the first
  marker delta at a WebSocket client of ` + "`serve`" + `. Without the synchronized
  slot the same, with a new epoch: the client must reset (checked) before
  that delta. Each run builds the topology afresh.
`

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}
