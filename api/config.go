package api

import (
	"fmt"
	"strings"
	"time"

	"github.com/repstream/repstream/stream/hub"
)

// Config bounds the streaming API. The zero value is a valid configuration:
// each field says what zero means. It is the `api:` block of the
// configuration file (the listen address is the service's `listen`).
type Config struct {
	// MaxFrameBytes bounds a client's WebSocket message; a larger one is
	// answered with close 1009. Zero means 64 KiB.
	MaxFrameBytes int64 `yaml:"max_frame_bytes"`
	// MaxConnections bounds concurrent WebSocket connections; past it a new
	// one is closed with 4029. Zero means 10000.
	MaxConnections int `yaml:"max_connections"`
	// MaxSubscriptions bounds one connection's subscriptions; past it a
	// subscribe gets error too_many_subscriptions. Zero means 100.
	MaxSubscriptions int `yaml:"max_subscriptions"`
	// MaxSubjects bounds the subjects and prefixes one connection's
	// subscriptions name together. Zero means 10000.
	MaxSubjects int `yaml:"max_subjects"`
	// MaxBoardTop bounds a leaderboard subscription's top; a larger one is
	// answered with error bad_request. Zero means 100.
	MaxBoardTop int `yaml:"max_board_top"`
	// AllowedOrigins lists the browser origins (scheme://host[:port]) that
	// may open a WebSocket; "*" allows any. Empty means same host only.
	// Requests without an Origin header (non-browser clients) are allowed.
	// A refused origin is closed with 1008.
	AllowedOrigins []string `yaml:"allowed_origins"`
	// Heartbeat is the tick interval announced in welcome and the WebSocket
	// ping interval. Zero means 15s.
	Heartbeat time.Duration `yaml:"heartbeat"`
	// PongTimeout is how long a peer may stay silent (no pong, no message)
	// before it is considered dead; it is checked when the peer is due its
	// next ping, so within a heartbeat after. Zero means 2×Heartbeat + 5s.
	PongTimeout time.Duration `yaml:"pong_timeout"`
	// HelloTimeout is how long a connection without an Authorization
	// header has to send hello. Zero means 10s.
	HelloTimeout time.Duration `yaml:"hello_timeout"`
	// WriteTimeout bounds how long a client may take to accept a write:
	// each gets between half of it and all of it. Zero means 10s.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// QueueBytes bounds a connection's queue of unsent frames; past it the
	// connection is closed with 4008. Zero means 4 MiB.
	QueueBytes int `yaml:"queue_bytes"`
	// QueueFrames bounds the same queue in frames. Zero means 16384.
	QueueFrames int `yaml:"queue_frames"`
	// RingDeltas is how many recent deltas are kept in memory for catch-up.
	// Zero means 65536; negative turns the ring off.
	RingDeltas int `yaml:"ring_deltas"`
	// MinThrottle and MaxThrottle bound a subscription's throttle_ms: a
	// non-zero throttle below MinThrottle is raised to it, one above
	// MaxThrottle lowered to it. Zero means 10ms and 60s.
	MinThrottle time.Duration `yaml:"min_throttle"`
	MaxThrottle time.Duration `yaml:"max_throttle"`
	// HTTPTimeout bounds each REST request. Zero means 30s.
	HTTPTimeout time.Duration `yaml:"http_timeout"`
	// StoreTimeout bounds each store read of a subscribe, so a store that
	// stops answering fails it (and closes the connection with 1011: the
	// client reconnects, to another node behind a load balancer) instead
	// of hanging it. Zero means 10s.
	StoreTimeout time.Duration `yaml:"store_timeout"`
	// MaxLimit bounds the limit parameter of list endpoints. Zero means
	// 10000.
	MaxLimit int `yaml:"max_limit"`
	// SubscribeWorkers bounds the connections whose subscribes and
	// unsubscribes run at once; the others wait in line, holding no
	// goroutine, so a storm of subscribes (every client reconnecting) costs
	// neither memory per waiting client nor a herd on the store. Zero
	// means 64.
	SubscribeWorkers int `yaml:"subscribe_workers"`
}

