package hub

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/repstream/repstream/stream"
)

// MemLog is an in-memory stream.Log with a tiny fold of its own: the durable
// store's read side without Postgres, for tests and demos. Commit plays the
// pipeline's part (fold, store, then the caller publishes).
//
// MemLog is safe for concurrent use.
type MemLog struct {
	Prior stream.Prior

	mu     sync.RWMutex
	meta   stream.Meta               // guarded by mu
	states map[string]stream.State   // guarded by mu
	sorted []string                  // guarded by mu; the subjects of states in order, when not dirty
	dirty  bool                      // guarded by mu; a subject was added since sorted was built
	deltas []stream.Delta            // guarded by mu; LSN order
	rows   map[string][]stream.Micro // guarded by mu; scores per subject
	fail   error                     // guarded by mu; returned by every read when set
}

var _ stream.Log = (*MemLog)(nil)

// NewMemLog returns an empty log of epoch whose head is at. As after the
// engine's snapshot load, the log starts at Position(at): the first commit
// LSN may equal at, so the load's own cursor, at-1, is still retained.
func NewMemLog(epoch string, at stream.LSN) *MemLog {
	return &MemLog{
		Prior:  stream.Prior{Mean: 3.5, Weight: 10},
		meta:   stream.Meta{Epoch: epoch, Slot: "mem", Checkpoint: at, LogFrom: Position(at), LoadedAt: time.Now()},
		states: make(map[string]stream.State),
		rows:   make(map[string][]stream.Micro),
	}
}

// Op is one rating change: add a score to a subject, or remove one equal
// score from it.
type Op struct {
	Subject string
	Score   stream.Micro
	Remove  bool
}

// RandomOps returns 1–4 ratings of seller:0..n-1, with some of buyer:0..2:
// a random transaction for tests and demos.
func RandomOps(n int) []Op {
	var ops []Op
	for range 1 + rand.IntN(4) {
		subj := fmt.Sprintf("seller:%d", rand.IntN(n))
		if rand.IntN(5) == 0 {
			subj = fmt.Sprintf("buyer:%d", rand.IntN(3))
		}
		ops = append(ops, Op{Subject: subj, Score: stream.Micro(1+rand.IntN(5)) * stream.MicroUnit})
	}
	return ops
}

// Commit folds one source transaction whose commit LSN is lsn, stores it
// and returns it as the pipeline would publish it. Like the real store, the
// head becomes the transaction's end LSN, lsn+1, and the next commit LSN may
// equal it: lsn must be at or above the head.
func (l *MemLog) Commit(lsn stream.LSN, ops []Op) (stream.Txn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lsn < l.meta.Checkpoint {
		return stream.Txn{}, fmt.Errorf("memlog: commit at %s below head %s", lsn, l.meta.Checkpoint)
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	touched := map[string]bool{}
	for _, op := range ops {
		rs := l.rows[op.Subject]
		if op.Remove {
			for i, r := range rs {
				if r == op.Score {
					rs = append(rs[:i:i], rs[i+1:]...)
					break
				}
			}
		} else {
			rs = append(rs, op.Score)
		}
		l.rows[op.Subject] = rs
		touched[op.Subject] = true
	}
	subjects := make([]string, 0, len(touched))
	for s := range touched {
		subjects = append(subjects, s)
	}
	sort.Strings(subjects)
	t := stream.Txn{LSN: lsn, CommitAt: now}
	for _, subj := range subjects {
		before := l.states[subj]
		after := stream.State{Subject: subj, Hist: make([]int64, 5), Version: before.Version + 1, LSN: lsn, UpdatedAt: now}
		for _, r := range l.rows[subj] {
			after.Count++
			after.Sum += r
			if star := int(r/stream.MicroUnit) - 1; r%stream.MicroUnit == 0 && star >= 0 && star < 5 {
				after.Hist[star]++
			}
		}
		if after.Count > 0 {
			after.Mean = after.Sum.Float() / float64(after.Count)
		}
		after.Bayes = l.Prior.Bayes(after.Count, after.Sum)
		d := stream.Delta{Subject: subj, LSN: lsn, Version: after.Version, After: after, Coalesced: 1,
			Change: stream.Change{Count: after.Count - before.Count, Sum: after.Sum - before.Sum,
				Mean: after.Mean - before.Mean, Bayes: after.Bayes - before.Bayes}}
		if before.Version == 0 {
			d.Change.Bayes = after.Bayes - l.Prior.Bayes(0, 0)
		}
		if _, ok := l.states[subj]; !ok {
			l.dirty = true
		}
		l.states[subj] = after
		l.deltas = append(l.deltas, d)
		t.Deltas = append(t.Deltas, d)
	}
	l.meta.Checkpoint = lsn + 1
	return t, nil
}

// Advance moves the head without a transaction (an idle checkpoint).
func (l *MemLog) Advance(lsn stream.LSN) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lsn > l.meta.Checkpoint {
		l.meta.Checkpoint = lsn
	}
}

