package stream

import (
	"context"
	"errors"
	"strings"
	"time"
)

// ErrNotFound means the subject has no state.
var ErrNotFound = errors.New("stream: subject not found")

// ErrPruned means a read of deltas after a cursor found the cursor below
// the log's start: retention pruned deltas the reader was owed. The reader
// must start over from states (a reset), never carry on with a gap.
var ErrPruned = errors.New("stream: the log was pruned past the cursor")

// Selector picks subjects by exact name or by prefix, as subscriptions do.
type Selector struct {
	Subjects []string
	Prefix   string
	// All selects every subject: a serving node reads whole transactions
	// from the delta log to fill a gap in the bus.
	All bool
}

// Match reports whether subject is selected.
func (s Selector) Match(subject string) bool {
	if s.All {
		return true
	}
	if s.Prefix != "" && strings.HasPrefix(subject, s.Prefix) {
		return true
	}
	for _, x := range s.Subjects {
		if x == subject {
			return true
		}
	}
	return false
}

// Meta is the store's position and identity, read consistently.
type Meta struct {
	Epoch    string // changes when the history is replaced; clients then reset
	Slot     string
	SystemID string
	Timeline int32
	// Checkpoint is the end LSN of the last applied source transaction (or a
	// later idle position): replication resumes there. The next
	// transaction's commit LSN may equal it, so as a cursor use
	// Checkpoint-1 (hub.Position): every delta at or below that is stored.
	Checkpoint LSN
	// LogFrom: deltas at or below it are not in the log (they predate the
	// snapshot load or were pruned); cursors below it get a reset.
	LogFrom  LSN
	LoadedAt time.Time // when the current epoch's snapshot load finished
}

// Order names a leaderboard ordering; all orders are descending.
type Order string

// Orders the HTTP API accepts.
const (
	OrderBayes     Order = "bayes"
	OrderMean      Order = "mean"
	OrderCount     Order = "count"
	OrderUpdatedAt Order = "updated_at"
)

// Move is one subject's change of rank on a leaderboard, for animation.
// A rank is 1-based; 0 means off the board (entered, or left).
type Move struct {
	Subject  string
	From, To int
}

// Log is the durable store's read side, used for catch-up and queries. It is
// safe for concurrent use.
type Log interface {
	// Meta returns the current epoch and positions.
	Meta(ctx context.Context) (Meta, error)
	// State returns one subject's state, or ErrNotFound.
	State(ctx context.Context, subject string) (State, error)
	// States returns the selected states ordered by order (empty: by subject),
	// at most limit (0: no limit), with the head they are consistent with.
	States(ctx context.Context, sel Selector, order Order, limit int) ([]State, LSN, error)
	// StatesAfter returns a page of the selected states: those whose
	// subject sorts after after (bytewise), in subject order, at most limit
	// (0: no limit), with the head they are consistent with. Snapshots are
	// read in such pages, so none holds every state at once.
	StatesAfter(ctx context.Context, sel Selector, after string, limit int) ([]State, LSN, error)
	// Deltas returns the selected deltas with since < lsn <= upto in LSN
	// order (subject order within a transaction), at most limit (0: no
	// limit); a limit never splits a transaction, so more may be returned.
	// The read is consistent with the log's start: if since is below it
	// (pruned), it returns ErrPruned and no deltas.
	Deltas(ctx context.Context, sel Selector, since, upto LSN, limit int) ([]Delta, error)
}

// Publisher receives each committed group of transactions, in LSN order,
// right after the store commits it. Publish must not block: the pipeline
// waits for it. head is the new checkpoint (see Meta.Checkpoint).
type Publisher interface {
	Publish(head LSN, txns []Txn)
	// Reset is called when the store starts (or restarts) an epoch: at start
	// and after the history was replaced (slot lost, sources changed).
	// Subscribers of an older epoch must be told to reset.
	Reset(m Meta)
}
