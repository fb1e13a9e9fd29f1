package hub

import (
	"sort"
	"time"
)

// coalesceLocked folds a live delta into a throttled subscription's pending
// delta for its subject and arms the flush. Called with s.mu held.
//
// A coalesced delta carries the latest state, lsn and version, the summed
// change, and in coalesced how many deltas it stands for, so a client's
// cursor and version checks still hold: the flush holds every delta the
// subscription was owed up to its greatest lsn.
func (h *Hub) coalesceLocked(s *sub, it *item) {
	n := it.d.Coalesced
	if n < 1 {
		n = 1
	}
	if s.pending == nil {
		s.pending = make(map[string]*pendingDelta)
	}
	if len(s.pending) == 0 {
		s.heldFrom = it.d.LSN // deltas come in LSN order
	}
	p := s.pending[it.d.Subject]
	if p == nil {
		p = &pendingDelta{d: it.d}
		p.d.Coalesced = n
		s.pending[it.d.Subject] = p
	} else {
		p.d.LSN, p.d.Version, p.d.After = it.d.LSN, it.d.Version, it.d.After
		p.d.Change.Count += it.d.Change.Count
		p.d.Change.Sum += it.d.Change.Sum
		p.d.Change.Mean += it.d.Change.Mean
		p.d.Change.Bayes += it.d.Change.Bayes
		p.d.Coalesced += n
	}
	if s.timer == nil {
		wait := max(s.throttle-time.Since(s.lastFlush), 0)
		s.timer = time.AfterFunc(wait, func() { h.flush(s) })
	}
}

// flush sends a throttled subscription's pending deltas in one frame, in
// LSN order.
func (h *Hub) flush(s *sub) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.timer = nil
	if s.closed || len(s.pending) == 0 {
		return
	}
	items := make([]*item, 0, len(s.pending))
	for _, p := range s.pending {
		items = append(items, &item{d: p.d})
	}
	sort.Slice(items, func(i, j int) bool {
		a, b := &items[i].d, &items[j].d
		if a.LSN != b.LSN {
			return a.LSN < b.LSN
		}
		return a.Subject < b.Subject
	})
	s.pending = nil
	s.lastFlush = time.Now()
	c := s.conn
	c.enqueue(h.frameOf(nil, items, c.codec))
	h.m.flushes.Inc()
}