// Replace starts epoch at head at with an empty history, as a new
// snapshot load does.
func (l *MemLog) Replace(epoch string, at stream.LSN) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.meta = stream.Meta{Epoch: epoch, Slot: l.meta.Slot, Checkpoint: at, LogFrom: Position(at), LoadedAt: time.Now()}
	l.deltas = nil
	clear(l.states)
	clear(l.rows)
}

// Prune drops the deltas at or below upto, as retention does.
func (l *MemLog) Prune(upto stream.LSN) {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := sort.Search(len(l.deltas), func(i int) bool { return l.deltas[i].LSN > upto })
	l.deltas = append([]stream.Delta(nil), l.deltas[i:]...)
	if upto > l.meta.LogFrom {
		l.meta.LogFrom = upto
	}
}

// SetFail makes every read fail with err (nil heals).
func (l *MemLog) SetFail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.fail = err
}

// Meta implements stream.Log.
func (l *MemLog) Meta(context.Context) (stream.Meta, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.meta, l.fail
}

// State implements stream.Log.
func (l *MemLog) State(_ context.Context, subject string) (stream.State, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.fail != nil {
		return stream.State{}, l.fail
	}
	s, ok := l.states[subject]
	if !ok {
		return stream.State{}, stream.ErrNotFound
	}
	return s, nil
}

// States implements stream.Log.
func (l *MemLog) States(_ context.Context, sel stream.Selector, order stream.Order, limit int) ([]stream.State, stream.LSN, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.fail != nil {
		return nil, 0, l.fail
	}
	var out []stream.State
	for _, s := range l.states {
		if sel.Match(s.Subject) {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		switch order {
		case stream.OrderBayes:
			if a.Bayes != b.Bayes {
				return a.Bayes > b.Bayes
			}
		case stream.OrderMean:
			if a.Mean != b.Mean {
				return a.Mean > b.Mean
			}
		case stream.OrderCount:
			if a.Count != b.Count {
				return a.Count > b.Count
			}
		case stream.OrderUpdatedAt:
			if !a.UpdatedAt.Equal(b.UpdatedAt) {
				return a.UpdatedAt.After(b.UpdatedAt)
			}
		}
		return strings.Compare(a.Subject, b.Subject) < 0
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, l.meta.Checkpoint, nil
}

// StatesAfter implements stream.Log.
func (l *MemLog) StatesAfter(_ context.Context, sel stream.Selector, after string, limit int) ([]stream.State, stream.LSN, error) {
	l.mu.Lock() // may sort the subjects
	defer l.mu.Unlock()
	if l.fail != nil {
		return nil, 0, l.fail
	}
	if l.dirty || len(l.sorted) != len(l.states) {
		l.sorted = l.sorted[:0]
		for subj := range l.states {
			l.sorted = append(l.sorted, subj)
		}
		sort.Strings(l.sorted)
		l.dirty = false
	}
	var out []stream.State
	for _, subj := range l.sorted[sort.SearchStrings(l.sorted, after):] {
		if subj == after || !sel.Match(subj) {
			continue
		}
		if limit > 0 && len(out) == limit {
			break
		}
		out = append(out, l.states[subj])
	}
	return out, l.meta.Checkpoint, nil
}

// Deltas implements stream.Log.
func (l *MemLog) Deltas(_ context.Context, sel stream.Selector, since, upto stream.LSN, limit int) ([]stream.Delta, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.fail != nil {
		return nil, l.fail
	}
	if since < l.meta.LogFrom {
		return nil, stream.ErrPruned
	}
	i := sort.Search(len(l.deltas), func(i int) bool { return l.deltas[i].LSN > since })
	var out []stream.Delta
	for _, d := range l.deltas[i:] {
		if d.LSN > upto {
			break
		}
		if limit > 0 && len(out) >= limit && d.LSN != out[len(out)-1].LSN {
			break
		}
		if sel.Match(d.Subject) {
			out = append(out, d)
		}
	}
	return out, nil
}
