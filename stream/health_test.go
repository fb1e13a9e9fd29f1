package stream_test

import (
	"context"
	neturl "net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/repstream/repstream/cdc/localpg"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/streamtest"
)

// A reported problem makes the engine not ready, with its reason, and shows
// in the problem gauge until it is resolved.
func TestProblemsMakeTheEngineNotReady(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	ctx := context.Background()
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, streamtest.Schema)
	e, stop := startEngine(t, url, name, &recorder{})
	defer stop()
	reg := prometheus.NewRegistry()
	e.RegisterMetrics(reg)
	if err := e.Readiness(ctx); err != nil {
		t.Fatalf("not ready before any problem: %v", err)
	}
	e.Report(stream.Problem{Code: "source_column_missing", Source: "public.reviews",
		Reason: "column rating is gone", Fix: "ALTER TABLE public.reviews ADD COLUMN rating int"})
	err := e.Readiness(ctx)
	if err == nil || !strings.Contains(err.Error(), "column rating is gone") || !strings.Contains(err.Error(), "ADD COLUMN rating") {
		t.Fatalf("readiness with a problem = %v, want its reason and fix", err)
	}
	if got := gauges(t, reg, "repstream_problem"); len(got) != 1 || got[0] != 1 {
		t.Fatalf("repstream_problem = %v, want one series at 1", got)
	}
	if got := gauges(t, reg, "repstream_ready"); len(got) != 1 || got[0] != 0 {
		t.Fatalf("repstream_ready = %v with a problem open, want 0", got)
	}
	ps := e.Problems()
	if len(ps) != 1 || ps[0].Code != "source_column_missing" || ps[0].Since.IsZero() {
		t.Fatalf("problems = %+v", ps)
	}
	e.Resolve("source_column_missing", "public.reviews")
	if err := e.Readiness(ctx); err != nil {
		t.Fatalf("not ready after the problem was resolved: %v", err)
	}
	if got := gauges(t, reg, "repstream_problem"); len(got) != 0 {
		t.Fatalf("repstream_problem = %v after resolve, want none", got)
	}
	if got := gauges(t, reg, "repstream_ready"); len(got) != 1 || got[0] != 1 {
		t.Fatalf("repstream_ready = %v after resolve, want 1", got)
	}
}

// gauges returns the values of every series of the gauge name.
func gauges(t *testing.T, g prometheus.Gatherer, name string) []float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				out = append(out, m.GetGauge().GetValue())
			}
		}
	}
	return out
}

// Readiness answers at once, not ready and saying why, when the database
// stops answering (connections black-holed, not closed).
func TestReadinessAnswersWhenTheDatabaseDoesNot(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, streamtest.Schema)
	u, err := neturl.Parse(url)
	if err != nil {
		t.Fatal(err)
	}
	proxy := streamtest.NewProxy(t, u.Host)
	e, stop := startEngine(t, proxy.URL(t, url), name, &recorder{})
	defer stop()
	defer proxy.Thaw() // before stop: the engine's last status goes through
	check := func(t *testing.T) {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- e.Readiness(context.Background()) }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "does not answer") {
				t.Fatalf("readiness with the database black-holed = %v, want 'does not answer'", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("readiness hangs while the database does not answer")
		}
	}
	t.Run("idle", func(t *testing.T) {
		proxy.Freeze()
		defer proxy.Thaw()
		check(t)
	})
	waitReadyWithin(t, e, 30*time.Second)
	t.Run("changes in flight", func(t *testing.T) {
		// Changes keep coming (written around the proxy): the reader has
		// received some it cannot apply when the network goes, and being
		// behind is not the reason it is not ready. The network may go
		// between two changes; then the case is tried again.
		for try := 1; ; try++ {
			waitReadyWithin(t, e, 30*time.Second)
			stopWriting := make(chan struct{})
			wrote := make(chan struct{})
			go func() {
				defer close(wrote)
				for {
					select {
					case <-stopWriting:
						return
					default:
					}
					if _, err := conn.Exec(context.Background(), `INSERT INTO reviews (seller_id, rating) VALUES (1, 5)`); err != nil {
						return
					}
				}
			}()
			time.Sleep(200 * time.Millisecond)
			proxy.Freeze()
			time.Sleep(100 * time.Millisecond)
			close(stopWriting)
			<-wrote
			if st := e.Status(); !st.Reader.CaughtUp {
				check(t)
				proxy.Thaw()
				return
			}
			proxy.Thaw()
			if try == 10 {
				t.Fatal("the reader was caught up each time the database was black-holed: the case is not exercised")
			}
		}
	})
}
