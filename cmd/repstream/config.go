package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/providers/posflag"
	"github.com/knadh/koanf/v2"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/pflag"

	"github.com/repstream/repstream/api"
	"github.com/repstream/repstream/stream"
)

// Config is the whole configuration file. Precedence: defaults < file <
// environment (DATABASE_URL, REPSTREAM_KEY, REPSTREAM_SECTION__KEY) < flags.
type Config struct {
	DatabaseURL       string          `yaml:"database_url"`
	Publication       string          `yaml:"publication"`
	Slot              string          `yaml:"slot"`
	CreatePublication bool            `yaml:"create_publication"`
	Listen            string          `yaml:"listen"`
	Sources           []stream.Source `yaml:"sources"`
	Reputation        stream.Prior    `yaml:"reputation"`
	Retention         time.Duration   `yaml:"retention"`
	Heartbeat         time.Duration   `yaml:"heartbeat"`
	AsyncCommit       bool            `yaml:"async_commit"`
	Log               LogConfig       `yaml:"log"`
	Auth              api.AuthConfig  `yaml:"auth"`
	API               api.Config      `yaml:"api"`
	Bus               BusConfig       `yaml:"bus"`
	Alerts            AlertConfig     `yaml:"alerts"`
	Metrics           MetricsConfig   `yaml:"metrics"`
	Store             StoreConfig     `yaml:"store"`
}

// MetricsConfig says where /metrics is served.
type MetricsConfig struct {
	// Listen, when set, serves /metrics on this address alone (say
	// 127.0.0.1:9090 for a local Prometheus), and not on listen, which
	// clients reach. Empty serves it on listen, without authentication.
	Listen string `yaml:"listen"`
}

// StoreConfig places repstream's own schema.
type StoreConfig struct {
	// DatabaseURL is the database that holds schema repstream; empty means
	// database_url. Another database or cluster keeps repstream's writes
	// (row shadow, delta log, and their WAL) out of the application's.
	DatabaseURL string `yaml:"database_url"`
}

// LogConfig chooses the log format and level.
type LogConfig struct {
	Format string `yaml:"format"` // text or json
	Level  string `yaml:"level"`  // debug, info, warn, error
}

// BusConfig connects nodes: with a Redis URL, the node that replicates
// publishes every delta to Redis and every node serves clients from it.
type BusConfig struct {
	// RedisURL is redis://host:6379/0; empty means a single node.
	RedisURL string `yaml:"redis_url"`
	// Role is "both" (default: replicate and serve), "replicate" or "serve".
	Role string `yaml:"role"`
	// RedisKey is the Redis stream's key; empty derives it from the
	// database and the slot, so deployments sharing a Redis stay apart.
	RedisKey string `yaml:"redis_key"`
	// RedisMaxLen bounds the stream (approximately), and so Redis's memory.
	RedisMaxLen int64 `yaml:"redis_max_len"`
	// PollInterval is how often a node reads the store while Redis is down.
	PollInterval time.Duration `yaml:"poll_interval"`
	// CheckInterval is how often a node compares its epoch and head with
	// the store's while Redis is up.
	CheckInterval time.Duration `yaml:"check_interval"`
	// DrainTimeout bounds how long a stopping replicator sends what it
	// still has queued for Redis.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// TakeoverAfter is how long a standby lets the slot's holder go
	// without answering replication before it ends the holder's
	// connections and takes over (0: wait for wal_sender_timeout).
	TakeoverAfter time.Duration `yaml:"takeover_after"`
}

// redisKey is bus.redis_key, or repstream:<host>:<port>/<database>:<slot>.
func (c *Config) redisKey() string {
	if c.Bus.RedisKey != "" {
		return c.Bus.RedisKey
	}
	where := "?"
	if pc, err := pgconn.ParseConfig(c.DatabaseURL); err == nil {
		where = fmt.Sprintf("%s:%d/%s", pc.Host, pc.Port, pc.Database)
	}
	return "repstream:" + where + ":" + c.Slot
}

