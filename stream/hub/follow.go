package hub

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/repstream/repstream/stream"
)

// FollowConfig tunes how a serving node follows the bus. The zero value is
// valid.
type FollowConfig struct {
	// Poll is how often the node reads the store while the bus is down, so
	// clients keep receiving. Zero means 250ms.
	Poll time.Duration
	// Check is how often the node compares its epoch and head with the
	// store's while the bus is up, so a lost message (a new epoch's Reset,
	// the tail of a publisher killed with its queue) costs at most this
	// long. Zero means 1s.
	Check time.Duration
}

func (c FollowConfig) withDefaults() FollowConfig {
	if c.Poll <= 0 {
		c.Poll = 250 * time.Millisecond
	}
	if c.Check <= 0 {
		c.Check = time.Second
	}
	return c
}

// FollowStatus is a following node's view of the bus, for /v1/status.
type FollowStatus struct {
	Following bool // Follow is running
	BusUp     bool // the bus subscription is connected
	Gaps      int64
	StoreErrs int64 // failed store reads while filling a gap
}

// followState is what Follow shares with status readers.
type followState struct {
	following atomic.Bool
	up        atomic.Bool
	gaps      atomic.Int64
	storeErrs atomic.Int64
	failing   atomic.Bool // the last store read failed
}

// FollowStatus reports the bus as Follow sees it.
func (h *Hub) FollowStatus() FollowStatus {
	return FollowStatus{Following: h.follow.following.Load(), BusUp: h.follow.up.Load(),
		Gaps: h.follow.gaps.Load(), StoreErrs: h.follow.storeErrs.Load()}
}

type busEvent struct {
	m    Message
	up   bool
	down error
}

// chanSub hands a subscription's events to Follow's goroutine.
type chanSub struct {
	ctx context.Context
	ch  chan<- busEvent
}

func (s chanSub) send(e busEvent) {
	select {
	case s.ch <- e:
	case <-s.ctx.Done():
	}
}

func (s chanSub) Message(m Message) { s.send(busEvent{m: m}) }
func (s chanSub) Up()               { s.send(busEvent{up: true}) }
func (s chanSub) Down(err error)    { s.send(busEvent{down: err}) }

// Follow feeds the hub from the bus until ctx is done. The store's delta
// log is the truth and the bus only says that there is more: a transaction
// is delivered only once every one before it was, and a gap (a message
// that does not continue from the hub's head, a Reset ahead of it, a bus
// reconnect, a node that starts late) is read from the log in order first.
// While the bus is down the hub polls the log every cfg.Poll; while it is
// up it still compares epoch and head with the store every cfg.Check, so an
// epoch change is never noticed only through one message.
func (h *Hub) Follow(ctx context.Context, bus Bus, cfg FollowConfig) error {
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := make(chan busEvent, 256)
	var wg sync.WaitGroup
	var subErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer cancel()
		subErr = bus.Subscribe(ctx, chanSub{ctx: ctx, ch: events})
	}()
	defer wg.Wait()
	h.follow.following.Store(true)
	defer h.follow.following.Store(false)
	defer h.follow.up.Store(false)

	h.catchUpStore(ctx)
	t := time.NewTimer(cfg.Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return subErr
		case e := <-events:
			switch {
			case e.up:
				if !h.follow.up.Swap(true) {
					h.logger.Info("hub: bus connected; reading what was missed from the store")
				}
				h.catchUpStore(ctx)
			case e.down != nil:
				if h.follow.up.Swap(false) {
					h.logger.Warn("hub: bus down; polling the store until it is back", "err", e.down, "poll", cfg.Poll)
				}
				t.Reset(cfg.Poll)
			default:
				h.follow1(ctx, e.m)
			}
			continue
		case <-h.kick:
		case <-t.C:
		}
		h.catchUpStore(ctx)
		if h.follow.up.Load() {
			t.Reset(cfg.Check)
		} else {
			t.Reset(cfg.Poll)
		}
	}
}

