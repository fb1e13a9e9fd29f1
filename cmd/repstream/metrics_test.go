package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/repstream/repstream/api/client"
	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/cdc/localpg"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/streamtest"
)

var listenRE = regexp.MustCompile(`repstream listening"? addr=(\S+)`)

// listenAddr waits for the "repstream listening" line and returns the
// address it names.
func listenAddr(t testing.TB, p *proc) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := p.waitOutput(ctx, "repstream listening"); err != nil {
		t.Fatal(err)
	}
	m := listenRE.FindStringSubmatch(p.output())
	if m == nil {
		t.Fatalf("no listen address in the log:\n%s", p.output())
	}
	return m[1]
}

// httpGet does a GET with an optional bearer token and returns the status
// code and body.
func httpGet(t testing.TB, url, token string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, b
}

// statusOK is GET /v1/status, which must answer 200.
func statusOK(t testing.TB, base, token string) map[string]any {
	t.Helper()
	code, body := httpGet(t, base+"/v1/status", token)
	if code != http.StatusOK {
		t.Fatalf("GET /v1/status: %d %s", code, body)
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.UseNumber()
	var st map[string]any
	if err := dec.Decode(&st); err != nil {
		t.Fatalf("GET /v1/status: %v in %s", err, body)
	}
	return st
}

// statusNum reads a numeric field of a status.
func statusNum(t testing.TB, st map[string]any, key string) float64 {
	t.Helper()
	n, ok := st[key].(json.Number)
	if !ok {
		t.Fatalf("/v1/status %q is %T %v, want a number (status %v)", key, st[key], st[key], st)
	}
	f, err := n.Float64()
	if err != nil {
		t.Fatalf("/v1/status %q: %v", key, err)
	}
	return f
}

// statusLSN reads an LSN field of a status as a number.
func statusLSN(t testing.TB, st map[string]any, key string) stream.LSN {
	t.Helper()
	s, ok := st[key].(string)
	if !ok {
		t.Fatalf("/v1/status %q is %T %v, want an LSN string", key, st[key], st[key])
	}
	l, err := stream.ParseLSN(s)
	if err != nil {
		t.Fatalf("/v1/status %q: %v", key, err)
	}
	return l
}

// metricFamilies scrapes /metrics and parses it with the Prometheus text
// parser.
type metricFamilies map[string]*dto.MetricFamily

func scrape(t testing.TB, base string) metricFamilies {
	t.Helper()
	code, body := httpGet(t, base+"/metrics", "")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return mfs
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	case m.Summary != nil:
		return float64(m.Summary.GetSampleCount())
	}
	return 0
}

// has reports whether the family exists with at least one sample.
func (mfs metricFamilies) has(name string) bool {
	mf := mfs[name]
	return mf != nil && len(mf.Metric) > 0
}

// value is the sum of a family's samples over every label set (histograms:
// the sample count); it fails the test when the family is absent.
func (mfs metricFamilies) value(t testing.TB, name string) float64 {
	t.Helper()
	mf := mfs[name]
	if mf == nil || len(mf.Metric) == 0 {
		t.Fatalf("metric %s missing (families: %s)", name, strings.Join(mfs.names(), ", "))
	}
	var v float64
	for _, m := range mf.Metric {
		v += metricValue(m)
	}
	return v
}

