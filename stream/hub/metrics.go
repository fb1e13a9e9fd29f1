package hub

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

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

	boardFrames prometheus.Counter
	boards      prometheus.Gauge
	boardStates prometheus.Gauge
}

// newMetrics creates the hub's metrics, registered with reg unless it is nil.
func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg) // registers each metric as it is made; nil registers nothing
	opts := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: "repstream", Subsystem: "hub", Name: name, Help: help}
	}
	counter := func(name, help string) prometheus.Counter {
		return f.NewCounter(prometheus.CounterOpts(opts(name, help)))
	}
	gauge := func(name, help string) prometheus.Gauge {
		return f.NewGauge(prometheus.GaugeOpts(opts(name, help)))
	}
	return &metrics{
		conns:    gauge("connections", "Connections registered with the hub."),
		subs:     gauge("subscriptions", "Active subscriptions."),
		txns:     counter("transactions_total", "Source transactions fanned out."),
		enqueued: counter("frames_queued_total", "Frames queued to connections."),
		dropped:  counter("frames_dropped_total", "Frames dropped because their connection closed or overflowed."),
		slow:     counter("slow_consumer_disconnects_total", "Connections closed with 4008 because their queue overflowed."),
		encodes:  counter("delta_encodings_total", "Deltas encoded (once per codec in use)."),
		flushes:  counter("throttle_flushes_total", "Frames of coalesced deltas sent to throttled subscriptions."),
		replays: f.NewCounterVec(prometheus.CounterOpts(opts("catchups_total",
			"Subscriptions caught up, by source: ring, log, snapshot, snapshot_reset.")), []string{"mode"}),
		busGaps:     counter("bus_gaps_total", "Gaps detected in the bus stream (every connection was closed to resume)."),
		boardFrames: counter("board_frames_total", "Leaderboard frames sent to subscriptions (a change of their top N)."),
		boards:      gauge("boards", "Leaderboards kept (one per prefix and order subscribed)."),
		boardStates: gauge("board_states", "Subjects the leaderboards rank, summed over boards (each holds every subject of its prefix)."),
	}
}
