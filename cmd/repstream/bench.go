package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"runtime"
	rpprof "runtime/pprof"

	"github.com/spf13/cobra"

	"github.com/repstream/repstream/cmd/repstream/bench"
)

func init() {
	subcommands = append(subcommands, func() *cobra.Command {
		cmd := &cobra.Command{
			Use:    "bench",
			Short:  "Run the benchmarks of issue 6 and write cmd/repstream/bench/RESULTS.md",
			Hidden: true,
			Args:   cobra.NoArgs,
		}
		f := cmd.Flags()
		quick := f.Bool("quick", os.Getenv("BENCH_QUICK") == "1", "smaller sizes and fewer runs (also BENCH_QUICK=1)")
		runs := f.Int("runs", 0, "repetitions of each measurement (0: 3, quick 2)")
		only := f.StringSlice("only", nil, "run only these: codec, drain, ingest, latency, fanout, resume, bigtxn, nodes, pgfailover (no results file)")
		service := f.String("service", "", "the repstream executable to measure as the service (default: this one), to compare two builds")
		out := f.String("out", "cmd/repstream/bench/RESULTS.md", "results file; empty writes none")
		profile := f.String("profile", "", "directory for the service's CPU and heap profiles (runs it with `bench serve`)")
		cmd.RunE = func(cmd *cobra.Command, _ []string) error {
			self, err := os.Executable()
			if err != nil {
				return err
			}
			o := bench.Options{Self: self, Quick: *quick, Runs: *runs, Only: *only, Out: *out, Stdout: cmd.OutOrStdout(), Service: *service}
			o.ServiceArgs = func(cfg, _ string) []string { return []string{"serve", "--config", cfg} }
			if *profile != "" {
				dir, err := filepath.Abs(*profile)
				if err != nil {
					return err
				}
				if err := os.MkdirAll(dir, 0o755); err != nil {
					return err
				}
				o.ProfileDir, o.PprofAddr = dir, "127.0.0.1:6061"
				o.ServiceArgs = func(cfg, tag string) []string {
					return []string{"bench", "serve", "--config", cfg, "--pprof", o.PprofAddr,
						"--cpuprofile", filepath.Join(dir, tag+".cpu.pprof")}
				}
			}
			return bench.Run(cmd.Context(), o)
		}
		cmd.AddCommand(benchClientCmd(), benchServeCmd(), benchFloorCmd())
		return cmd
	})
}

// benchClientCmd is the client process the harness drives over stdin/stdout.
func benchClientCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "client", Short: "WebSocket load for the benchmarks (driven over stdin)", Args: cobra.NoArgs}
	url := cmd.Flags().String("url", "", "ws://host/v1/stream")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return bench.RunClient(cmd.Context(), *url, os.Stdin, os.Stdout)
	}
	return cmd
}

// benchFloorCmd is the fan-out baseline: a bare gorilla broadcast server.
func benchFloorCmd() *cobra.Command {
	return &cobra.Command{Use: "floor", Short: "bare WebSocket broadcast server (the fan-out baseline)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return bench.RunFloor(cmd.Context(), cmd.OutOrStdout()) }}
}

// benchServeCmd is `serve` with profiling: the same runService, plus
// net/http/pprof on its own listener and a CPU profile of the whole run.
func benchServeCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "serve", Short: "serve, profiled", Args: cobra.NoArgs}
	path := configFlags(cmd)
	addr := cmd.Flags().String("pprof", "", "net/http/pprof listen address")
	cpu := cmd.Flags().String("cpuprofile", "", "write a CPU profile of the whole run here")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		bench.RaiseNoFile()
		cfg, err := loadFor(cmd, *path)
		if err != nil {
			return err
		}
		if *addr != "" {
			mux := http.NewServeMux()
			mux.HandleFunc("/debug/pprof/", pprof.Index)
			mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
			mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
			mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
			srv := &http.Server{Addr: *addr, Handler: mux}
			go srv.ListenAndServe() //nolint:errcheck
			defer srv.Close()
		}
		if *cpu != "" {
			f, err := os.Create(*cpu)
			if err != nil {
				return err
			}
			defer f.Close()
			if err := rpprof.StartCPUProfile(f); err != nil {
				return err
			}
			defer rpprof.StopCPUProfile()
		}
		runtime.SetMutexProfileFraction(0)
		err = runService(cmd.Context(), cfg, cfg.logger(), nil)
		if err != nil && !errors.Is(err, context.Canceled) {
			return fmt.Errorf("bench serve: %w", err)
		}
		return nil
	}
	return cmd
}
