package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisBus is a Bus on a Redis stream: Publish is an XADD trimmed to about
// MaxLen entries, Subscribe an XREAD loop that remembers the last entry it
// read, so a subscriber that reconnects to Redis misses nothing still in the
// stream. The client is the caller's to close.
type RedisBus struct {
	Client *redis.Client
	// Key is the stream's key. Empty means "repstream:bus".
	Key string
	// MaxLen bounds the stream's length. Zero means 10000.
	MaxLen int64
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

var _ Bus = (*RedisBus)(nil)

func (b *RedisBus) key() string {
	if b.Key == "" {
		return "repstream:bus"
	}
	return b.Key
}

// Publish implements Bus.
func (b *RedisBus) Publish(ctx context.Context, m Message) error {
	data, err := EncodeMessage(m)
	if err != nil {
		return err
	}
	n := b.MaxLen
	if n == 0 {
		n = 10000
	}
	if err := b.Client.XAdd(ctx, &redis.XAddArgs{Stream: b.key(), MaxLen: n, Approx: true, Values: []any{"m", data}}).Err(); err != nil {
		return fmt.Errorf("hub: redis bus: XADD %s: %w", b.key(), err)
	}
	return nil
}

// Subscribe implements Bus. Errors talking to Redis are reported to s as
// Down and retried (at most a second apart) until ctx is done; the next
// success is reported as Up.
func (b *RedisBus) Subscribe(ctx context.Context, s Subscriber) error {
	log := b.Logger
	if log == nil {
		log = slog.Default()
	}
	last := ""
	fail := 0
	up := false
	failed := func(err error) {
		if ctx.Err() != nil {
			return
		}
		if up || fail == 0 {
			s.Down(err)
		}
		up = false
		fail = b.backoff(ctx, log, fail, err)
	}
	for ctx.Err() == nil {
		if last == "" {
			xs, err := b.Client.XRevRangeN(ctx, b.key(), "+", "-", 1).Result()
			if err != nil {
				failed(err)
				continue
			}
			last = "0-0"
			if len(xs) > 0 {
				last = xs[0].ID
			}
		} else if !up {
			if err := b.Client.Ping(ctx).Err(); err != nil {
				failed(err)
				continue
			}
		}
		if !up {
			up, fail = true, 0
			s.Up()
		}
		res, err := b.Client.XRead(ctx, &redis.XReadArgs{Streams: []string{b.key(), last}, Count: 256, Block: time.Second}).Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			failed(err)
			continue
		}
		for _, st := range res {
			for _, x := range st.Messages {
				last = x.ID
				raw, _ := x.Values["m"].(string)
				m, err := DecodeMessage([]byte(raw))
				if err != nil {
					log.Error("hub: redis bus: undecodable entry skipped", "id", x.ID, "err", err)
					continue
				}
				s.Message(m)
			}
		}
	}
	return nil
}

func (b *RedisBus) backoff(ctx context.Context, log *slog.Logger, fail int, err error) int {
	if fail == 0 {
		log.Warn("hub: redis bus: read failed; retrying", "key", b.key(), "err", err)
	}
	d := min(time.Duration(50<<min(fail, 5))*time.Millisecond, time.Second)
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
	return fail + 1
}