// redisOptions parses bus.redis_url: redis:// or rediss:// (TLS), with a
// user and password if Redis asks for them.
func (c *Config) redisOptions() (*redis.Options, error) {
	o, err := redis.ParseURL(c.Bus.RedisURL)
	if err != nil {
		return nil, &stream.ConfigError{Key: "bus.redis_url", Msg: err.Error() + " (use redis://[user:password@]host:6379/0, or rediss:// for TLS)"}
	}
	return o, nil
}

// AlertConfig sets the thresholds past which the service warns.
type AlertConfig struct {
	RetainedWALBytes int64         `yaml:"retained_wal_bytes"`
	Lag              time.Duration `yaml:"lag"`
}

var defaults = map[string]any{
	"publication":               "repstream",
	"slot":                      "repstream",
	"create_publication":        true,
	"listen":                    ":8080",
	"reputation.prior_mean":     3.5,
	"reputation.prior_weight":   10.0,
	"retention":                 "168h",
	"heartbeat":                 "10s",
	"log.format":                "text",
	"log.level":                 "info",
	"alerts.retained_wal_bytes": int64(1 << 30),
	"alerts.lag":                "30s",
	"bus.redis_max_len":         int64(10000),
	"bus.poll_interval":         "250ms",
	"bus.check_interval":        "1s",
	"bus.drain_timeout":         "3s",
	"bus.takeover_after":        "10s",
}

// flagKeys maps command-line flags onto configuration keys.
var flagKeys = map[string]string{
	"database-url": "database_url",
	"slot":         "slot",
	"publication":  "publication",
	"listen":       "listen",
	"log-format":   "log.format",
	"log-level":    "log.level",
	"insecure":     "auth.insecure",
	"redis-url":    "bus.redis_url",
	"role":         "bus.role",
}

