package hub

import (
	"slices"
	"sync"

	"github.com/repstream/repstream/stream"
)

// Modes of the subscribed message: how a subscription caught up.
const (
	ModeReplay   = "replay"
	ModeSnapshot = "snapshot"
)

// Codec encodes the server messages the hub originates for one WebSocket
// subprotocol. The hub encodes each delta once per codec and hands the same
// bytes to every connection that speaks it. Implementations must be safe for
// concurrent use and must not retain their arguments.
type Codec interface {
	// Delta returns a complete "delta" frame.
	Delta(d *stream.Delta) []byte
	// Deltas joins frames returned by Delta into one "deltas" frame.
	Deltas(frames [][]byte) []byte
	// Subscribed returns a "subscribed" frame.
	Subscribed(id int64, h stream.LSN, mode string, reset bool) []byte
	// Snapshot returns a "snapshot" frame; more is true on every chunk but
	// the last.
	Snapshot(id int64, h stream.LSN, states []stream.State, more bool) []byte
	// Tick returns a "tick" frame.
	Tick(head stream.LSN) []byte
	// CaughtUp returns a "caught_up" frame: subscription id's catch-up
	// ended; every delta it was owed up to lsn was sent before it.
	CaughtUp(id int64, lsn stream.LSN) []byte
	// Board returns a "board" frame: a leaderboard subscription's top at
	// lsn (entries[i] of rank i+1) and the moves since the last one.
	Board(id int64, lsn stream.LSN, order string, entries []stream.State, moves []stream.Move) []byte
}

// maxCodecs bounds the codecs one hub serves (JSON and protobuf today).
const maxCodecs = 4

// lazyBytes is an encoding computed at most once.
type lazyBytes struct {
	once sync.Once
	b    []byte
}

func (l *lazyBytes) get(f func() []byte) []byte {
	l.once.Do(func() { l.b = f() })
	return l.b
}

// item is one delta with its per-codec encodings, shared by the ring, every
// subscriber and every replay that reads it.
type item struct {
	d   stream.Delta
	at  int // index in its txn's items (a replayed delta: in its frame's)
	enc [maxCodecs]lazyBytes
}

func (it *item) frame(h *Hub, ci int) []byte {
	return it.enc[ci].get(func() []byte {
		b := h.codecs[ci].Delta(&it.d)
		h.m.encodes.Inc()
		return b
	})
}

// txn is one source transaction's items, in subject order.
type txn struct {
	lsn   stream.LSN
	items []*item
	full  [maxCodecs]lazyBytes // the frame of all items
}

func newTxn(t stream.Txn) *txn {
	return &txn{lsn: t.LSN, items: newItems(t.Deltas)}
}

// newItems wraps deltas, in order, as items backed by one allocation (they
// share a transaction's lifetime).
func newItems(ds []stream.Delta) []*item {
	slab := make([]item, len(ds))
	items := make([]*item, len(ds))
	for i := range ds {
		slab[i].d, slab[i].at = ds[i], i
		items[i] = &slab[i]
	}
	return items
}

// order sorts items, all of t, into t's order and drops repeats (a subject
// two subscriptions of one connection select is sent once per frame).
func (t *txn) order(items []*item) []*item {
	slices.SortFunc(items, func(a, b *item) int { return a.at - b.at })
	return slices.Compact(items)
}

// frameOf encodes items, a connection's share of one transaction (or a
// throttle's flush), as one frame. When items is the whole transaction the
// frame is shared.
func (h *Hub) frameOf(t *txn, items []*item, ci int) Frame {
	if len(items) == 1 {
		return Frame{Bytes: items[0].frame(h, ci), DeltaLSN: items[0].d.LSN}
	}
	if t != nil && len(items) == len(t.items) {
		return Frame{Bytes: t.full[ci].get(func() []byte { return h.joinFrames(items, ci) })}
	}
	return Frame{Bytes: h.joinFrames(items, ci)}
}

func (h *Hub) joinFrames(items []*item, ci int) []byte {
	fs := make([][]byte, len(items))
	for i, it := range items {
		fs[i] = it.frame(h, ci)
	}
	return h.codecs[ci].Deltas(fs)
}
