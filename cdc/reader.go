package cdc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"golang.org/x/sync/semaphore"
)

// EventKind says what an Event carries.
type EventKind uint8

// Event kinds, in the order a transaction produces them.
const (
	EventBegin EventKind = iota + 1
	EventInsert
	EventUpdate
	EventDelete
	EventTruncate
	EventCommit
	// EventMessage is a logical message (pg_logical_emit_message), e.g. a
	// heartbeat.
	EventMessage
	// EventPosition says that nothing before LSN remains to be delivered:
	// once everything delivered earlier is applied, LSN may be confirmed so
	// the slot advances while the source tables are idle.
	EventPosition
)

// Event is one decoded change in commit order. Rows carry their Relation so
// consumers can name values even after the table's shape changed.
type Event struct {
	Kind EventKind
	// Begin: the commit LSN (FinalLSN). Commit: the commit LSN. Message: its LSN.
	LSN pglogrepl.LSN
	// Commit: the end LSN, the position to confirm once applied.
	EndLSN pglogrepl.LSN
	// Begin and Commit: the commit time.
	Time time.Time
	Xid  uint32
	Rel  *Relation   // Insert, Update, Delete
	Rels []*Relation // Truncate
	// Old is the key ('K') or full ('O') old row of Update and Delete; nil
	// for an Update that kept its key under the DEFAULT replica identity.
	Old     Tuple
	OldKind byte
	New     Tuple
	Message *LogicalMessage
	// Footprint is what the event counts against the reader's QueueBytes;
	// the consumer hands it back with Release once done with the event.
	Footprint int64
}

// footprint estimates the memory an event holds: the struct, its tuples'
// values and their data.
func (ev *Event) footprint() int64 {
	n := int64(unsafe.Sizeof(*ev)) + tupleSize(ev.Old) + tupleSize(ev.New) + int64(8*len(ev.Rels))
	if ev.Message != nil {
		n += int64(unsafe.Sizeof(*ev.Message)) + int64(len(ev.Message.Prefix)+len(ev.Message.Content))
	}
	return n
}

func tupleSize(t Tuple) int64 {
	n := int64(len(t)) * int64(unsafe.Sizeof(Value{}))
	for i := range t {
		n += int64(len(t[i].Data))
	}
	return n
}

// ReaderConfig names what to stream; the zero StatusInterval means 1s.
type ReaderConfig struct {
	Slot        string
	Publication string
	// StatusInterval is how often a standby status update is sent even when
	// nothing happens; it must stay well below wal_sender_timeout.
	StatusInterval time.Duration
	// Started, if set, is called once the slot is held (START_REPLICATION
	// succeeded), before any event is delivered.
	Started func()
	// QueueBytes bounds the memory of the events delivered and not yet
	// released (see Event.Footprint), so row size cannot make the queue
	// to the consumer large (zero: 16 MiB). An event larger than the bound
	// waits until the queue is empty and then goes alone.
	QueueBytes int64
	Logger     *slog.Logger
}

// Reader drives one replication connection: it is the only goroutine that
// touches the connection, so it also sends the standby status updates, on
// time even while the consumer is busy with a huge transaction.
type Reader struct {
	cfg    ReaderConfig
	conn   *pgconn.PgConn
	rels   Relations
	budget *semaphore.Weighted // QueueBytes

	// applied is the end LSN of the last transaction the consumer has made
	// durable (Confirm); the only position reported as flushed, besides an
	// idle position proven to hold nothing unapplied.
	applied atomic.Uint64
	// consumed is an idle position the consumer has processed but not yet
	// confirmed (it stores such positions now and then): caught up, not flushed.
	consumed atomic.Uint64

	mu         sync.Mutex
	st         Status        // guarded by mu
	lastEnd    pglogrepl.LSN // guarded by mu: end of the last delivered transaction or idle position
	inTxn      bool          // only the Run goroutine
	lastStatus time.Time     // only the Run goroutine
}

