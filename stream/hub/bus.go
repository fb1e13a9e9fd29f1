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

// Bus says "there is more" from the node that runs replication to every
// serving node, and carries the committed transactions so a node that is
// in step delivers them without reading the store. The store's delta log is
// the truth: a backend may lose messages (a full buffer, a trimmed Redis
// stream, a Redis restart, a publisher killed with its queue), and a
// follower detects the loss from Message.Prev and reads the gap from the
// log.
type Bus interface {
	// Publish sends m to every subscriber.
	Publish(ctx context.Context, m Message) error
	// Subscribe hands s the messages published after it starts, in order,
	// and the subscription's ups and downs, from one goroutine, until ctx
	// is done (it then returns nil) or the bus fails for good.
	Subscribe(ctx context.Context, s Subscriber) error
}

// Subscriber receives what a bus subscription sees, from one goroutine.
type Subscriber interface {
	// Message is one published message.
	Message(m Message)
	// Up says the subscription is connected (at start, and again after
	// Down): messages published meanwhile may be missing.
	Up()
	// Down says the bus is unreachable; the subscription keeps retrying.
	Down(err error)
}

// Message is one Publish or Reset of the publishing node.
type Message struct {
	// Epoch is the publisher's epoch; a follower on another epoch reads
	// the store's meta before it trusts the message.
	Epoch string
	// Prev is the head the publisher had before this message: the message
	// continues from Position(Prev). A follower below it missed a message.
	Prev stream.LSN
	Head stream.LSN
	Txns []stream.Txn
	// Reset is set when the publisher (re)started an epoch and holds the
	// slot; followers then compare their epoch and head with the store.
	Reset *stream.Meta
}

// BusPublisher is the stream.Publisher of the node that runs replication
// when nodes share a bus: it queues each Publish and Reset for the bus
// without blocking the pipeline, and Run sends them. It may drop messages
// (a full queue, a bus that is down): every message carries the position it
// continues from, so followers fill what they missed from the store.
type BusPublisher struct {
	bus    Bus
	logger *slog.Logger
	q      chan Message

	mu      sync.Mutex
	head    stream.LSN // guarded by mu; head of the last message
	epoch   string     // guarded by mu
	closed  bool       // guarded by mu; q is closed
	dropped int        // guarded by mu; messages dropped since the last warning
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
	defer p.mu.Unlock()
	m := Message{Epoch: p.epoch, Prev: p.head, Head: head, Txns: txns}
	p.head = max(p.head, head)
	p.sendLocked(m)
}

// Reset implements stream.Publisher. The pipeline calls it once it holds
// the slot, so a standby never announces itself.
func (p *BusPublisher) Reset(meta stream.Meta) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.head, p.epoch = meta.Checkpoint, meta.Epoch
	p.sendLocked(Message{Epoch: meta.Epoch, Prev: meta.Checkpoint, Head: meta.Checkpoint, Reset: &meta})
}

func (p *BusPublisher) sendLocked(m Message) {
	if p.closed {
		p.logger.Warn("hub: bus publisher closed; a message is left to the followers' store reads", "head", m.Head)
		return
	}
	select {
	case p.q <- m:
	default:
		if p.dropped++; p.dropped == 1 {
			p.logger.Warn("hub: bus queue full; dropping messages (followers read the gap from the store)", "head", m.Head)
		}
	}
}

// Close stops taking messages; Run sends what is queued and returns. The
// pipeline must have stopped publishing (its last group committed).
func (p *BusPublisher) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		p.closed = true
		close(p.q)
	}
}

// Run sends queued messages until Close was called and the queue is empty
// (it then returns nil), or ctx is done: bound the drain on the way out
// with ctx. While the bus fails it retries the newest message only, as it
// continues from the position the followers must reach anyway.
func (p *BusPublisher) Run(ctx context.Context) error {
	for {
		var m Message
		select {
		case <-ctx.Done():
			p.abandon()
			return nil
		case x, ok := <-p.q:
			if !ok {
				return nil
			}
			m = x
		}
		for attempt := 0; ; attempt++ {
			err := p.bus.Publish(ctx, m)
			if err == nil {
				if attempt > 0 {
					p.logger.Info("hub: bus publish works again", "head", m.Head)
				}
				break
			}
			if ctx.Err() != nil {
				p.abandon()
				return nil
			}
			if attempt == 0 {
				p.logger.Warn("hub: bus publish failed; retrying the newest message (followers poll the store meanwhile)", "err", err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(min(time.Duration(50<<min(attempt, 5))*time.Millisecond, time.Second)):
			}
			m = p.newest(m)
		}
		p.mu.Lock()
		if p.dropped > 1 {
			p.logger.Warn("hub: bus queue drained; messages were dropped (followers read them from the store)", "dropped", p.dropped)
		}
		p.dropped = 0
		p.mu.Unlock()
	}
}

// newest returns the last queued message, or m when none is queued.
func (p *BusPublisher) newest(m Message) Message {
	for {
		select {
		case x, ok := <-p.q:
			if !ok {
				return m
			}
			m = x
		default:
			return m
		}
	}
}

func (p *BusPublisher) abandon() {
	n := 0
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		for range p.q {
			n++
		}
	}
	if n > 0 {
		p.logger.Warn("hub: bus publisher stopped with messages queued; followers read them from the store", "queued", n)
	}
}

// Bus wire form: full precision, independent of the client protocol.
type busMessage struct {
	Epoch string       `json:"epoch,omitempty"`
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
	w := busMessage{Epoch: m.Epoch, Prev: uint64(m.Prev), Head: uint64(m.Head), Reset: m.Reset}
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
	m := Message{Epoch: w.Epoch, Prev: stream.LSN(w.Prev), Head: stream.LSN(w.Head), Reset: w.Reset}
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
