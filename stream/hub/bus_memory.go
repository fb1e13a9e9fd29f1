package hub

import (
	"context"
	"errors"
	"sync"
)

// ErrBusDown is what a MemoryBus set down returns from Publish.
var ErrBusDown = errors.New("hub: memory bus is down")

// MemoryBus is an in-process Bus, for tests and single-binary setups. Each
// subscriber has a buffer of Buffer messages (zero means 1024); a subscriber
// that falls further behind loses messages and reads them from the store.
// SetDown plays an outage.
type MemoryBus struct {
	Buffer int

	mu   sync.Mutex
	down bool                 // guarded by mu
	subs map[*memSub]struct{} // guarded by mu
}

type memSub struct {
	ch    chan Message
	state chan bool // latest up/down, capacity 1
}

var _ Bus = (*MemoryBus)(nil)

// SetDown makes the bus unreachable (Publish fails, subscribers see Down)
// or reachable again (subscribers see Up; what was published meanwhile is
// lost).
func (b *MemoryBus) SetDown(down bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.down == down {
		return
	}
	b.down = down
	for s := range b.subs {
		select {
		case <-s.state:
		default:
		}
		s.state <- !down
	}
}

// Publish implements Bus. It never blocks.
func (b *MemoryBus) Publish(_ context.Context, m Message) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.down {
		return ErrBusDown
	}
	for s := range b.subs {
		select {
		case s.ch <- m:
		default: // the subscriber sees the gap through Prev
		}
	}
	return nil
}

// Subscribe implements Bus.
func (b *MemoryBus) Subscribe(ctx context.Context, sub Subscriber) error {
	n := b.Buffer
	if n <= 0 {
		n = 1024
	}
	s := &memSub{ch: make(chan Message, n), state: make(chan bool, 1)}
	b.mu.Lock()
	if b.subs == nil {
		b.subs = make(map[*memSub]struct{})
	}
	b.subs[s] = struct{}{}
	s.state <- !b.down
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.subs, s)
		b.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case up := <-s.state:
			if up {
				sub.Up()
			} else {
				sub.Down(ErrBusDown)
			}
		case m := <-s.ch:
			sub.Message(m)
		}
	}
}