// Status is what the reader knows about the replication position.
type Status struct {
	Connected    bool
	ServerWALEnd pglogrepl.LSN // the server's last reported WAL end
	Received     pglogrepl.LSN // the last position received
	Flushed      pglogrepl.LSN // the last confirmed flush LSN sent
	LastMessage  time.Time     // when the server last said anything
	CaughtUp     bool          // everything sent so far has been applied
}

// NewReader wraps an open replication connection (see ConnectReplication).
func NewReader(conn *pgconn.PgConn, cfg ReaderConfig) *Reader {
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.QueueBytes <= 0 {
		cfg.QueueBytes = 16 << 20
	}
	return &Reader{cfg: cfg, conn: conn, budget: semaphore.NewWeighted(cfg.QueueBytes)}
}

// Release hands back the footprint of events the consumer is done with
// (the sum of their Footprint), so the reader may deliver more.
func (r *Reader) Release(n int64) {
	if n > 0 {
		r.budget.Release(n)
	}
}

// Confirm records that every transaction ending at or before lsn is durable
// in the consumer's store; the next status update reports it as flushed.
func (r *Reader) Confirm(lsn pglogrepl.LSN) {
	for {
		cur := r.applied.Load()
		if uint64(lsn) <= cur || r.applied.CompareAndSwap(cur, uint64(lsn)) {
			return
		}
	}
}

// Consumed records that the consumer has processed everything up to lsn,
// though it confirms it only later: the reader counts as caught up.
func (r *Reader) Consumed(lsn pglogrepl.LSN) {
	for {
		cur := r.consumed.Load()
		if uint64(lsn) <= cur || r.consumed.CompareAndSwap(cur, uint64(lsn)) {
			return
		}
	}
}

// Status returns a copy of the reader's view of the positions.
func (r *Reader) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.st
	done := max(r.applied.Load(), r.consumed.Load())
	s.CaughtUp = pglogrepl.LSN(done) >= r.lastEnd
	return s
}

// ErrSlotInUse means another process holds the slot; the error names its PID.
var ErrSlotInUse = errors.New("cdc: replication slot is active for another process")

// ErrSlotMissing means the slot does not exist (dropped, or invalidated by
// max_slot_wal_keep_size): the history it held is gone.
var ErrSlotMissing = errors.New("cdc: replication slot does not exist")

// Run starts streaming at start and delivers events to out until ctx ends or
// the connection fails. start is the consumer's checkpoint, already confirmed.
func (r *Reader) Run(ctx context.Context, start pglogrepl.LSN, out chan<- Event) error {
	r.applied.Store(uint64(start))
	r.mu.Lock()
	r.lastEnd = start
	r.mu.Unlock()
	err := pglogrepl.StartReplication(ctx, r.conn, r.cfg.Slot, start, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{
			"proto_version '1'",
			"publication_names '" + escapeLiteral(r.cfg.Publication) + "'",
			"messages 'true'",
		},
	})
	if err != nil {
		return classify(fmt.Errorf("cdc: start replication on slot %s at %s: %w", r.cfg.Slot, start, err))
	}
	r.mu.Lock()
	r.st.Connected = true
	r.st.Flushed = start
	r.st.Received = start
	r.mu.Unlock()
	defer func() {
		if ctx.Err() != nil {
			// A requested stop: report the final confirmed position.
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			r.sendStatus(sctx, false) //nolint:errcheck // best effort on the way out
			cancel()
		}
		r.mu.Lock()
		r.st.Connected = false
		r.mu.Unlock()
	}()
	r.cfg.Logger.Info("replication started", "slot", r.cfg.Slot, "publication", r.cfg.Publication, "lsn", start.String())
	if r.cfg.Started != nil {
		r.cfg.Started()
	}
	ticker := time.NewTicker(r.cfg.StatusInterval)
	defer ticker.Stop()
	// One deadline context serves every receive until the next status update
	// is due (a context and a timer per message cost more than decoding it).
	var rctx context.Context
	stopRecv := context.CancelFunc(func() {})
	defer func() { stopRecv() }()
	var due time.Time
	for {
		if time.Since(r.lastStatus) >= r.cfg.StatusInterval {
			if err := r.sendStatus(ctx, false); err != nil {
				return err
			}
		}
		if d := r.lastStatus.Add(r.cfg.StatusInterval); rctx == nil || !d.Equal(due) || rctx.Err() != nil {
			stopRecv()
			var cancel context.CancelFunc
			rctx, cancel = context.WithDeadline(ctx, d)
			stopRecv, due = cancel, d
		}
		msg, err := r.conn.ReceiveMessage(rctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if pgconn.Timeout(err) {
				continue
			}
			return classify(fmt.Errorf("cdc: receive: %w", err))
		}
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			if err := r.handleCopyData(ctx, m.Data, out, ticker.C); err != nil {
				return err
			}
		case *pgproto3.ErrorResponse:
			return classify(fmt.Errorf("cdc: server: %w", pgconn.ErrorResponseToPgError(m)))
		case *pgproto3.CopyDone:
			return fmt.Errorf("cdc: server ended the replication stream")
		default:
			// NoticeResponse and friends: nothing to do.
		}
	}
}

