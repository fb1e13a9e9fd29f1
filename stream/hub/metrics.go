package hub

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	conns    prometheus.Gauge
	subs     prometheus.Gauge
	txns     prometheus.Counter
	enqueued prometheus.Counter
	dropped  prometheus.Counter
	slow     prometheus.Counter
	encodes  prometheus.Counter
	flushes  prometheus.Counter
	replays  *prometheus.CounterVec
	busGaps  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		conns: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "repstream", Subsystem: "hub",
			Name: "connections", Help: "Connections registered with the hub."}),
		subs: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "repstream", Subsystem: "hub",
			Name: "subscriptions", Help: "Active subscriptions."}),
		txns: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "repstream", Subsystem: "hub",
			Name: "transactions_total", Help: "Source transactions fanned out."}),
		enqueued: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "repstream", Subsystem: "hub",
			Name: "frames_queued_total", Help: "Frames queued to connections."}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "repstream", Subsystem: "hub",
			Name: "frames_dropped_total", Help: "Frames dropped because their connection closed or overflowed."}),
		slow: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "repstream", Subsystem: "hub",
			Name: "slow_consumer_disconnects_total", Help: "Connections closed with 4008 because their queue overflowed."}),
		encodes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "repstream", Subsystem: "hub",
			Name: "delta_encodings_total", Help: "Deltas encoded (once per codec in use)."}),
		flushes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "repstream", Subsystem: "hub",
			Name: "throttle_flushes_total", Help: "Frames of coalesced deltas sent to throttled subscriptions."}),
		replays: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "repstream", Subsystem: "hub",
			Name: "catchups_total", Help: "Subscriptions caught up, by source: ring, log, snapshot, snapshot_reset."}, []string{"mode"}),
		busGaps: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "repstream", Subsystem: "hub",
			Name: "bus_gaps_total", Help: "Gaps detected in the bus stream (every connection was closed to resume)."}),
	}
	if reg != nil {
		reg.MustRegister(m.conns, m.subs, m.txns, m.enqueued, m.dropped, m.slow, m.encodes, m.flushes, m.replays, m.busGaps)
	}
	return m
}