func (c Config) withDefaults() Config {
	if c.MaxFrameBytes == 0 {
		c.MaxFrameBytes = 64 << 10
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = 10000
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = 15 * time.Second
	}
	if c.PongTimeout == 0 {
		c.PongTimeout = 2*c.Heartbeat + 5*time.Second
	}
	if c.HelloTimeout == 0 {
		c.HelloTimeout = 10 * time.Second
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.MinThrottle == 0 {
		c.MinThrottle = 10 * time.Millisecond
	}
	if c.MaxThrottle == 0 {
		c.MaxThrottle = time.Minute
	}
	if c.HTTPTimeout == 0 {
		c.HTTPTimeout = 30 * time.Second
	}
	if c.MaxLimit == 0 {
		c.MaxLimit = 10000
	}
	if c.SubscribeWorkers == 0 {
		c.SubscribeWorkers = 64
	}
	return c
}

// HubConfig is the hub configuration these settings imply.
func (c Config) HubConfig() hub.Config {
	c = c.withDefaults()
	return hub.Config{
		RingDeltas:       c.RingDeltas,
		QueueBytes:       c.QueueBytes,
		QueueFrames:      c.QueueFrames,
		Heartbeat:        c.Heartbeat,
		MaxSubscriptions: c.MaxSubscriptions,
		MaxSubjects:      c.MaxSubjects,
		MaxBoardTop:      c.MaxBoardTop,
		StoreTimeout:     c.StoreTimeout,
	}
}

// Validate reports the first setting that cannot work, naming its key and
// the fix.
func (c Config) Validate() error {
	neg := func(key string, v int64) error {
		if v < 0 {
			return fmt.Errorf("api.%s: %d is negative; use a positive number, or 0 for the default", key, v)
		}
		return nil
	}
	for _, e := range []error{
		neg("max_frame_bytes", c.MaxFrameBytes),
		neg("max_connections", int64(c.MaxConnections)),
		neg("max_subscriptions", int64(c.MaxSubscriptions)),
		neg("max_subjects", int64(c.MaxSubjects)),
		neg("max_board_top", int64(c.MaxBoardTop)),
		neg("heartbeat", int64(c.Heartbeat)),
		neg("pong_timeout", int64(c.PongTimeout)),
		neg("hello_timeout", int64(c.HelloTimeout)),
		neg("write_timeout", int64(c.WriteTimeout)),
		neg("queue_bytes", int64(c.QueueBytes)),
		neg("queue_frames", int64(c.QueueFrames)),
		neg("min_throttle", int64(c.MinThrottle)),
		neg("max_throttle", int64(c.MaxThrottle)),
		neg("http_timeout", int64(c.HTTPTimeout)),
		neg("store_timeout", int64(c.StoreTimeout)),
		neg("max_limit", int64(c.MaxLimit)),
		neg("subscribe_workers", int64(c.SubscribeWorkers)),
	} {
		if e != nil {
			return e
		}
	}
	d := c.withDefaults()
	if d.Heartbeat < 100*time.Millisecond {
		return fmt.Errorf("api.heartbeat: %s is too short; use at least 100ms (15s is usual)", c.Heartbeat)
	}
	if d.PongTimeout <= d.Heartbeat {
		return fmt.Errorf("api.pong_timeout: %s must exceed api.heartbeat (%s), or a live peer looks dead; use 0 for 2×heartbeat+5s", d.PongTimeout, d.Heartbeat)
	}
	if d.MinThrottle > d.MaxThrottle {
		return fmt.Errorf("api.min_throttle: %s exceeds api.max_throttle (%s); lower it", d.MinThrottle, d.MaxThrottle)
	}
	if d.MaxFrameBytes < 512 {
		return fmt.Errorf("api.max_frame_bytes: %d is too small for a hello with a token; use at least 512 (0 means 64 KiB)", c.MaxFrameBytes)
	}
	for _, o := range c.AllowedOrigins {
		if o != "*" && !strings.Contains(o, "://") {
			return fmt.Errorf("api.allowed_origins: %q is not an origin; write scheme://host[:port], e.g. https://dash.example.com, or \"*\"", o)
		}
	}
	return nil
}

// throttle clamps a requested throttle_ms.
func (c Config) throttle(ms int64) time.Duration {
	if ms <= 0 {
		return 0
	}
	d := time.Duration(min(ms, int64(time.Hour/time.Millisecond))) * time.Millisecond
	return min(max(d, c.MinThrottle), c.MaxThrottle)
}