func (r *Reader) handleCopyData(ctx context.Context, data []byte, out chan<- Event, tick <-chan time.Time) error {
	if len(data) == 0 {
		return fmt.Errorf("%w: empty CopyData", ErrMalformed)
	}
	now := time.Now()
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return fmt.Errorf("%w: keepalive: %v", ErrMalformed, err)
		}
		r.mu.Lock()
		r.st.ServerWALEnd = ka.ServerWALEnd
		r.st.LastMessage = now
		r.mu.Unlock()
		if ka.ReplyRequested {
			if err := r.sendStatus(ctx, false); err != nil {
				return err
			}
		}
		if !r.inTxn && ka.ServerWALEnd > r.end() {
			// Every transaction committed before ServerWALEnd was sent ahead of
			// this keepalive; once those are applied the idle WAL can go. The
			// position travels in order with the data, never around it.
			r.setEnd(ka.ServerWALEnd)
			select {
			case out <- Event{Kind: EventPosition, LSN: ka.ServerWALEnd}:
			default: // the consumer is busy; a later keepalive will do
			}
		}
		return nil
	case pglogrepl.XLogDataByteID:
		xld, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return fmt.Errorf("%w: xlogdata: %v", ErrMalformed, err)
		}
		r.mu.Lock()
		if xld.ServerWALEnd > r.st.ServerWALEnd {
			r.st.ServerWALEnd = xld.ServerWALEnd
		}
		if xld.WALStart > r.st.Received {
			r.st.Received = xld.WALStart
		}
		r.st.LastMessage = now
		r.mu.Unlock()
		msg, err := Decode(xld.WALData)
		if err != nil {
			if errors.Is(err, ErrUnknownMessage) {
				r.cfg.Logger.Warn("skipping unknown pgoutput message", "err", err, "lsn", xld.WALStart.String())
				return nil
			}
			return fmt.Errorf("cdc: decode at %s: %w", xld.WALStart, err)
		}
		ev, ok, err := r.event(msg, xld.WALStart)
		if err != nil || !ok {
			return err
		}
		return r.deliver(ctx, out, ev, tick)
	default:
		return fmt.Errorf("%w: unknown CopyData byte %q", ErrMalformed, data[0])
	}
}

