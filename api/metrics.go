package api

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type metrics struct {
	authFailures *prometheus.CounterVec
	closes       *prometheus.CounterVec
	received     *prometheus.CounterVec
	written      prometheus.Counter
	writtenBytes prometheus.Counter
	sessions     prometheus.Gauge
	http         *prometheus.CounterVec
	// storeRefusals counts requests refused because the store did not
	// answer: a node behind a load balancer that hands its clients away.
	storeRefusals prometheus.Counter
}

// newMetrics creates the API's metrics, registered with reg unless it is nil.
func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg) // registers each metric as it is made; nil registers nothing
	opts := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: "repstream", Subsystem: "api", Name: name, Help: help}
	}
	counterVec := func(name, help string, labels ...string) *prometheus.CounterVec {
		return f.NewCounterVec(prometheus.CounterOpts(opts(name, help)), labels)
	}
	counter := func(name, help string) prometheus.Counter {
		return f.NewCounter(prometheus.CounterOpts(opts(name, help)))
	}
	return &metrics{
		authFailures:  counterVec("auth_failures_total", "Refused tokens, by reason (missing, expired, signature, malformed, forbidden, ...).", "reason"),
		closes:        counterVec("ws_closes_total", "WebSocket connections closed by the server, by close code.", "code"),
		received:      counterVec("ws_messages_received_total", "Client messages received, by type.", "type"),
		written:       counter("ws_frames_sent_total", "Frames written to WebSocket clients."),
		writtenBytes:  counter("ws_sent_bytes_total", "Bytes of frames written to WebSocket clients."),
		sessions:      f.NewGauge(prometheus.GaugeOpts(opts("ws_sessions", "Open WebSocket sessions."))),
		http:          counterVec("http_requests_total", "REST requests, by route and status.", "route", "status"),
		storeRefusals: counter("store_refusals_total", "WebSocket upgrades and REST reads refused with 503 because this node's store did not answer."),
	}
}
