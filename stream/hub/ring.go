package hub

import (
	"sort"
	"sync"

	"github.com/repstream/repstream/stream"
)

// ring keeps the most recent transactions in memory so that reconnecting
// clients catch up without reading the store. It covers the cursors c with
// from <= c <= head: every transaction with lsn in (from, head] is held.
type ring struct {
	mu     sync.RWMutex
	max    int        // deltas; <0 disables
	txns   []*txn     // guarded by mu; LSN order; txns[start:] are live
	start  int        // guarded by mu
	deltas int        // guarded by mu; deltas held
	from   stream.LSN // guarded by mu
	head   stream.LSN // guarded by mu
	last   stream.LSN // guarded by mu; LSN of the last transaction appended
}

// resetLocked empties the ring at position lsn; it then covers only
// cursor lsn.
func (r *ring) resetLocked(lsn stream.LSN) {
	r.txns, r.start, r.deltas = nil, 0, 0
	r.from, r.head, r.last = lsn, lsn, lsn
}

// appendLocked adds committed transactions (above last, in LSN order) and
// moves head to the greater of head and the last transaction's LSN.
func (r *ring) appendLocked(head stream.LSN, ts []*txn) {
	for _, t := range ts {
		if t.lsn <= r.head {
			// Cannot happen when heads go through Position; if a head ran
			// past an unpublished transaction anyway, the ring no longer
			// vouches for anything below it.
			r.resetLocked(t.lsn - 1)
		}
		r.last = t.lsn
		if r.max < 0 {
			r.from = t.lsn
			r.head = t.lsn
			continue
		}
		r.txns = append(r.txns, t)
		r.deltas += len(t.items)
		r.head = t.lsn
	}
	if head > r.head {
		r.head = head
		if r.max < 0 {
			r.from = head
		}
	}
	for r.max >= 0 && r.deltas > r.max && r.start < len(r.txns) {
		old := r.txns[r.start]
		r.txns[r.start] = nil
		r.start++
		r.deltas -= len(old.items)
		r.from = old.lsn
	}
	if r.start > 1024 && r.start > len(r.txns)/2 { // compact
		r.txns = append([]*txn(nil), r.txns[r.start:]...)
		r.start = 0
	}
}

// group is the part of one transaction a subscription is owed.
type group struct {
	t     *txn
	items []*item
}

func (g group) lsn() stream.LSN { return g.t.lsn }

// read returns the selected deltas with since < lsn <= upto, grouped by
// transaction. ok is false when the ring does not cover since, or upto is
// beyond its head.
func (r *ring) read(sel stream.Selector, since, upto stream.LSN) (gs []group, ok bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if since < r.from || since > r.head || upto > r.head || since > upto {
		return nil, false
	}
	live := r.txns[r.start:]
	i := sort.Search(len(live), func(i int) bool { return live[i].lsn > since })
	for _, t := range live[i:] {
		if t.lsn > upto {
			break
		}
		g := group{t: t}
		for _, it := range t.items {
			if sel.Match(it.d.Subject) {
				g.items = append(g.items, it)
			}
		}
		if len(g.items) > 0 {
			gs = append(gs, g)
		}
	}
	return gs, true
}

func (r *ring) position() (from, head stream.LSN) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.from, r.head
}
