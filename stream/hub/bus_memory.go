package hub

import (
	"context"
	"sync"
)

// MemoryBus is an in-process Bus, for tests and single-binary setups. Each
// subscriber has a buffer of Buffer messages (zero means 1024); a subscriber
// that falls further behind loses messages and resyncs.
type MemoryBus struct {
	Buffer int

	mu   sync.Mutex
	subs map[chan Message]struct{} // guarded by mu
}

var _ Bus = (*MemoryBus)(nil)

// Publish implements Bus. It never blocks.
func (b *MemoryBus) Publish(_ context.Context, m Message) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.subs {
		select {
		case ch <- m:
		default: // the subscriber sees the gap through Prev
		}
	}
	return nil
}

// Subscribe implements Bus.
func (b *MemoryBus) Subscribe(ctx context.Context, fn func(Message)) error {
	n := b.Buffer
	if n <= 0 {
		n = 1024
	}
	ch := make(chan Message, n)
	b.mu.Lock()
	if b.subs == nil {
		b.subs = make(map[chan Message]struct{})
	}
	b.subs[ch] = struct{}{}
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.subs, ch)
		b.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-ch:
			fn(m)
		}
	}
}
