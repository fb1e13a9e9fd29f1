package hub

import (
	"slices"
	"sync"
	"time"

	"github.com/repstream/repstream/stream"
)

// sub is one subscribe request of one connection.
type sub struct {
	conn     *Conn
	id       int64
	prefix   string
	throttle time.Duration

	mu         sync.Mutex
	subjects   []string                 // guarded by mu; sorted, distinct (a slice: a map of one subject cost 200 bytes a connection)
	closed     bool                     // guarded by mu
	catchingUp bool                     // guarded by mu; live deltas go to buf
	floor      stream.LSN               // guarded by mu; caught up to here: deltas at or below it were sent
	buf        []group                  // guarded by mu
	bufDeltas  int                      // guarded by mu
	pending    map[string]*pendingDelta // guarded by mu; throttled, not yet flushed
	heldFrom   stream.LSN               // guarded by mu; LSN of the first delta pending holds (set while pending is not empty)
	timer      *time.Timer              // guarded by mu; armed while pending is not empty
	lastFlush  time.Time                // guarded by mu

	// A leaderboard subscription (board != nil) gets no deltas: see board.go.
	board *board     // set before the subscription is indexed
	top   int        // its board's length
	view  *boardView // guarded by mu; the top last sent
}

func (s *sub) selector() stream.Selector {
	s.mu.Lock()
	defer s.mu.Unlock()
	return stream.Selector{Prefix: s.prefix, Subjects: slices.Clone(s.subjects)}
}

// pendingDelta is a subject's coalesced deltas awaiting a throttled flush.
type pendingDelta struct {
	d stream.Delta
}

// shard is a part of the exact-subject index.
type shard struct {
	mu   sync.RWMutex
	subs map[string]map[*sub]struct{} // guarded by mu
}

// prefixIndex finds prefix subscriptions by probing each prefix length in
// use, so matching costs the number of distinct prefix lengths, not the
// number of subscriptions.
type prefixIndex struct {
	mu   sync.RWMutex
	subs map[string]map[*sub]struct{} // guarded by mu
	lens map[int]int                  // guarded by mu; prefix length -> prefixes of that length
	ord  []int                        // guarded by mu; keys of lens, sorted
}

func (p *prefixIndex) add(s *sub) {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.subs[s.prefix]
	if m == nil {
		m = make(map[*sub]struct{})
		p.subs[s.prefix] = m
		if p.lens[len(s.prefix)] == 0 {
			p.ord = append(p.ord, len(s.prefix))
			slices.Sort(p.ord)
		}
		p.lens[len(s.prefix)]++
	}
	m[s] = struct{}{}
}

func (p *prefixIndex) remove(s *sub) {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.subs[s.prefix]
	if m == nil {
		return
	}
	delete(m, s)
	if len(m) > 0 {
		return
	}
	delete(p.subs, s.prefix)
	n := len(s.prefix)
	if p.lens[n]--; p.lens[n] == 0 {
		delete(p.lens, n)
		for i, l := range p.ord {
			if l == n {
				p.ord = append(p.ord[:i], p.ord[i+1:]...)
				break
			}
		}
	}
}

// appendMatches appends the prefix subscriptions matching subject.
func (p *prefixIndex) appendMatches(dst []*sub, subject string) []*sub {
	p.mu.RLock()
	defer p.mu.RUnlock()
	for _, n := range p.ord {
		if n > len(subject) {
			break
		}
		for s := range p.subs[subject[:n]] {
			dst = append(dst, s)
		}
	}
	return dst
}
