// Package api serves PROTOCOL.md: the WebSocket stream (GET /v1/stream,
// JSON and protobuf subprotocols), the REST endpoints, JWT authentication,
// health, status and metrics.
package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/go-chi/cors"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/hub"
)

// StatusFunc reports the replication status for GET /v1/status (epoch,
// slot, publication, checkpoint_lsn, confirmed_flush_lsn, server_lsn,
// lag_bytes, lag_seconds, ...). The server adds connections and
// subscriptions.
type StatusFunc func(ctx context.Context) (map[string]any, error)

// Options configure NewServer.
type Options struct {
	Config Config
	// Auth verifies tokens. Required (build it with NewAuthenticator).
	Auth *Authenticator
	// Log is the store's read side. Required.
	Log stream.Log
	// Bus, when set, is followed by Run: this node's hub is fed from it
	// instead of by the pipeline directly.
	Bus hub.Bus
	// Follow tunes how the hub follows Bus.
	Follow hub.FollowConfig
	// Status serves /v1/status; nil serves only the API's own figures.
	Status StatusFunc
	// Ready answers /readyz: nil when replication is connected and caught
	// up, else why not. It must answer within a second; nil means always ready.
	Ready func(context.Context) error
	// Registerer receives the hub's and API's metrics; Gatherer serves
	// /metrics. Both nil: prometheus.DefaultRegisterer/DefaultGatherer.
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer
	Logger     *slog.Logger
	// Version is announced in welcome as "repstream/<Version>".
	Version string
}

// Server is the API. Create it with NewServer, serve Handler, give Hub to
// the pipeline as its stream.Publisher (or Options.Bus), call Run, and on
// the way out Shutdown before the http.Server's own Shutdown (which leaves
// hijacked WebSockets alone).
type Server struct {
	cfg     Config
	auth    *Authenticator
	log     stream.Log
	bus     hub.Bus
	follow  hub.FollowConfig
	hub     *hub.Hub
	status  StatusFunc
	ready   func(context.Context) error
	gather  prometheus.Gatherer
	logger  *slog.Logger
	m       *metrics
	version string
	codecs  []wire.Codec
	store   storeCheck
	cors    *cors.Cors

	mu       sync.Mutex
	draining bool           // guarded by mu
	sessions sync.WaitGroup // Add only under mu while not draining
	nconns   atomic.Int64
	handler  http.Handler

	wsMu sync.Mutex
	ws   *wsShared // guarded by wsMu; the sessions' pinger and drain goroutines, while there are sessions
}

// NewServer checks the options and builds the server and its hub.
func NewServer(o Options) (*Server, error) {
	if err := o.Config.Validate(); err != nil {
		return nil, err
	}
	if o.Auth == nil {
		return nil, errors.New("api: Options.Auth is required")
	}
	if o.Log == nil {
		return nil, errors.New("api: Options.Log is required")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Registerer == nil && o.Gatherer == nil {
		o.Registerer, o.Gatherer = prometheus.DefaultRegisterer, prometheus.DefaultGatherer
	}
	if o.Gatherer == nil {
		if g, ok := o.Registerer.(prometheus.Gatherer); ok {
			o.Gatherer = g
		} else {
			o.Gatherer = prometheus.DefaultGatherer
		}
	}
	if o.Ready == nil {
		o.Ready = func(context.Context) error { return nil }
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	s := &Server{
		cfg: o.Config.withDefaults(), auth: o.Auth, bus: o.Bus, follow: o.Follow, status: o.Status, ready: o.Ready,
		gather: o.Gatherer, logger: o.Logger, m: newMetrics(o.Registerer), version: o.Version, codecs: wire.Codecs(),
	}
	s.store.log = o.Log
	s.log = answeredLog{Log: o.Log, c: &s.store}
	hcs := make([]hub.Codec, len(s.codecs))
	for i, c := range s.codecs {
		hcs[i] = c
	}
	s.hub = hub.New(hub.Options{Log: s.log, Codecs: hcs, Config: o.Config.HubConfig(), Registerer: o.Registerer, Logger: o.Logger})
	s.cors = s.corsPolicy()
	s.handler = s.routes()
	return s, nil
}

// Hub is the node's fan-out; it is the pipeline's stream.Publisher when
// no bus is used.
func (s *Server) Hub() *hub.Hub { return s.hub }

// Handler serves every endpoint.
func (s *Server) Handler() http.Handler { return s.handler }

// Run drives the hub (ticks, and following the bus if one is set) until
// ctx is done.
func (s *Server) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	var busErr error
	if s.bus != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			busErr = s.hub.Follow(ctx, s.bus, s.follow)
		}()
	}
	err := s.hub.Run(ctx)
	wg.Wait()
	return errors.Join(err, busErr)
}

// Shutdown refuses new WebSockets, closes every open one with 1001 and
// waits for their sessions to end or ctx to be done.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	s.mu.Unlock()
	s.hub.CloseAll(CloseGoingAway, "server shutting down")
	done := make(chan struct{})
	go func() {
		s.sessions.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// enter registers a session unless the server is draining.
func (s *Server) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	s.sessions.Add(1)
	return true
}
