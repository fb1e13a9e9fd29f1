package hub

import (
	"context"
	"time"

	"github.com/repstream/repstream/stream"
)

// boundedLog gives each read of the store its own deadline: a store that
// stops answering without closing the connection (a black-holed network)
// fails the read after d, and the subscribe with it, instead of holding
// the subscription, and its worker, forever.
type boundedLog struct {
	stream.Log
	d time.Duration
}

func (l boundedLog) Meta(ctx context.Context) (stream.Meta, error) {
	ctx, cancel := context.WithTimeout(ctx, l.d)
	defer cancel()
	return l.Log.Meta(ctx)
}

func (l boundedLog) State(ctx context.Context, subject string) (stream.State, error) {
	ctx, cancel := context.WithTimeout(ctx, l.d)
	defer cancel()
	return l.Log.State(ctx, subject)
}

func (l boundedLog) States(ctx context.Context, sel stream.Selector, order stream.Order, limit int) ([]stream.State, stream.LSN, error) {
	ctx, cancel := context.WithTimeout(ctx, l.d)
	defer cancel()
	return l.Log.States(ctx, sel, order, limit)
}

func (l boundedLog) StatesAfter(ctx context.Context, sel stream.Selector, after string, limit int) ([]stream.State, stream.LSN, error) {
	ctx, cancel := context.WithTimeout(ctx, l.d)
	defer cancel()
	return l.Log.StatesAfter(ctx, sel, after, limit)
}

func (l boundedLog) Deltas(ctx context.Context, sel stream.Selector, since, upto stream.LSN, limit int) ([]stream.Delta, error) {
	ctx, cancel := context.WithTimeout(ctx, l.d)
	defer cancel()
	return l.Log.Deltas(ctx, sel, since, upto, limit)
}