// deliver hands ev to the consumer once the queue has room for its
// footprint, sending status updates while it waits, so a consumer busy with
// a huge transaction never trips wal_sender_timeout.
func (r *Reader) deliver(ctx context.Context, out chan<- Event, ev Event, tick <-chan time.Time) error {
	ev.Footprint = min(ev.footprint(), r.cfg.QueueBytes)
	for !r.budget.TryAcquire(ev.Footprint) {
		wctx, cancel := context.WithTimeout(ctx, r.cfg.StatusInterval)
		err := r.budget.Acquire(wctx, ev.Footprint)
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := r.sendStatus(ctx, false); err != nil {
			return err
		}
	}
	for {
		select {
		case out <- ev:
			return nil
		case <-tick:
			if err := r.sendStatus(ctx, false); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (r *Reader) event(msg Message, at pglogrepl.LSN) (Event, bool, error) {
	switch m := msg.(type) {
	case *Begin:
		r.inTxn = true
		return Event{Kind: EventBegin, LSN: m.FinalLSN, Time: m.CommitTime, Xid: m.Xid}, true, nil
	case *Commit:
		r.inTxn = false
		r.setEnd(m.EndLSN)
		return Event{Kind: EventCommit, LSN: m.CommitLSN, EndLSN: m.EndLSN, Time: m.CommitTime}, true, nil
	case *Relation:
		r.rels.Set(m)
		return Event{}, false, nil
	case *Insert:
		rel, err := r.rel(m.RelationID, "insert")
		return Event{Kind: EventInsert, Rel: rel, New: m.New}, err == nil, err
	case *Update:
		rel, err := r.rel(m.RelationID, "update")
		return Event{Kind: EventUpdate, Rel: rel, Old: m.Old, OldKind: m.OldKind, New: m.New}, err == nil, err
	case *Delete:
		rel, err := r.rel(m.RelationID, "delete")
		return Event{Kind: EventDelete, Rel: rel, Old: m.Old, OldKind: m.OldKind}, err == nil, err
	case *Truncate:
		ev := Event{Kind: EventTruncate}
		for _, id := range m.RelationIDs {
			rel, err := r.rel(id, "truncate")
			if err != nil {
				return ev, false, err
			}
			ev.Rels = append(ev.Rels, rel)
		}
		return ev, true, nil
	case *LogicalMessage:
		if !m.Transactional && !r.inTxn {
			r.setEnd(m.LSN)
		}
		return Event{Kind: EventMessage, LSN: m.LSN, Message: m}, true, nil
	default: // Origin, Type: nothing a consumer needs
		_ = at
		return Event{}, false, nil
	}
}

func (r *Reader) rel(id uint32, what string) (*Relation, error) {
	rel, ok := r.rels.Get(id)
	if !ok {
		return nil, fmt.Errorf("%w: %s for relation %d before its Relation message", ErrMalformed, what, id)
	}
	return rel, nil
}

// sendStatus reports the flushed position: the consumer's applied position,
// raised to an idle position only when nothing sent before it is unapplied.
func (r *Reader) sendStatus(ctx context.Context, reply bool) error {
	applied := pglogrepl.LSN(r.applied.Load())
	flush := applied
	r.mu.Lock()
	recv := r.st.Received
	if r.lastEnd > recv {
		recv = r.lastEnd
	}
	if flush > recv {
		recv = flush
	}
	r.mu.Unlock()
	err := pglogrepl.SendStandbyStatusUpdate(ctx, r.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: recv,
		WALFlushPosition: flush,
		WALApplyPosition: flush,
		ClientTime:       time.Now(),
		ReplyRequested:   reply,
	})
	if err != nil {
		return fmt.Errorf("cdc: send standby status: %w", err)
	}
	r.lastStatus = time.Now()
	r.mu.Lock()
	r.st.Flushed = flush
	r.mu.Unlock()
	return nil
}

func (r *Reader) end() pglogrepl.LSN {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastEnd
}

func (r *Reader) setEnd(lsn pglogrepl.LSN) {
	r.mu.Lock()
	if lsn > r.lastEnd {
		r.lastEnd = lsn
	}
	r.mu.Unlock()
}

func escapeLiteral(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			out = append(out, '\'')
		}
		out = append(out, s[i])
	}
	return string(out)
}

func classify(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "55006": // object_in_use: "replication slot ... is active for PID n"
			return fmt.Errorf("%w: %w", ErrSlotInUse, err)
		case "42704": // undefined_object: the slot is gone
			return fmt.Errorf("%w: %w", ErrSlotMissing, err)
		}
	}
	return err
}