// follow1 applies one bus message: directly when it continues from the
// hub's head in the hub's epoch, else after reading the store.
func (h *Hub) follow1(ctx context.Context, m Message) {
	// A message without an epoch comes from a publisher older than the
	// field: the periodic check covers its epoch changes.
	other := m.Epoch != "" && m.Epoch != h.Epoch()
	if m.Reset != nil || other || Position(m.Prev) > h.Head() {
		if m.Reset == nil && !other {
			h.follow.gaps.Add(1)
			h.m.busGaps.Inc()
		}
		if !h.catchUpStore(ctx) || (m.Epoch != "" && m.Epoch != h.Epoch()) || Position(m.Prev) > h.Head() {
			// The store could not be read, or the message is of an epoch
			// the store does not show yet: the next check or message
			// tries again; nothing is delivered out of order.
			return
		}
	}
	h.Publish(m.Head, m.Txns) // transactions at or below the head are skipped
}

// catchUpStore brings the hub to the store's epoch and head: a new epoch
// resets it (closing every connection), a head behind the store's is
// filled from the delta log in LSN order. It reports whether the store
// could be read.
func (h *Hub) catchUpStore(ctx context.Context) bool {
	m, err := h.log.Meta(ctx)
	if err != nil {
		h.storeErr(ctx, err)
		return false
	}
	if h.follow.failing.Swap(false) {
		h.logger.Info("hub: the store answers again")
	}
	h.pubMu.Lock()
	defer h.pubMu.Unlock()
	h.epochMu.RLock()
	epoch, ready := h.epoch, h.ready
	h.epochMu.RUnlock()
	if !ready || epoch != m.Epoch {
		h.resetLocked(m)
		return true
	}
	to := Position(m.Checkpoint)
	head := h.Head()
	if head >= to {
		return true
	}
	if head < m.LogFrom {
		// The log no longer holds the gap: clients resume from the store,
		// which gives each the reset its cursor needs.
		h.logger.Warn("hub: the store's delta log no longer holds this node's gap; closing connections so clients resume", "head", head, "log_from", m.LogFrom)
		h.jumpLocked(to)
		return true
	}
	for head < to {
		ds, err := h.log.Deltas(ctx, stream.Selector{All: true}, head, to, h.cfg.ReplayPage)
		if err != nil {
			h.storeErr(ctx, err)
			return false
		}
		// Deltas of the epoch read above only: epochs never come back, so
		// the same epoch after the read means the read was of it.
		if m2, err := h.log.Meta(ctx); err != nil || m2.Epoch != m.Epoch {
			if err != nil {
				h.storeErr(ctx, err)
			}
			return false
		}
		next := to
		if len(ds) >= h.cfg.ReplayPage {
			next = ds[len(ds)-1].LSN
		}
		h.publishLocked(next+1, groupTxns(ds))
		head = next
	}
	return true
}

func (h *Hub) storeErr(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	h.follow.storeErrs.Add(1)
	if !h.follow.failing.Swap(true) {
		h.logger.Error("hub: cannot read the store to follow the stream; retrying", "err", err)
	}
}

// groupTxns groups deltas in LSN order into transactions.
func groupTxns(ds []stream.Delta) []stream.Txn {
	var ts []stream.Txn
	for i := 0; i < len(ds); {
		j := i + 1
		for j < len(ds) && ds[j].LSN == ds[i].LSN {
			j++
		}
		ts = append(ts, stream.Txn{LSN: ds[i].LSN, CommitAt: ds[i].After.UpdatedAt, Deltas: ds[i:j:j]})
		i = j
	}
	return ts
}

// jumpLocked forgets the ring and moves to lsn when the gap cannot be
// read; every connection is closed so its client resumes from the store.
func (h *Hub) jumpLocked(lsn stream.LSN) {
	h.ring.mu.Lock()
	h.ring.resetLocked(lsn)
	h.head.Store(uint64(lsn))
	h.ring.mu.Unlock()
	h.CloseAll(CloseGoingAway, "resync")
}

// nudge asks Follow to compare the hub with the store now.
func (h *Hub) nudge() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}
