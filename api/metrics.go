package api

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	authFailures *prometheus.CounterVec
	closes       *prometheus.CounterVec
	received     *prometheus.CounterVec
	written      prometheus.Counter
	writtenBytes prometheus.Counter
	sessions     prometheus.Gauge
	http         *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "repstream", Subsystem: "api",
			Name: "auth_failures_total", Help: "Refused tokens, by reason (missing, expired, signature, malformed, forbidden, ...)."}, []string{"reason"}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "repstream", Subsystem: "api",
			Name: "ws_closes_total", Help: "WebSocket connections closed by the server, by close code."}, []string{"code"}),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "repstream", Subsystem: "api",
			Name: "ws_messages_received_total", Help: "Client messages received, by type."}, []string{"type"}),
		written: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "repstream", Subsystem: "api",
			Name: "ws_frames_sent_total", Help: "Frames written to WebSocket clients."}),
		writtenBytes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "repstream", Subsystem: "api",
			Name: "ws_sent_bytes_total", Help: "Bytes of frames written to WebSocket clients."}),
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "repstream", Subsystem: "api",
			Name: "ws_sessions", Help: "Open WebSocket sessions."}),
		http: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "repstream", Subsystem: "api",
			Name: "http_requests_total", Help: "REST requests, by route and status."}, []string{"route", "status"}),
	}
	if reg != nil {
		reg.MustRegister(m.authFailures, m.closes, m.received, m.written, m.writtenBytes, m.sessions, m.http)
	}
	return m
}
