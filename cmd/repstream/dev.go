package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/cobra"

	"github.com/repstream/repstream/api"
	"github.com/repstream/repstream/cdc/localpg"
	"github.com/repstream/repstream/sql/demo"
)

func init() {
	subcommands = append(subcommands, func() *cobra.Command {
		cmd := &cobra.Command{
			Use:   "dev",
			Short: "Run the demo: a throwaway Postgres, the demo marketplace and its writer, and the service",
			Long: `dev runs everything on this machine with nothing to set up: a throwaway
Postgres configured for logical replication (from the installed server
binaries), the demo marketplace, a writer acting as the marketplace's
application, and the service with its dashboard. Authentication stays on:
dev mints a token and prints the dashboard URL that carries it.
Ctrl-C stops everything and removes the data directory.`,
			Args: cobra.NoArgs,
		}
		var o devOptions
		f := cmd.Flags()
		f.StringVar(&o.listen, "listen", "127.0.0.1:8080", "HTTP listen address (port 0 picks a free one)")
		f.BoolVar(&o.writer, "writer", true, "run the demo writer")
		f.Float64Var(&o.rate, "rate", 20, "demo writer: transactions per second")
		f.BoolVar(&o.story, "story", true, "demo writer: tell the story of a seller whose shipments run late")
		f.DurationVar(&o.viralEvery, "viral-every", 30*time.Second, "demo writer: how often a product goes viral; 0 means never")
		f.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
		f.StringSliceVar(&o.allowOrigins, "allow-origin", nil, "a browser origin (scheme://host:port, or *) whose pages may use the API and load /repstream.js; repeat or comma-separate (key api.allowed_origins)")
		cmd.RunE = func(cmd *cobra.Command, _ []string) error {
			return runDev(cmd.Context(), cmd.OutOrStdout(), o)
		}
		return cmd
	})
}

type devOptions struct {
	listen     string
	writer     bool
	rate       float64
	story      bool
	viralEvery time.Duration
	logLevel   string
	// allowOrigins, when set, replaces api.allowed_origins.
	allowOrigins []string
}

// runDev starts Postgres, the marketplace, its writer and the service, and
// when ctx ends stops them in reverse: the service, the writer, then
// Postgres, whose data directory (slot included) goes with it.
func runDev(ctx context.Context, out io.Writer, o devOptions) (err error) {
	lvl, err := parseLevel(o.logLevel)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	if err := (api.Config{AllowedOrigins: o.allowOrigins}).Validate(); err != nil {
		return fmt.Errorf("--allow-origin: %w", err) // before Postgres starts
	}

	dir, err := os.MkdirTemp("", "repstream-dev-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// As root the cluster runs as the postgres user, which must reach its data
	// directory inside dir; the secret's file stays readable by us alone.
	if err := os.Chmod(dir, 0o711); err != nil {
		return err
	}

	// Ctrl-C during startup must not leave a half-started server behind, so
	// startup runs to the end and the server is then stopped as usual.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	pg, err := localpg.Start(sctx, localpg.Options{Dir: dir})
	cancel()
	if errors.Is(err, localpg.ErrNoServer) {
		return exitError{code: 1, msg: "dev needs the PostgreSQL server binaries (initdb, pg_ctl, postgres); install them:\n\n    apt-get install -y postgresql"}
	}
	if err != nil {
		return err
	}
	defer func() {
		if serr := pg.Stop(); serr != nil {
			err = errors.Join(err, fmt.Errorf("dev: stop Postgres: %w", serr))
			return
		}
		fmt.Fprintf(out, "repstream dev: stopped; removed %s\n", pg.DataDir)
	}()
	fmt.Fprintf(out, "repstream dev: Postgres on port %d\n  data dir:   %s\n", pg.Port, pg.DataDir)
	if ctx.Err() != nil {
		return nil
	}

	if err := localpg.CreateDatabase(ctx, pg.URL(""), demo.DatabaseName); err != nil {
		return stopped(ctx, err)
	}
	dbURL := pg.URL(demo.DatabaseName)
	if _, err := demo.Apply(ctx, dbURL); err != nil {
		return stopped(ctx, err)
	}

	secretFile := filepath.Join(dir, "jwt-hs256.secret")
	token, err := devToken(secretFile)
	if err != nil {
		return err
	}
	cfg, err := devConfig(dbURL, o, secretFile)
	if err != nil {
		return err
	}

	var w *demo.Writer
	if o.writer {
		pool, err := pgxpool.New(ctx, dbURL)
		if err != nil {
			return stopped(ctx, err)
		}
		defer pool.Close() // registered first, so it runs after the writer stopped
		w = demo.NewWriter(pool, demo.WriterConfig{
			Rate: o.rate, Seed: uint64(time.Now().UnixNano()),
			ViralEvery: o.viralEvery, ViralBurst: 50,
			Story: o.story, StoryAfter: 20 * time.Second, StoryLength: time.Minute,
			Logger: log.With("component", "demo-writer"),
		})
	}
	var wg sync.WaitGroup
	wctx, stopWriter := context.WithCancel(ctx)
	defer func() { stopWriter(); wg.Wait() }()
	if w != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.Run(wctx); err != nil {
				log.Error("demo writer stopped", "err", err)
			}
		}()
	}

	err = runService(ctx, cfg, log, func(s *service) {
		base := "http://" + s.addr.String()
		fmt.Fprintf(out, `repstream dev: the demo marketplace is live
  dashboard:  %s/#token=%s
  curl:       curl -H 'Authorization: Bearer %s' '%s/v1/subjects?prefix=seller:&order=bayes&limit=10'
  token:      TOKEN=%s
  postgres:   psql '%s'
  secret:     %s (HS256; the token is for subjects ["*"] and /v1/status, and expires in 24h)
  origins:    %s (api.allowed_origins; --allow-origin adds one)
Ctrl-C stops everything and removes the data dir.
`, base, token, token, base, token, dbURL, secretFile, originsText(cfg.API.AllowedOrigins))
	})
	return stopped(ctx, err)
}

