// Package hub fans committed reputation deltas out to subscribed
// connections: a subject-sharded index of subscriptions, a bounded queue per
// connection, an in-memory ring of recent transactions for catch-up, exact
// replay-to-live handoff, per-subscription throttling, and a bus that carries
// the stream between nodes.
//
// A Hub implements stream.Publisher. Publish never blocks on a client: a
// connection whose queue overflows is closed with 4008.
package hub

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/repstream/repstream/stream"
)

// Options configure New.
type Options struct {
	// Log is the durable store's read side, used for snapshots and for
	// replays the ring does not cover. Required.
	Log stream.Log
	// Codecs are the wire encodings connections may use (at most 4);
	// Connect takes an index into it. Required.
	Codecs []Codec
	Config Config
	// Registerer receives the hub's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Hub is the node-local fan-out. Create it with New; it is safe for
// concurrent use.
type Hub struct {
	log    stream.Log
	codecs []Codec
	cfg    Config
	logger *slog.Logger
	m      *metrics

	// pubMu serializes Publish, Reset, initialisation and ticks, so a tick
	// never overtakes a transaction at or below its LSN.
	pubMu   sync.Mutex
	scratch map[*Conn][]*item // guarded by pubMu
	owed    map[*sub][]*item  // guarded by pubMu; one transaction's items per subscription
	owedBy  []*sub            // guarded by pubMu; keys of owed, in first-match order
	matched []*sub            // guarded by pubMu; lookup's scratch
	epochMu sync.RWMutex
	epoch   string // guarded by epochMu
	ready   bool   // guarded by epochMu
	head    atomic.Uint64

	boards     map[boardKey]*board // guarded by pubMu
	boardsHead stream.LSN          // guarded by pubMu; the head after the last Publish

	shards   []shard
	prefixes prefixIndex
	ring     ring

	connMu sync.RWMutex
	conns  map[*Conn]struct{} // guarded by connMu
	nsubs  atomic.Int64

	follow followState
	kick   chan struct{} // asks Follow to read the store's meta now
}

var _ stream.Publisher = (*Hub)(nil)

// New returns a hub. It serves no tick until Run is called.
func New(o Options) *Hub {
	if o.Log == nil {
		panic("hub: Options.Log is required")
	}
	if len(o.Codecs) == 0 || len(o.Codecs) > maxCodecs {
		panic("hub: Options.Codecs must hold 1 to 4 codecs")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	cfg := o.Config.withDefaults()
	h := &Hub{
		log:     boundedLog{o.Log, cfg.StoreTimeout},
		codecs:  o.Codecs,
		cfg:     cfg,
		logger:  o.Logger,
		scratch: make(map[*Conn][]*item),
		owed:    make(map[*sub][]*item),
		conns:   make(map[*Conn]struct{}),
		kick:    make(chan struct{}, 1),
	}
	h.m = newMetrics(o.Registerer)
	h.shards = make([]shard, h.cfg.Shards)
	for i := range h.shards {
		h.shards[i].subs = make(map[string]map[*sub]struct{})
	}
	h.prefixes = prefixIndex{subs: make(map[string]map[*sub]struct{}), lens: make(map[int]int)}
	h.ring.max = h.cfg.RingDeltas
	return h
}

// Position converts a store head (Meta.Checkpoint, Publish's head, the head
// States returns) into a cursor. A head is the end LSN of the last applied
// source transaction (or a later idle position), and the next transaction's
// commit LSN, which its deltas carry, may equal it; so the head itself would
// claim a delta not yet delivered. Every transaction with a commit LSN at or
// below head-1 is stored, which is what a cursor promises.
func Position(head stream.LSN) stream.LSN {
	if head == 0 {
		return 0
	}
	return head - 1
}

// Config returns the configuration in force, defaults filled in.
func (h *Hub) Config() Config { return h.cfg }

// shardOf picks subject's shard by its FNV-1a hash, computed inline: it runs
// for every delta published, and hash/fnv would allocate a hasher and a copy
// of the subject each time.
func (h *Hub) shardOf(subject string) *shard {
	const offset32, prime32 = 2166136261, 16777619
	x := uint32(offset32)
	for i := 0; i < len(subject); i++ {
		x ^= uint32(subject[i])
		x *= prime32
	}
	return &h.shards[x%uint32(len(h.shards))]
}

// Head returns the hub's position: every delta at or below it has been fanned
// out (see Position).
func (h *Hub) Head() stream.LSN { return stream.LSN(h.head.Load()) }

// Epoch returns the epoch of the published history ("" before the first
// Reset or Ready).
func (h *Hub) Epoch() string {
	h.epochMu.RLock()
	defer h.epochMu.RUnlock()
	return h.epoch
}

// Ready makes sure the hub knows its epoch and head, reading them from the
// log if no Reset has arrived yet (a node that follows a bus), and returns
// them.
func (h *Hub) Ready(ctx context.Context) (epoch string, head stream.LSN, err error) {
	h.epochMu.RLock()
	ready, epoch := h.ready, h.epoch
	h.epochMu.RUnlock()
	if ready {
		return epoch, h.Head(), nil
	}
	m, err := h.log.Meta(ctx)
	if err != nil {
		return "", 0, errf(CodeInternal, "the store is unavailable", err)
	}
	h.pubMu.Lock()
	h.epochMu.RLock()
	ready = h.ready
	h.epochMu.RUnlock()
	if !ready {
		h.resetLocked(m)
	}
	h.pubMu.Unlock()
	return h.Epoch(), h.Head(), nil
}

// Reset starts an epoch. With a new epoch every connection is closed with
// 1001 so clients reconnect, see the new epoch in welcome and reset; with
// the same epoch (a restart) the ring is kept.
func (h *Hub) Reset(m stream.Meta) {
	h.pubMu.Lock()
	defer h.pubMu.Unlock()
	h.resetLocked(m)
}

func (h *Hub) resetLocked(m stream.Meta) {
	h.epochMu.Lock()
	old, ready := h.epoch, h.ready
	h.epoch, h.ready = m.Epoch, true
	h.epochMu.Unlock()
	pos := Position(m.Checkpoint)
	h.ring.mu.Lock()
	if !ready || old != m.Epoch {
		h.ring.resetLocked(pos)
	} else {
		h.ring.appendLocked(pos, nil)
	}
	h.head.Store(uint64(h.ring.head))
	h.ring.mu.Unlock()
	if !ready || old != m.Epoch {
		h.boardsHead = h.Head() // a new history: no board yet
	}
	if ready && old != m.Epoch {
		h.boards = nil // of the old history; their subscribers are closed below
		h.boardGauges()
		h.logger.Warn("hub: epoch changed; closing every connection", "old", old, "new", m.Epoch)
		h.CloseAll(CloseGoingAway, "epoch changed")
	}
}

// Publish fans committed transactions out. It never blocks on a client.
func (h *Hub) Publish(head stream.LSN, txns []stream.Txn) {
	h.pubMu.Lock()
	defer h.pubMu.Unlock()
	h.publishLocked(head, txns)
}

func (h *Hub) publishLocked(head stream.LSN, txns []stream.Txn) {
	if h.Head() != h.boardsHead {
		// The head moved without a Publish (a bus gap, a restart past
		// transactions never published): the boards missed them.
		h.dropBoardsLocked()
	}
	defer func() { h.boardsHead = h.Head() }()
	h.ring.mu.Lock()
	ts := make([]*txn, 0, len(txns))
	for _, t := range txns {
		if t.LSN > h.ring.last { // else a redelivery
			ts = append(ts, newTxn(t))
		}
	}
	// Ring and head first, then distribution: a subscription registered
	// after a transaction was distributed reads a head at or above it.
	h.ring.appendLocked(Position(head), ts)
	h.head.Store(uint64(h.ring.head))
	h.ring.mu.Unlock()

	matched := h.matched
	for _, t := range ts {
		h.m.txns.Inc()
		// Gather every item of t each subscription selects, then hand
		// each subscription its share under one hold of its lock: a
		// release (end of catch-up) or a throttled flush running
		// concurrently sees all of the transaction or none of it, so it
		// never leaves in two frames (a client cursor between them would
		// skip the rest of the transaction).
		for _, it := range t.items {
			matched = h.lookup(matched[:0], it.d.Subject)
			for _, s := range matched {
				items, ok := h.owed[s]
				if !ok {
					h.owedBy = append(h.owedBy, s)
				}
				h.owed[s] = appendOnce(items, it)
			}
		}
		for i, s := range h.owedBy {
			h.route(s, t, h.owed[s])
			delete(h.owed, s)
			h.owedBy[i] = nil
		}
		h.owedBy = h.owedBy[:0]
		for c, items := range h.scratch {
			if len(items) > 1 {
				items = t.order(items)
			}
			c.enqueue(h.frameOf(t, items, c.codec))
			delete(h.scratch, c)
		}
		h.publishBoards(t)
	}
	clear(matched[:cap(matched)]) // drop references to subscriptions
	h.matched = matched[:0]
}

// lookup appends the subscriptions selecting subject.
func (h *Hub) lookup(dst []*sub, subject string) []*sub {
	sh := h.shardOf(subject)
	sh.mu.RLock()
	for s := range sh.subs[subject] {
		dst = append(dst, s)
	}
	sh.mu.RUnlock()
	return h.prefixes.appendMatches(dst, subject)
}

// route hands a subscription its share of one transaction (items, in
// transaction order): buffered while it catches up, coalesced when
// throttled, else owed to its connection in this transaction's frame. The
// whole share is handled under one hold of s.mu. Called with pubMu held.
func (h *Hub) route(s *sub, t *txn, items []*item) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || (!s.catchingUp && t.lsn <= s.floor) {
		// A transaction at or below H reached a subscription that already
		// went live: it was in the replay or snapshot.
		return
	}
	switch {
	case s.catchingUp:
		// Publish routes each transaction to a subscription once, so
		// this is always a new group.
		s.buf = append(s.buf, group{t: t, items: items})
		s.bufDeltas += len(items)
		if s.bufDeltas > h.cfg.CatchupBuffer {
			h.m.slow.Inc()
			s.conn.Close(CloseSlowConsumer, "slow consumer: catch-up buffer overflow")
		}
	case s.throttle > 0:
		for _, it := range items {
			h.coalesceLocked(s, it)
		}
	default:
		h.scratch[s.conn] = append(h.scratch[s.conn], items...)
	}
}

// appendOnce appends it unless it is already last (a subject two of a
// connection's subscriptions select is sent once per frame).
func appendOnce(items []*item, it *item) []*item {
	if n := len(items); n > 0 && items[n-1] == it {
		return items
	}
	return append(items, it)
}

// Connect registers a connection speaking Codecs[codec].
func (h *Hub) Connect(codec int) *Conn {
	if codec < 0 || codec >= len(h.codecs) {
		panic("hub: Connect: codec index out of range")
	}
	c := &Conn{h: h, codec: codec, done: make(chan struct{})}
	c.lastSend.Store(time.Now().UnixNano())
	h.connMu.Lock()
	h.conns[c] = struct{}{}
	h.connMu.Unlock()
	h.m.conns.Inc()
	return c
}

// Disconnect closes c (1001 unless it was closed already) and removes it
// and its subscriptions from the hub.
func (h *Hub) Disconnect(c *Conn) {
	c.Close(CloseGoingAway, "disconnected")
	c.subMu.Lock()
	if c.removed {
		c.subMu.Unlock()
		return
	}
	c.removed = true
	subs := c.subs
	c.subs = nil
	c.subMu.Unlock()
	for _, s := range subs {
		h.unindex(s)
	}
	h.connMu.Lock()
	delete(h.conns, c)
	h.connMu.Unlock()
	h.m.conns.Dec()
}

// CloseAll closes every connection with code and reason; their sessions see
// Done and close the sockets.
func (h *Hub) CloseAll(code int, reason string) {
	for _, c := range h.connList() {
		c.Close(code, reason)
	}
}

// connList returns the connected clients, so they can be acted on without
// holding connMu.
func (h *Hub) connList() []*Conn {
	h.connMu.RLock()
	defer h.connMu.RUnlock()
	cs := make([]*Conn, 0, len(h.conns))
	for c := range h.conns {
		cs = append(cs, c)
	}
	return cs
}

// Connections returns the number of connected clients.
func (h *Hub) Connections() int {
	h.connMu.RLock()
	defer h.connMu.RUnlock()
	return len(h.conns)
}

// Subscriptions returns the number of subscriptions across connections.
func (h *Hub) Subscriptions() int { return int(h.nsubs.Load()) }

// Run sends ticks to idle connections until ctx is done.
func (h *Hub) Run(ctx context.Context) error {
	t := time.NewTicker(h.cfg.Heartbeat / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			h.tick(now)
		}
	}
}

// tick sends {"type":"tick"} to every connection that is idle. It holds
// pubMu, so the tick's LSN never runs ahead of a transaction being fanned
// out.
func (h *Hub) tick(now time.Time) {
	h.pubMu.Lock()
	defer h.pubMu.Unlock()
	h.epochMu.RLock()
	ready := h.ready
	h.epochMu.RUnlock()
	if !ready {
		return
	}
	head := h.Head()
	var frames [maxCodecs][]byte
	for _, c := range h.connList() {
		pos, ok := c.tickAt(now, head)
		if !ok {
			continue
		}
		if pos != head { // throttled deltas held: a tick of its own
			c.Enqueue(h.codecs[c.codec].Tick(pos))
			continue
		}
		if frames[c.codec] == nil {
			frames[c.codec] = h.codecs[c.codec].Tick(head)
		}
		c.Enqueue(frames[c.codec])
	}
}
