package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/repstream/repstream/api"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/hub"
	"github.com/repstream/repstream/web"
)

func init() {
	subcommands = append(subcommands, func() *cobra.Command {
		cmd := &cobra.Command{
			Use:   "serve",
			Short: "Run the service: replication, derivation and the API",
			Args:  cobra.NoArgs,
		}
		path := configFlags(cmd)
		cmd.Flags().String("listen", "", "HTTP listen address (key listen)")
		cmd.Flags().Bool("insecure", false, "development only: accept connections without a token (key auth.insecure)")
		cmd.Flags().String("redis-url", "", "Redis URL of the cross-node bus (key bus.redis_url)")
		cmd.Flags().String("role", "", "with a bus: both, replicate or serve (key bus.role)")
		cmd.RunE = func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadFor(cmd, *path)
			if err != nil {
				return err
			}
			return runService(cmd.Context(), cfg, cfg.logger(), nil)
		}
		return cmd
	})
}

// service is what a running runService exposes to dev and the tests.
type service struct {
	engine *stream.Engine
	addr   net.Addr
}

// runService runs the pipeline and the HTTP API until ctx ends, then shuts
// down in reverse: WebSockets get 1001, the pipeline commits and confirms.
// ready, if not nil, receives the service once it listens.
func runService(ctx context.Context, cfg *Config, log *slog.Logger, ready func(*service)) error {
	if err := cfg.validateServe(); err != nil {
		return err
	}
	if cfg.Auth.Insecure {
		log.Warn("AUTH IS OFF (auth.insecure: true): anyone who can reach " + cfg.Listen + " reads every subject. Development only.")
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	var fwd hub.Forward
	engine, err := stream.NewEngine(ctx, cfg.engineConfig(log), &fwd)
	if err != nil {
		return err
	}
	defer engine.Close()
	engine.RegisterMetrics(reg)

	var bus hub.Bus
	if cfg.Bus.RedisURL != "" {
		opt, err := cfg.redisOptions()
		if err != nil {
			return err
		}
		// The bus retries by itself, and a node must learn at once that
		// Redis is gone so it polls the store instead: no client retries
		// (unless the URL asks for them), short dials.
		if opt.MaxRetries == 0 {
			opt.MaxRetries = -1
		}
		if opt.DialTimeout <= 0 || opt.DialTimeout > 2*time.Second {
			opt.DialTimeout = 2 * time.Second
		}
		rdb := redis.NewClient(opt)
		defer rdb.Close()
		bus = &hub.RedisBus{Client: rdb, Key: cfg.redisKey(), MaxLen: cfg.Bus.RedisMaxLen, Logger: log}
		log.Info("cross-node bus", "redis", opt.Addr, "tls", opt.TLSConfig != nil, "key", cfg.redisKey(), "role", cmp.Or(cfg.Bus.Role, "both"))
	}
	auth, err := api.NewAuthenticator(cfg.Auth, log)
	if err != nil {
		return err
	}
	defer auth.Close()
	readyFn := readiness(engine, bus != nil)
	engine.SetReadiness(readyFn) // repstream_ready says what /readyz says
	srv, err := api.NewServer(api.Options{
		Config: cfg.API, Auth: auth, Log: engine.Store(), Bus: bus,
		Follow:     hub.FollowConfig{Poll: cfg.Bus.PollInterval, Check: cfg.Bus.CheckInterval},
		Status:     func(ctx context.Context) (map[string]any, error) { return statusOf(ctx, engine, readyFn), nil },
		Ready:      readyFn,
		Registerer: reg, Gatherer: reg, Logger: log, Version: version,
	})
	if err != nil {
		return err
	}
	replicate := cfg.Bus.Role != "serve"
	var busPub *hub.BusPublisher
	switch {
	case bus != nil && replicate:
		busPub = hub.NewBusPublisher(bus, 0, log)
		fwd.Set(busPub)
	case bus == nil:
		fwd.Set(srv.Hub())
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s (key listen): %w", cfg.Listen, err)
	}
	mux := http.NewServeMux()
	webH := web.Handler()
	mux.Handle("/", webH)
	// Pages on the origins in api.allowed_origins import the client.
	mux.Handle("/repstream.js", srv.CORS(webH))
	mux.Handle("/repstream.d.ts", srv.CORS(webH))
	apiH := srv.Handler()
	paths := []string{"/v1/", "/healthz", "/readyz"}
	var metricsSrv *http.Server
	var metricsLn net.Listener
	if cfg.Metrics.Listen == "" {
		paths = append(paths, "/metrics")
	} else {
		if metricsLn, err = net.Listen("tcp", cfg.Metrics.Listen); err != nil {
			ln.Close()
			return fmt.Errorf("listen on %s (key metrics.listen): %w", cfg.Metrics.Listen, err)
		}
		mm := http.NewServeMux()
		mm.Handle("/metrics", apiH)
		metricsSrv = &http.Server{Handler: mm, ReadHeaderTimeout: 10 * time.Second}
	}
	for _, p := range paths {
		mux.Handle(p, apiH)
	}
	httpSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 6)
	run := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil && !errors.Is(err, context.Canceled) {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
			cancel()
		}()
	}
	run("api", srv.Run)
	if busPub != nil {
		// The bus publisher outlives the pipeline: the last group commits
		// on the way out, and what is queued is sent within
		// bus.drain_timeout after the pipeline stopped.
		bctx, bstop := context.WithCancel(context.WithoutCancel(ctx))
		defer bstop()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := busPub.Run(bctx); err != nil {
				errc <- fmt.Errorf("bus: %w", err)
			}
		}()
		run("replication", func(ctx context.Context) error {
			defer time.AfterFunc(cfg.Bus.DrainTimeout, bstop)
			defer busPub.Close()
			return engine.Run(ctx)
		})
	} else if replicate {
		run("replication", engine.Run)
	}
	if replicate {
		run("watch", func(ctx context.Context) error { watch(ctx, engine, cfg, log); return nil })
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("http: %w", err)
		}
		cancel()
	}()
	if metricsSrv != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := metricsSrv.Serve(metricsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("metrics http: %w", err)
			}
			cancel()
		}()
		log.Info("repstream metrics listening", "addr", metricsLn.Addr().String())
	}
	log.Info("repstream listening", "addr", ln.Addr().String(), "version", version, "replicate", replicate)
	if ready != nil {
		ready(&service{engine: engine, addr: ln.Addr()})
	}
	<-ctx.Done()
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	srv.Shutdown(sctx)     //nolint:errcheck // closes every WebSocket with 1001
	httpSrv.Shutdown(sctx) //nolint:errcheck
	if metricsSrv != nil {
		metricsSrv.Shutdown(sctx) //nolint:errcheck
	}
	wg.Wait()
	close(errc)
	var errs []error
	for err := range errc {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		log.Info("repstream stopped")
	}
	return errors.Join(errs...)
}