// originsText says which browser origins may use the service.
func originsText(origins []string) string {
	if len(origins) == 0 {
		return "none but this one"
	}
	return strings.Join(origins, ", ")
}

// stopped drops err when it only reports that ctx ended (Ctrl-C during startup).
func stopped(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// devConfig is the service's configuration for dev: the defaults and the
// REPSTREAM_ environment (api.allowed_origins, say), then the demo's
// database, sources and prior, the flags, and authentication with the
// secret in secretFile, which the environment cannot change.
func devConfig(databaseURL string, o devOptions, secretFile string) (*Config, error) {
	k := koanf.New(".")
	if err := k.Load(confmap.Provider(defaults, "."), nil); err != nil {
		return nil, err
	}
	var keyErrs []error
	if err := loadEnv(k, &keyErrs); err != nil {
		return nil, err
	}
	var cfg Config
	if err := k.UnmarshalWithConf("", &cfg, koanf.UnmarshalConf{Tag: "yaml"}); err != nil {
		return nil, errors.Join(append(keyErrs, fmt.Errorf("config: %w", err))...)
	}
	cfg.DatabaseURL = databaseURL
	cfg.Listen = o.listen
	cfg.Log.Level = o.logLevel
	cfg.Sources = demo.Sources()
	cfg.Reputation = demo.Prior()
	cfg.Retention = 24 * time.Hour
	if len(o.allowOrigins) > 0 {
		cfg.API.AllowedOrigins = o.allowOrigins
	}
	devAuth(&cfg, secretFile)
	return &cfg, errors.Join(append(keyErrs, cfg.validate(), cfg.API.Validate())...)
}

// devAuth turns token authentication on with the HS256 secret in secretFile.
func devAuth(cfg *Config, secretFile string) {
	cfg.Auth.Insecure = false
	cfg.Auth.HS256SecretFile = secretFile
}

// devToken writes a new random HS256 secret to secretFile (64 hex digits,
// no newline; those ASCII bytes are the key) and returns a token signed
// with it: subject "dev", every subject readable, /v1/status too, valid for
// 24 hours.
func devToken(secretFile string) (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	secret := []byte(hex.EncodeToString(b[:]))
	if err := os.WriteFile(secretFile, secret, 0o600); err != nil {
		return "", fmt.Errorf("dev: write the JWT secret: %w", err)
	}
	return mintToken(secret, "dev", []string{"*"}, 24*time.Hour, true)
}