// loadConfig reads path (may be empty), the environment and the flags set on fs.
func loadConfig(path string, fs *pflag.FlagSet) (*Config, error) {
	k := koanf.New(".")
	if err := k.Load(confmap.Provider(defaults, "."), nil); err != nil {
		return nil, err
	}
	if path != "" {
		if err := k.Load(file.Provider(path), yaml.Parser()); err != nil {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
	}
	var keyErrs []error
	if err := loadEnv(k, &keyErrs); err != nil {
		return nil, err
	}
	if fs != nil {
		if err := k.Load(posflag.ProviderWithFlag(fs, ".", k, func(f *pflag.Flag) (string, any) {
			if !f.Changed {
				return "", nil
			}
			key, ok := flagKeys[f.Name]
			if !ok {
				return "", nil // not a configuration flag
			}
			return key, posflag.FlagVal(fs, f)
		}), nil); err != nil {
			return nil, fmt.Errorf("config: flags: %w", err)
		}
	}
	// A misspelt key would silently leave its setting at the default.
	keyErrs = append(keyErrs, checkKeys(k.Keys(), k.Get("sources"))...)
	var c Config
	if err := k.UnmarshalWithConf("", &c, koanf.UnmarshalConf{Tag: "yaml"}); err != nil {
		return nil, errors.Join(append(keyErrs, fmt.Errorf("config: %w", err))...)
	}
	// An invalid configuration comes back with the error, so doctor can
	// still check the database while reporting every bad key.
	return &c, errors.Join(append(keyErrs, c.validate())...)
}

// loadEnv loads DATABASE_URL and the REPSTREAM_ variables into k. A
// variable that names no key is added to unknown, naming the closest one.
func loadEnv(k *koanf.Koanf, unknown *[]error) error {
	if v := os.Getenv("DATABASE_URL"); v != "" {
		k.Set("database_url", v) //nolint:errcheck
	}
	err := k.Load(env.Provider(".", env.Opt{
		Prefix: "REPSTREAM_",
		TransformFunc: func(name, v string) (string, any) {
			key, val, ok, err := envKey(name, v)
			if err != nil {
				*unknown = append(*unknown, err)
			}
			if !ok {
				return "", nil
			}
			return key, val
		},
	}), nil)
	if err != nil {
		return fmt.Errorf("config: environment: %w", err)
	}
	return nil
}

func (c *Config) validate() error {
	var errs []error
	if c.DatabaseURL == "" {
		errs = append(errs, &stream.ConfigError{Key: "database_url", Msg: "missing; set it in the file, as DATABASE_URL or with --database-url"})
	}
	if c.Retention <= 0 {
		errs = append(errs, &stream.ConfigError{Key: "retention", Msg: "must be a positive duration such as 168h"})
	}
	if c.Reputation.Weight < 0 {
		errs = append(errs, &stream.ConfigError{Key: "reputation.prior_weight", Msg: "must not be negative"})
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		errs = append(errs, &stream.ConfigError{Key: "log.format", Msg: fmt.Sprintf("%q: use text or json", c.Log.Format)})
	}
	if _, err := parseLevel(c.Log.Level); err != nil {
		errs = append(errs, err)
	}
	if _, err := stream.CompileSources(c.Sources); err != nil {
		errs = append(errs, err)
	}
	switch c.Bus.Role {
	case "", "both":
	case "replicate", "serve":
		if c.Bus.RedisURL == "" {
			errs = append(errs, &stream.ConfigError{Key: "bus.role", Msg: c.Bus.Role + " needs bus.redis_url: nodes meet through Redis"})
		}
	default:
		errs = append(errs, &stream.ConfigError{Key: "bus.role", Msg: fmt.Sprintf("%q: use both, replicate or serve", c.Bus.Role)})
	}
	if c.Bus.RedisURL != "" {
		if _, err := c.redisOptions(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Bus.PollInterval <= 0 {
		errs = append(errs, &stream.ConfigError{Key: "bus.poll_interval", Msg: "must be a positive duration such as 250ms"})
	}
	if c.Bus.CheckInterval <= 0 {
		errs = append(errs, &stream.ConfigError{Key: "bus.check_interval", Msg: "must be a positive duration such as 1s"})
	}
	if c.Bus.DrainTimeout <= 0 {
		errs = append(errs, &stream.ConfigError{Key: "bus.drain_timeout", Msg: "must be a positive duration such as 3s"})
	}
	if c.Bus.TakeoverAfter < 0 {
		errs = append(errs, &stream.ConfigError{Key: "bus.takeover_after", Msg: "must not be negative (0 waits for wal_sender_timeout)"})
	}
	if c.Bus.RedisMaxLen <= 0 {
		errs = append(errs, &stream.ConfigError{Key: "bus.redis_max_len", Msg: "must be a positive number of entries such as 10000"})
	}
	return errors.Join(errs...)
}

// validateServe checks what only serve needs: the API's limits and a way
// to verify tokens. DBA commands run without them.
func (c *Config) validateServe() error {
	return errors.Join(c.Auth.Validate(), c.API.Validate())
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, &stream.ConfigError{Key: "log.level", Msg: fmt.Sprintf("%q: use debug, info, warn or error", s)}
	}
	return l, nil
}

func (c *Config) logger() *slog.Logger {
	lvl, _ := parseLevel(c.Log.Level)
	o := &slog.HandlerOptions{Level: lvl}
	if c.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, o))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, o))
}

// storeURL is the database of schema repstream.
func (c *Config) storeURL() string {
	if c.Store.DatabaseURL != "" {
		return c.Store.DatabaseURL
	}
	return c.DatabaseURL
}

func (c *Config) engineConfig(log *slog.Logger) stream.EngineConfig {
	return stream.EngineConfig{
		DatabaseURL: c.DatabaseURL, StoreURL: c.Store.DatabaseURL, Slot: c.Slot, Publication: c.Publication, CreatePublication: c.CreatePublication,
		Sources: c.Sources, Prior: c.Reputation, Retention: c.Retention, Heartbeat: c.Heartbeat, Logger: log,
		AsyncCommit: c.AsyncCommit, TakeoverAfter: c.Bus.TakeoverAfter,
	}
}
