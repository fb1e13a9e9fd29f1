package stream

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/repstream/repstream/cdc"
)

// engineMetrics are the pipeline's Prometheus figures. Counters and gauges
// are read from the engine at scrape time; the commit latency histogram is
// observed as commits happen.
type engineMetrics struct {
	e        *Engine
	commit   prometheus.Histogram
	newEpoch prometheus.Counter

	changes, txns, deltas, groups, skipped *prometheus.Desc
	lagBytes, lagSeconds, retained         *prometheus.Desc
	checkpoint, connected, ready, walLost  *prometheus.Desc
	restarts                               *prometheus.Desc
	problem                                *prometheus.Desc
}

func newEngineMetrics(e *Engine) *engineMetrics {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("repstream_"+name, help, nil, nil)
	}
	return &engineMetrics{
		e: e,
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "repstream_store_commit_seconds",
			Help:    "Time to write and commit one group of source transactions to the store.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		newEpoch: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "repstream_epochs_started_total",
			Help: "Snapshot loads that started a new epoch (first start, lost slot, changed sources).",
		}),
		changes:    d("source_changes_total", "Row changes of source tables applied."),
		txns:       d("source_transactions_total", "Source transactions applied."),
		deltas:     d("deltas_total", "Deltas produced."),
		groups:     d("store_commits_total", "Store transactions committed (each holds a group of source transactions)."),
		skipped:    d("source_transactions_skipped_total", "Source transactions skipped because they were applied before a restart."),
		lagBytes:   d("replication_lag_bytes", "WAL between the server's current position and the slot's confirmed flush position."),
		lagSeconds: d("replication_lag_seconds", "Delay from a source commit (or heartbeat) to its application."),
		retained:   d("slot_retained_wal_bytes", "WAL the slot holds back (current position minus restart_lsn)."),
		checkpoint: d("checkpoint_lsn", "The store's checkpoint LSN as a number."),
		connected:  d("replication_connected", "1 while the replication connection streams."),
		ready:      d("ready", "1 while replication is connected and caught up."),
		restarts:   d("replication_restarts_total", "Replication sessions that ended in an error and were retried."),
		walLost:    d("slot_wal_lost", "1 when the slot's wal_status is lost: the service will start a new epoch."),
		problem: prometheus.NewDesc("repstream_problem", "1 for each open problem that stops exact derivation (code, and the source table when one source stopped); see /v1/status for the reason and the fix.",
			[]string{"code", "source"}, nil),
	}
}

func (m *engineMetrics) Describe(ch chan<- *prometheus.Desc) {
	m.commit.Describe(ch)
	m.newEpoch.Describe(ch)
	for _, d := range []*prometheus.Desc{m.changes, m.txns, m.deltas, m.groups, m.skipped, m.lagBytes, m.lagSeconds,
		m.retained, m.checkpoint, m.connected, m.ready, m.walLost, m.restarts, m.problem} {
		ch <- d
	}
}

func (m *engineMetrics) Collect(ch chan<- prometheus.Metric) {
	m.commit.Collect(ch)
	m.newEpoch.Collect(ch)
	st := m.e.Status()
	c := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	g := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	c(m.changes, st.Stats.Changes)
	c(m.txns, st.Stats.Txns)
	c(m.deltas, st.Stats.Deltas)
	c(m.groups, st.Stats.Groups)
	c(m.skipped, st.Stats.Skipped)
	c(m.restarts, st.Restarts)
	g(m.lagSeconds, st.LagTime.Seconds())
	g(m.checkpoint, float64(st.Meta.Checkpoint))
	g(m.connected, b(st.Reader.Connected))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	g(m.ready, b(m.e.readiness()(ctx) == nil))
	for _, p := range m.e.Problems() {
		ch <- prometheus.MustNewConstMetric(m.problem, prometheus.GaugeValue, 1, p.Code, p.Source)
	}
	if s, ok, err := cdc.LookupSlot(ctx, m.e.pool, m.e.cfg.Slot); err == nil && ok {
		g(m.lagBytes, float64(s.LagBytes))
		g(m.retained, float64(s.RetainedBytes))
		g(m.walLost, b(s.WALStatus == "lost"))
	}
}

// RegisterMetrics registers the pipeline's metrics on r.
func (e *Engine) RegisterMetrics(r prometheus.Registerer) {
	r.MustRegister(e.metrics)
}
