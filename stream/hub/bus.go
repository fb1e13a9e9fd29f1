package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/repstream/repstream/stream"
)

// Bus carries the committed stream from the node that runs replication to
// the hub of every node. A backend delivers each subscriber the messages in
// publish order; it may lose messages (a full buffer, a trimmed Redis
// stream), and a subscriber detects the loss from Message.Prev.
type Bus interface {
	// Publish sends m to every subscriber.
	Publish(ctx context.Context, m Message) error
	// Subscribe calls fn with each message published after it starts, in
	// order, from one goroutine, until ctx is done or the bus fails for
	// good. It returns nil when ctx is done.
	Subscribe(ctx context.Context, fn func(Message)) error
}

// Message is one Publish or Reset of the publishing node.
type Message struct {
	// Prev is the head the publisher had before this message; a
	// subscriber whose position is below Position(Prev) missed a message.
	Prev  stream.LSN
	Head  stream.LSN
	Txns  []stream.Txn
	Reset *stream.Meta // set for a Reset; Prev is then meaningless
}

// BusPublisher is the stream.Publisher of the node that runs replication
// when nodes share a bus: it queues each Publish and Reset for the bus
// without blocking the pipeline. Run sends them. When the queue is full a
// message is dropped; the next message's Prev tells subscribers to resync.
type BusPublisher struct {
	bus    Bus
	logger *slog.Logger
	q      chan Message

	mu   sync.Mutex
	head stream.LSN // guarded by mu; head of the last Publish
}

var _ stream.Publisher = (*BusPublisher)(nil)

// NewBusPublisher returns a publisher that queues up to queue messages
// (zero means 1024).
func NewBusPublisher(bus Bus, queue int, logger *slog.Logger) *BusPublisher {
	if queue <= 0 {
		queue = 1024
	}
	if logger == nil {
		logger = slog.Default()
	}
	return &BusPublisher{bus: bus, logger: logger, q: make(chan Message, queue)}
}

// Publish implements stream.Publisher.
func (p *BusPublisher) Publish(head stream.LSN, txns []stream.Txn) {
	p.mu.Lock()
	m := Message{Prev: p.head, Head: head, Txns: txns}
	p.head = max(p.head, head)
	p.mu.Unlock()
	p.send(m)
}

// Reset implements stream.Publisher.
func (p *BusPublisher) Reset(meta stream.Meta) {
	p.mu.Lock()
	p.head = meta.Checkpoint
	p.mu.Unlock()
	p.send(Message{Head: meta.Checkpoint, Reset: &meta})
}

func (p *BusPublisher) send(m Message) {
	select {
	case p.q <- m:
	default:
		p.logger.Warn("hub: bus queue full; dropped a message (subscribers will resync)", "head", m.Head)
	}
}

// Run sends queued messages until ctx is done, retrying each for a while
// before dropping it.
func (p *BusPublisher) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-p.q:
			for attempt := 0; ; attempt++ {
				err := p.bus.Publish(ctx, m)
				if err == nil || ctx.Err() != nil {
					break
				}
				if attempt >= 5 {
					p.logger.Error("hub: bus publish failed; dropped a message (subscribers will resync)", "err", err)
					break
				}
				select {
				case <-ctx.Done():
				case <-time.After(time.Duration(100<<attempt) * time.Millisecond):
				}
			}
		}
	}
}

// Follow feeds the hub from the bus until ctx is done. A gap in the stream
// (a lost message) closes every connection with 1001: their clients resume
// from their cursors, which the store replays exactly.
func (h *Hub) Follow(ctx context.Context, bus Bus) error {
	return bus.Subscribe(ctx, h.apply)
}

func (h *Hub) apply(m Message) {
	if m.Reset != nil {
		h.Reset(*m.Reset)
		return
	}
	if _, _, err := h.Ready(context.Background()); err != nil {
		h.logger.Error("hub: bus message before the store is readable", "err", err)
	}
	if prev := Position(m.Prev); prev > h.Head() {
		h.resync(prev)
	}
	h.Publish(m.Head, m.Txns)
}

// resync forgets the ring and jumps to lsn after a lost bus message.
func (h *Hub) resync(lsn stream.LSN) {
	h.pubMu.Lock()
	defer h.pubMu.Unlock()
	h.m.busGaps.Inc()
	h.logger.Warn("hub: gap in the bus stream; closing connections so clients resume from the store", "head", h.Head(), "prev", lsn)
	h.ring.mu.Lock()
	h.ring.resetLocked(lsn)
	h.head.Store(uint64(lsn))
	h.ring.mu.Unlock()
	h.CloseAll(CloseGoingAway, "resync")
}

// Bus wire form: full precision, independent of the client protocol.
type busMessage struct {
	Prev  uint64       `json:"prev"`
	Head  uint64       `json:"head"`
	Txns  []busTxn     `json:"txns,omitempty"`
	Reset *stream.Meta `json:"reset,omitempty"`
}

type busTxn struct {
	LSN      uint64     `json:"lsn"`
	CommitAt time.Time  `json:"at"`
	Deltas   []busDelta `json:"d"`
}

type busDelta struct {
	Subject   string        `json:"s"`
	Version   int64         `json:"v"`
	Count     int64         `json:"c"`
	Sum       int64         `json:"sum"`
	Mean      float64       `json:"m"`
	Bayes     float64       `json:"b"`
	Hist      []int64       `json:"h,omitempty"`
	UpdatedAt time.Time     `json:"at"`
	Change    stream.Change `json:"ch"`
	Coalesced int           `json:"n,omitempty"`
}

// EncodeMessage returns m's bus wire form.
func EncodeMessage(m Message) ([]byte, error) {
	w := busMessage{Prev: uint64(m.Prev), Head: uint64(m.Head), Reset: m.Reset}
	for _, t := range m.Txns {
		bt := busTxn{LSN: uint64(t.LSN), CommitAt: t.CommitAt, Deltas: make([]busDelta, len(t.Deltas))}
		for i, d := range t.Deltas {
			bt.Deltas[i] = busDelta{Subject: d.Subject, Version: d.Version, Count: d.After.Count,
				Sum: int64(d.After.Sum), Mean: d.After.Mean, Bayes: d.After.Bayes, Hist: d.After.Hist,
				UpdatedAt: d.After.UpdatedAt, Change: d.Change, Coalesced: d.Coalesced}
		}
		w.Txns = append(w.Txns, bt)
	}
	return json.Marshal(w)
}

// DecodeMessage reads a bus message.
func DecodeMessage(b []byte) (Message, error) {
	var w busMessage
	if err := json.Unmarshal(b, &w); err != nil {
		return Message{}, fmt.Errorf("hub: bus message: %w", err)
	}
	m := Message{Prev: stream.LSN(w.Prev), Head: stream.LSN(w.Head), Reset: w.Reset}
	for _, bt := range w.Txns {
		t := stream.Txn{LSN: stream.LSN(bt.LSN), CommitAt: bt.CommitAt, Deltas: make([]stream.Delta, len(bt.Deltas))}
		for i, d := range bt.Deltas {
			t.Deltas[i] = stream.Delta{Subject: d.Subject, LSN: t.LSN, Version: d.Version, Change: d.Change, Coalesced: d.Coalesced,
				After: stream.State{Subject: d.Subject, Count: d.Count, Sum: stream.Micro(d.Sum), Mean: d.Mean, Bayes: d.Bayes,
					Hist: d.Hist, Version: d.Version, LSN: t.LSN, UpdatedAt: d.UpdatedAt}}
		}
		m.Txns = append(m.Txns, t)
	}
	return m, nil
}
