package hub

import "time"

// Config bounds the hub. The zero value for Config is a valid configuration;
// each field says what zero means.
type Config struct {
	// Shards is the number of subject-index shards. Zero means 64.
	Shards int
	// RingDeltas is how many recent deltas the in-memory ring keeps for
	// catch-up without touching the store. Zero means 65536; negative
	// disables the ring (every replay reads the store).
	RingDeltas int
	// QueueBytes bounds a connection's outbound queue; past it the
	// connection is closed with 4008 (slow consumer). Zero means 4 MiB. A
	// single frame larger than the bound is still accepted into an empty
	// queue, so one large snapshot does not disconnect a healthy client.
	QueueBytes int
	// QueueFrames bounds a connection's outbound queue in frames. Zero
	// means 16384.
	QueueFrames int
	// CatchupBuffer bounds the live deltas buffered for one subscription
	// while it replays; past it the connection is closed with 4008. Zero
	// means 65536.
	CatchupBuffer int
	// Heartbeat is how long a connection may go without a frame before it
	// gets a tick. Zero means 15 s.
	Heartbeat time.Duration
	// SnapshotChunk is the number of states per snapshot message. Zero
	// means 1000.
	SnapshotChunk int
	// ReplayPage is how many deltas one store read returns during replay.
	// Zero means 1000.
	ReplayPage int
	// MaxSubscriptions bounds a connection's subscriptions (each subscribe
	// request that still selects something counts once). Zero means 100.
	MaxSubscriptions int
	// MaxSubjects bounds the subjects and prefixes all of a connection's
	// subscriptions name together. Zero means 10000.
	MaxSubjects int
	// MaxBoardTop bounds a leaderboard subscription's top. Zero means 100.
	MaxBoardTop int
	// StoreTimeout bounds each read of the store, so a store that stops
	// answering (a black-holed network) fails a subscribe instead of
	// hanging it. Zero means 10 s.
	StoreTimeout time.Duration
}

func (c Config) withDefaults() Config {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.Shards, 64)
	def(&c.RingDeltas, 65536)
	def(&c.QueueBytes, 4<<20)
	def(&c.QueueFrames, 16384)
	def(&c.CatchupBuffer, 65536)
	def(&c.SnapshotChunk, 1000)
	def(&c.ReplayPage, 1000)
	def(&c.MaxSubscriptions, 100)
	def(&c.MaxSubjects, 10000)
	def(&c.MaxBoardTop, 100)
	if c.Heartbeat == 0 {
		c.Heartbeat = 15 * time.Second
	}
	if c.StoreTimeout == 0 {
		c.StoreTimeout = 10 * time.Second
	}
	if c.Shards < 1 {
		c.Shards = 1
	}
	return c
}