func (mfs metricFamilies) names() []string {
	out := make([]string, 0, len(mfs))
	for n := range mfs {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (mfs metricFamilies) kind(name string) dto.MetricType {
	if mf := mfs[name]; mf != nil {
		return mf.GetType()
	}
	return -1
}

// hs256Token signs an admin token (for /v1/status) granting subjects,
// valid for an hour.
func hs256Token(t testing.TB, secret []byte, subjects ...string) string {
	t.Helper()
	tok, err := mintToken(secret, "metrics-test", subjects, time.Hour, true)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestMetricsAfterKnownTraffic runs the service as a process with JWT auth,
// subscribes one WebSocket client, writes exactly K source transactions
// whose deltas are known in advance, and checks /metrics (parsed with the
// Prometheus text parser) against them and against /v1/status. Then, with
// the writer stopped, heartbeats keep the lag small and the slot advancing.
func TestMetricsAfterKnownTraffic(t *testing.T) {
	dbURL, name := localpg.NewDatabase(t)
	ctx := context.Background()
	conn := streamtest.Connect(t, dbURL)
	streamtest.Exec(t, conn, streamtest.Schema)

	dir := t.TempDir()
	secret := []byte("metrics-test-secret-0123456789-abcdefghijklmnop")
	secretFile := filepath.Join(dir, "jwt")
	if err := os.WriteFile(secretFile, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "repstream.yaml")
	body := fmt.Sprintf("database_url: %q\npublication: %s\nslot: %s\nlisten: 127.0.0.1:0\nheartbeat: 200ms\nauth:\n  jwt_hs256_secret_file: %q\n%s",
		dbURL, name, name, secretFile, streamtest.SourcesYAML)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	token := hs256Token(t, secret, "*")

	p := start(t, nil, "serve", "--config", cfg)
	addr := listenAddr(t, p)
	base := "http://" + addr
	waitReady(t, base, 60*time.Second)

	// One WebSocket connection with one subscription.
	var (
		mu         sync.Mutex
		subscribed bool
		applied    = map[string]int{}
	)
	h := &foldHandler{}
	cl, err := client.New(client.Options{
		URL: "ws://" + addr + "/v1/stream", Handler: h, Prefix: "seller:",
		Token: func(context.Context) (string, error) { return token, nil },
		Trace: func(m wire.ServerMessage) {
			mu.Lock()
			defer mu.Unlock()
			switch m.Type {
			case wire.TypeSubscribed:
				subscribed = true
			case wire.TypeDelta, wire.TypeDeltas:
				for _, d := range m.Deltas {
					applied[d.Subject]++
				}
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer runClient(ctx, t, cl)()
	waitFor(t, 30*time.Second, "the client's subscription", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return subscribed
	})

	// Exactly K source transactions. Each inserts a published review for
	// one seller (sometimes two reviews for that seller: still one delta),
	// a hidden review (filtered out: no delta), and every third one rates a
	// user (one more delta).
	const K = 30
	wantDeltas := 0
	wantSeller := map[string]int{}
	for i := 0; i < K; i++ {
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		seller := i % 4
		n := 1 + i%2
		for j := 0; j < n; j++ {
			if _, err := tx.Exec(ctx, `INSERT INTO reviews (seller_id, rating, status) VALUES ($1, $2, 'published')`, seller, 1+(i+j)%5); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO reviews (seller_id, rating, status) VALUES ($1, 5, 'hidden')`, 100+i); err != nil {
			t.Fatal(err)
		}
		wantDeltas++
		wantSeller[fmt.Sprintf("seller:%d", seller)]++
		if i%3 == 0 {
			if _, err := tx.Exec(ctx, `INSERT INTO ratings VALUES ($1, $2, $3)`, i%5, i, i%11); err != nil {
				t.Fatal(err)
			}
			wantDeltas++
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	streamtest.WaitConverged(t, conn, 30*time.Second)
	waitFor(t, 30*time.Second, "the client to receive every seller delta", func() bool {
		mu.Lock()
		defer mu.Unlock()
		got := 0
		for _, n := range applied {
			got += n
		}
		return got >= K
	})
	mu.Lock()
	for s, n := range wantSeller {
		if applied[s] != n {
			t.Errorf("client received %d deltas for %s, want %d", applied[s], s, n)
		}
	}
	if len(applied) != len(wantSeller) {
		t.Errorf("client received deltas for %v, want %v", applied, wantSeller)
	}
	mu.Unlock()

	// One request with a bad token.
	if code, b := httpGet(t, base+"/v1/status", "not-a-token"); code != http.StatusUnauthorized {
		t.Fatalf("GET /v1/status with a bad token: %d %s, want 401", code, b)
	}

	// Counters and the checkpoint move with heartbeats: scrape between two
	// identical statuses so the three readings agree.
	var mfs metricFamilies
	var st map[string]any
	for i := 0; ; i++ {
		st1 := statusOK(t, base, token)
		mfs = scrape(t, base)
		st = statusOK(t, base, token)
		if st1["checkpoint_lsn"] == st["checkpoint_lsn"] && st1["deltas"] == st["deltas"] && st1["transactions_applied"] == st["transactions_applied"] {
			break
		}
		if i == 50 {
			t.Fatalf("/v1/status kept changing: %v then %v", st1, st)
		}
	}
	t.Logf("metric families (%d): %s", len(mfs), strings.Join(mfs.names(), " "))
	t.Logf("status: %v", st)

	// Engine.
	txns := mfs.value(t, "repstream_source_transactions_total")
	if txns < K {
		t.Errorf("repstream_source_transactions_total = %v, want >= %d", txns, K)
	} else if txns != K {
		t.Logf("repstream_source_transactions_total = %v (K = %d)", txns, K)
	}
	if _, ok := st["transactions_applied"]; !ok {
		t.Errorf("/v1/status has no transactions_applied: nothing to compare repstream_source_transactions_total with")
	} else if n := statusNum(t, st, "transactions_applied"); n != txns {
		t.Errorf("repstream_source_transactions_total = %v, /v1/status transactions_applied = %v", txns, n)
	}
	if d := mfs.value(t, "repstream_deltas_total"); d != float64(wantDeltas) {
		t.Errorf("repstream_deltas_total = %v, want %d", d, wantDeltas)
	}
	if d, s := mfs.value(t, "repstream_deltas_total"), statusNum(t, st, "deltas"); d != s {
		t.Errorf("repstream_deltas_total = %v, /v1/status deltas = %v", d, s)
	}
	// 1 or 2 published reviews, one hidden review, and every third a rating.
	wantChanges := 0
	for i := 0; i < K; i++ {
		wantChanges += 1 + i%2 + 1
		if i%3 == 0 {
			wantChanges++
		}
	}
	if c := mfs.value(t, "repstream_source_changes_total"); c != float64(wantChanges) {
		t.Errorf("repstream_source_changes_total = %v, want %d", c, wantChanges)
	}
	if c, s := mfs.value(t, "repstream_source_changes_total"), statusNum(t, st, "changes_applied"); c != s {
		t.Errorf("repstream_source_changes_total = %v, /v1/status changes_applied = %v", c, s)
	}
	if c, s := mfs.value(t, "repstream_checkpoint_lsn"), statusLSN(t, st, "checkpoint_lsn"); c != float64(s) {
		t.Errorf("repstream_checkpoint_lsn = %v, /v1/status checkpoint_lsn = %s (%d)", c, s, uint64(s))
	}
	if !mfs.has("repstream_replication_lag_bytes") {
		t.Errorf("repstream_replication_lag_bytes missing")
	} else if v := mfs.value(t, "repstream_replication_lag_bytes"); v < 0 {
		t.Errorf("repstream_replication_lag_bytes = %v, want >= 0", v)
	}
	if mfs.kind("repstream_store_commit_seconds") != dto.MetricType_HISTOGRAM {
		t.Errorf("repstream_store_commit_seconds is %v, want a histogram", mfs.kind("repstream_store_commit_seconds"))
	} else if n := mfs.value(t, "repstream_store_commit_seconds"); n <= 0 {
		t.Errorf("repstream_store_commit_seconds_count = %v, want > 0", n)
	} else if g := mfs.value(t, "repstream_store_commits_total"); g != n {
		t.Errorf("repstream_store_commits_total = %v, repstream_store_commit_seconds_count = %v: every commit is observed once", g, n)
	}
	if v := mfs.value(t, "repstream_epochs_started_total"); v != 1 {
		t.Errorf("repstream_epochs_started_total = %v, want 1 (the first load)", v)
	}
	if v := mfs.value(t, "repstream_replication_connected"); v != 1 {
		t.Errorf("repstream_replication_connected = %v, want 1", v)
	}
	if v := mfs.value(t, "repstream_ready"); v != 1 {
		t.Errorf("repstream_ready = %v, want 1", v)
	}
	if v := mfs.value(t, "repstream_slot_wal_lost"); v != 0 {
		t.Errorf("repstream_slot_wal_lost = %v, want 0", v)
	}
	for _, n := range []string{"repstream_source_transactions_total", "repstream_deltas_total", "repstream_source_changes_total",
		"repstream_store_commits_total", "repstream_epochs_started_total", "repstream_source_transactions_skipped_total"} {
		if k := mfs.kind(n); k != dto.MetricType_COUNTER {
			t.Errorf("%s is %v, want a counter", n, k)
		}
	}
	for _, n := range []string{"repstream_checkpoint_lsn", "repstream_replication_lag_bytes", "repstream_replication_lag_seconds",
		"repstream_slot_retained_wal_bytes", "repstream_replication_connected", "repstream_ready", "repstream_slot_wal_lost",
		"repstream_hub_connections", "repstream_hub_subscriptions", "repstream_api_ws_sessions"} {
		if k := mfs.kind(n); k != dto.MetricType_GAUGE {
			t.Errorf("%s is %v, want a gauge", n, k)
		}
	}

	// Hub and API.
	for n, want := range map[string]float64{
		"repstream_hub_connections":   1,
		"repstream_hub_subscriptions": 1,
		"repstream_api_ws_sessions":   1,
	} {
		if v := mfs.value(t, n); v != want {
			t.Errorf("%s = %v, want %v", n, v, want)
		}
	}
	if c, s := statusNum(t, st, "connections"), statusNum(t, st, "subscriptions"); c != 1 || s != 1 {
		t.Errorf("/v1/status connections = %v, subscriptions = %v, want 1 and 1", c, s)
	}
	for _, n := range []string{"repstream_api_ws_frames_sent_total", "repstream_api_ws_sent_bytes_total",
		"repstream_hub_frames_queued_total", "repstream_hub_transactions_total"} {
		if v := mfs.value(t, n); v <= 0 {
			t.Errorf("%s = %v, want > 0", n, v)
		}
	}
	if v := mfs.value(t, "repstream_api_auth_failures_total"); v != 1 {
		t.Errorf("repstream_api_auth_failures_total = %v (all reasons), want 1 after one bad token", v)
	}
	if v := mfs.value(t, "repstream_hub_slow_consumer_disconnects_total"); v != 0 {
		t.Errorf("repstream_hub_slow_consumer_disconnects_total = %v, want 0", v)
	}

	// Idle: the writer has stopped; heartbeats keep the lag small and the
	// slot's confirmed position moving.
	first := confirmedFlush(t, conn, name)
	prev := first
	for round := 0; round < 3; round++ {
		waitFor(t, 15*time.Second, "the slot's confirmed_flush_lsn to advance while idle", func() bool {
			if cur := confirmedFlush(t, conn, name); cur > prev {
				prev = cur
				return true
			}
			return false
		})
	}
	t.Logf("confirmed_flush_lsn advanced while idle: %s -> %s", first, prev)
	mfs = scrape(t, base)
	if lag := mfs.value(t, "repstream_replication_lag_seconds"); lag < 0 || lag > 3 {
		t.Errorf("repstream_replication_lag_seconds = %v on an idle database with heartbeat 200ms, want < 3s", lag)
	}
	st = statusOK(t, base, token)
	if lag := statusNum(t, st, "lag_seconds"); lag < 0 || lag > 3 {
		t.Errorf("/v1/status lag_seconds = %v on an idle database with heartbeat 200ms, want < 3s", lag)
	}
	if v := mfs.value(t, "repstream_replication_lag_bytes"); v < 0 || v > 1<<20 {
		t.Errorf("repstream_replication_lag_bytes = %v on an idle database, want small", v)
	}
	if v := mfs.value(t, "repstream_deltas_total"); v != float64(wantDeltas) {
		t.Errorf("repstream_deltas_total = %v after idling, want still %d", v, wantDeltas)
	}
}

// confirmedFlush is the slot's confirmed_flush_lsn.
func confirmedFlush(t testing.TB, conn *pgx.Conn, slot string) stream.LSN {
	t.Helper()
	var s string
	err := conn.QueryRow(context.Background(), `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&s)
	if err != nil {
		t.Fatalf("slot %s: %v", slot, err)
	}
	l, err := stream.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// waitReady polls /readyz until it answers 200.
func waitReady(t testing.TB, base string, within time.Duration) {
	t.Helper()
	waitFor(t, within, base+"/readyz", func() bool {
		code, _ := httpGet(t, base+"/readyz", "")
		return code == http.StatusOK
	})
}

// waitFor polls cond every 50ms until it holds.
func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// foldHandler folds what a client applies into a map of states.
type foldHandler struct {
	mu     sync.Mutex
	states map[string]stream.State
	resets []string
}

func (f *foldHandler) Reset(epoch string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.states = map[string]stream.State{}
	f.resets = append(f.resets, epoch)
}

func (f *foldHandler) State(s stream.State) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.states == nil {
		f.states = map[string]stream.State{}
	}
	f.states[s.Subject] = s
}

func (f *foldHandler) Delta(d stream.Delta) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.states == nil {
		f.states = map[string]stream.State{}
	}
	s := d.After
	s.Subject, s.LSN, s.Version = d.Subject, d.LSN, d.Version
	f.states[d.Subject] = s
}

func (f *foldHandler) snapshot() (map[string]stream.State, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]stream.State, len(f.states))
	for k, v := range f.states {
		out[k] = v
	}
	return out, append([]string(nil), f.resets...)
}

// runClient runs cl until the returned stop is called, which reports a
// failed run.
func runClient(ctx context.Context, t *testing.T, cl *client.Client) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- cl.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("client: %v", err)
		}
	}
}
