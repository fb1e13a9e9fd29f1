package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/repstream/repstream/cdc"
	"github.com/repstream/repstream/stream"
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

// service is everything serve runs, for dev and the tests to reuse.
type service struct {
	engine *stream.Engine
	addr   net.Addr
}

// runService runs the pipeline and the HTTP API until ctx ends. ready, if
// not nil, receives the service once it listens.
func runService(ctx context.Context, cfg *Config, log *slog.Logger, ready func(*service)) error {
	pub := &nopPublisher{}
	engine, err := stream.NewEngine(ctx, cfg.engineConfig(log), pub)
	if err != nil {
		return err
	}
	defer engine.Close()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s (key listen): %w", cfg.Listen, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) }) //nolint:errcheck
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !engine.Ready() {
			http.Error(w, "replication not caught up", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n")) //nolint:errcheck
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(statusOf(r.Context(), engine)) //nolint:errcheck
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := engine.Run(ctx); err != nil {
			errc <- err
		}
		cancel()
	}()
	go func() {
		defer wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("http: %w", err)
		}
		cancel()
	}()
	log.Info("repstream listening", "addr", ln.Addr().String(), "version", version)
	if ready != nil {
		ready(&service{engine: engine, addr: ln.Addr()})
	}
	<-ctx.Done()
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	srv.Shutdown(sctx) //nolint:errcheck
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

type nopPublisher struct{}

func (nopPublisher) Publish(stream.LSN, []stream.Txn) {}
func (nopPublisher) Reset(stream.Meta)                {}

// status is GET /v1/status: what a DBA or a dashboard needs to see.
func statusOf(ctx context.Context, e *stream.Engine) map[string]any {
	st := e.Status()
	out := map[string]any{
		"epoch":               st.Meta.Epoch,
		"slot":                st.Slot,
		"publication":         st.Pub,
		"checkpoint_lsn":      st.Meta.Checkpoint.String(),
		"confirmed_flush_lsn": nil,
		"server_lsn":          st.Reader.ServerWALEnd.String(),
		"lag_bytes":           nil,
		"lag_seconds":         st.LagTime.Seconds(),
		"connections":         0,
		"subscriptions":       0,
		"replication":         map[string]any{"connected": st.Reader.Connected, "caught_up": st.Reader.CaughtUp},
		"ready":               st.Ready,
	}
	if s, ok, err := lookupSlot(ctx, e, st.Slot); err == nil && ok {
		out["confirmed_flush_lsn"] = s.ConfirmedFlushLSN.String()
		out["lag_bytes"] = s.LagBytes
		out["retained_wal_bytes"] = s.RetainedBytes
		out["wal_status"] = s.WALStatus
		out["slot_active_pid"] = s.ActivePID
	}
	return out
}

func lookupSlot(ctx context.Context, e *stream.Engine, name string) (cdc.Slot, bool, error) {
	return cdc.LookupSlot(ctx, e.Store().Pool(), name)
}