// readiness answers /readyz and /v1/status's ready. A node fed by the bus
// serves from the store and the bus whether or not it replicates (a
// standby, a serve node): it is ready while the store answers. A single
// node is ready once replication is connected and caught up.
func readiness(e *stream.Engine, bus bool) func(context.Context) error {
	if !bus {
		return e.Readiness
	}
	return func(ctx context.Context) error {
		if ps := e.Problems(); len(ps) > 0 {
			return errors.New(ps[0].String())
		}
		ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		if _, err := e.Store().Meta(ctx); err != nil {
			return fmt.Errorf("the store does not answer: %w", err)
		}
		return nil
	}
}

// statusOf is GET /v1/status: what a DBA or a dashboard needs to see.
func statusOf(ctx context.Context, e *stream.Engine, readyFn func(context.Context) error) map[string]any {
	st := e.Status()
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	ready := readyFn(rctx)
	cancel()
	out := map[string]any{
		"epoch":                st.Meta.Epoch,
		"slot":                 st.Slot,
		"publication":          st.Pub,
		"checkpoint_lsn":       st.Meta.Checkpoint.String(),
		"confirmed_flush_lsn":  nil,
		"server_lsn":           st.Reader.ServerWALEnd.String(),
		"lag_bytes":            nil,
		"lag_seconds":          st.LagTime.Seconds(),
		"replication":          map[string]any{"connected": st.Reader.Connected, "caught_up": ready == nil},
		"ready":                ready == nil,
		"problems":             e.Problems(),
		"changes_applied":      st.Stats.Changes,
		"transactions_applied": st.Stats.Txns,
		"replication_restarts": st.Restarts,
		"deltas":               st.Stats.Deltas,
	}
	if st.WaitingFor != "" {
		out["standby"] = map[string]any{"waiting_for": st.WaitingFor}
	}
	if ready != nil {
		out["not_ready_reason"] = ready.Error()
	}
	if s, ok, err := e.Slot(ctx); err == nil && ok {
		out["confirmed_flush_lsn"] = s.ConfirmedFlushLSN.String()
		out["lag_bytes"] = s.LagBytes
		out["retained_wal_bytes"] = s.RetainedBytes
		out["wal_status"] = s.WALStatus
		out["slot_active_pid"] = s.ActivePID
	}
	return out
}

// watch warns when the slot retains too much WAL or replication lags, so a
// DBA hears of it before the disk fills.
func watch(ctx context.Context, e *stream.Engine, cfg *Config, log *slog.Logger) {
	t := time.NewTicker(15 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s, ok, err := e.Slot(ctx)
		if err != nil || !ok {
			continue
		}
		if cfg.Alerts.RetainedWALBytes > 0 && s.RetainedBytes > cfg.Alerts.RetainedWALBytes {
			log.Warn("replication slot retains a lot of WAL", "slot", cfg.Slot, "retained_bytes", s.RetainedBytes,
				"threshold", cfg.Alerts.RetainedWALBytes, "wal_status", s.WALStatus)
		}
		if lag := e.Status().LagTime; cfg.Alerts.Lag > 0 && lag > cfg.Alerts.Lag {
			log.Warn("replication lags", "lag", lag.Round(time.Millisecond), "threshold", cfg.Alerts.Lag)
		}
	}
}
