package stream

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Problem is a condition under which repstream stops deriving exactly. It
// is said loudly until it is resolved: an ERROR log line repeated while it
// lasts, /readyz 503 with the reason, /v1/status, the repstream_problem
// gauge, and the doctor.
type Problem struct {
	// Code is stable, for alerts and tests: e.g. "load_failed", "source_column_missing".
	Code string `json:"code"`
	// Source is the table whose derivation stopped; empty when the whole pipeline stopped.
	Source string `json:"source,omitempty"`
	// Reason says what is wrong, Fix what to do about it (SQL or a configuration change).
	Reason string    `json:"reason"`
	Fix    string    `json:"fix,omitempty"`
	Since  time.Time `json:"since"`
}

func (p Problem) String() string {
	s := p.Reason
	if p.Source != "" && !strings.Contains(s, p.Source) {
		s = p.Source + ": " + s
	}
	if p.Fix != "" {
		s += " (fix: " + p.Fix + ")"
	}
	return s
}

// problemRepeat is how often a problem that lasts is logged again.
const problemRepeat = 30 * time.Second

type problemKey struct{ code, source string }

// problems is the set of open problems; the zero value is empty.
type problems struct {
	mu     sync.Mutex
	open   map[problemKey]Problem // guarded by mu
	logged map[problemKey]time.Time
	ready  func(context.Context) error // replaces Readiness for the metric; nil: Readiness
}

// Report opens (or refreshes) a problem: the pipeline is then not ready
// until Resolve is called with the same code and source.
func (e *Engine) Report(p Problem) {
	k := problemKey{p.Code, p.Source}
	e.problems.mu.Lock()
	if e.problems.open == nil {
		e.problems.open, e.problems.logged = map[problemKey]Problem{}, map[problemKey]time.Time{}
	}
	if old, ok := e.problems.open[k]; ok {
		p.Since = old.Since
	} else if p.Since.IsZero() {
		p.Since = time.Now()
	}
	e.problems.open[k] = p
	last, seen := e.problems.logged[k]
	due := !seen || time.Since(last) >= problemRepeat
	if due {
		e.problems.logged[k] = time.Now()
	}
	e.problems.mu.Unlock()
	if due {
		e.logProblem(p)
	}
}

// Resolve closes a problem opened by Report; it is a no-op when none is open.
func (e *Engine) Resolve(code, source string) {
	k := problemKey{code, source}
	e.problems.mu.Lock()
	p, ok := e.problems.open[k]
	delete(e.problems.open, k)
	delete(e.problems.logged, k)
	e.problems.mu.Unlock()
	if ok {
		e.log.Info("problem resolved", "code", code, "source", source, "lasted", time.Since(p.Since).Round(time.Second))
	}
}

// Problems lists the open problems, oldest first.
func (e *Engine) Problems() []Problem {
	e.problems.mu.Lock()
	out := make([]Problem, 0, len(e.problems.open))
	for _, p := range e.problems.open {
		out = append(out, p)
	}
	e.problems.mu.Unlock()
	slices.SortFunc(out, func(a, b Problem) int {
		if c := a.Since.Compare(b.Since); c != 0 {
			return c
		}
		return strings.Compare(a.Code+a.Source, b.Code+b.Source)
	})
	return out
}

func (e *Engine) logProblem(p Problem) {
	e.log.Error("NOT DERIVING EXACTLY: "+p.Reason, "code", p.Code, "source", p.Source, "fix", p.Fix,
		"since", p.Since.Format(time.RFC3339))
}

// repeatProblems logs every open problem again each problemRepeat, so the
// condition stays in the log for as long as it lasts.
func (e *Engine) repeatProblems(ctx context.Context) {
	t := time.NewTicker(problemRepeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, p := range e.Problems() {
			e.Report(p)
		}
	}
}

// SetReadiness replaces the definition of ready behind repstream_ready,
// for a node whose /readyz means something else (one fed by the bus).
func (e *Engine) SetReadiness(f func(context.Context) error) {
	e.problems.mu.Lock()
	defer e.problems.mu.Unlock()
	e.problems.ready = f
}

func (e *Engine) readiness() func(context.Context) error {
	e.problems.mu.Lock()
	defer e.problems.mu.Unlock()
	if e.problems.ready != nil {
		return e.problems.ready
	}
	return e.Readiness
}

// readySlack is how much WAL the walsender may still have to decode while
// the service counts as caught up: a moment's worth on a busy server.
const readySlack = 16 << 20

// readyTimeout bounds the database query behind readiness, so /readyz
// answers at once even when the database does not.
const readyTimeout = 500 * time.Millisecond

// errNoAnswer is readiness's reason when the database is silent.
var errNoAnswer = errors.New("the database does not answer")

// Readiness is the one definition of ready behind /readyz, /v1/status and
// repstream_ready: no open problem, replication connected, everything
// received applied, and the walsender within readySlack of the server's
// flushed WAL. (The checkpoint itself only moves with the sources'
// transactions and heartbeats, so on a server busy with other tables it
// trails by design; what the walsender has yet to decode does not.) The
// error says why not.
func (e *Engine) Readiness(ctx context.Context) error {
	if ps := e.Problems(); len(ps) > 0 {
		return errors.New(ps[0].String())
	}
	if !e.ready.Load() {
		if why := e.down.Load(); why != nil && !e.Status().Reader.Connected {
			return errors.New("replication is not connected: " + *why)
		}
		return errors.New("replication is not connected (see the log for the last error)")
	}
	st := e.Status()
	if !st.Reader.Connected {
		return errors.New("replication is not connected")
	}
	// The database first: a reader that cannot apply what it received
	// because the database went silent is not "catching up".
	behind, err := e.walBehind(ctx, st.Reader.ServerWALEnd)
	if errors.Is(err, errNoAnswer) {
		return err
	}
	if !st.Reader.CaughtUp {
		return errors.New("catching up: received changes are not applied yet")
	}
	if err != nil {
		return err
	}
	if behind > readySlack {
		return fmt.Errorf("catching up: %d bytes of WAL not yet decoded", behind)
	}
	return nil
}

// walBehind is how far the walsender of the slot is behind the server's
// flushed WAL (replayed WAL on a standby). A role without pg_read_all_stats sees no sent_lsn: the
// position the walsender last reported to the reader (sent) stands in.
func (e *Engine) walBehind(ctx context.Context, sent LSN) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var behind *int64
	err := e.pool.QueryRow(ctx, `
SELECT ((CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_flush_lsn() END) - coalesce(r.sent_lsn, nullif($2::pg_lsn, '0/0')))::bigint
FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid
WHERE s.slot_name = $1`, e.cfg.Slot, sent.String()).Scan(&behind)
	switch {
	case ctx.Err() != nil:
		return 0, fmt.Errorf("%w within %s", errNoAnswer, readyTimeout)
	case err != nil:
		return 0, fmt.Errorf("checking replication progress: %w", err)
	case behind == nil:
		return 0, errors.New("the walsender has sent nothing yet")
	}
	return max(*behind, 0), nil
}
