package hub

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/repstream/repstream/stream"
)

// textCodec encodes a delta as subject@lsn and a frame of several as
// "deltas:" and their encodings joined by "|", so a test can read frames.
type textCodec struct{}

func (textCodec) Delta(d *stream.Delta) []byte { return fmt.Appendf(nil, "%s@%s", d.Subject, d.LSN) }
func (textCodec) Deltas(fs [][]byte) []byte {
	parts := make([]string, len(fs))
	for i, f := range fs {
		parts[i] = string(f)
	}
	return []byte("deltas:" + strings.Join(parts, "|"))
}
func (textCodec) Subscribed(id int64, h stream.LSN, mode string, reset bool) []byte {
	return fmt.Appendf(nil, "subscribed:%s:%s", h, mode)
}
func (textCodec) Snapshot(id int64, h stream.LSN, states []stream.State, more bool) []byte {
	return fmt.Appendf(nil, "snapshot:%s", h)
}
func (textCodec) Tick(head stream.LSN) []byte { return fmt.Appendf(nil, "tick:%s", head) }
func (textCodec) CaughtUp(id int64, lsn stream.LSN) []byte {
	return fmt.Appendf(nil, "caught_up:%d:%s", id, lsn)
}

func (textCodec) Board(id int64, lsn stream.LSN, order string, entries []stream.State, _ []stream.Move) []byte {
	return fmt.Appendf(nil, "board:%d:%s:%s:%d", id, lsn, order, len(entries))
}

// gatedLog blocks Deltas, once armed, until the gate opens: a catch-up
// from the store stops after its "subscribed", before its replay.
type gatedLog struct {
	*MemLog
	mu      sync.Mutex
	armed   bool
	entered chan struct{}
	open    chan struct{}
}

func (g *gatedLog) arm() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.armed, g.entered, g.open = true, make(chan struct{}), make(chan struct{})
}

func (g *gatedLog) Deltas(ctx context.Context, sel stream.Selector, since, upto stream.LSN, limit int) ([]stream.Delta, error) {
	g.mu.Lock()
	armed, entered, open := g.armed, g.entered, g.open
	g.armed = false
	g.mu.Unlock()
	if armed {
		close(entered)
		<-open
	}
	return g.MemLog.Deltas(ctx, sel, since, upto, limit)
}

func onlySub(c *Conn) *sub {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	if len(c.subs) == 0 {
		return nil
	}
	return c.subs[0]
}

// waitFor polls cond for up to a second.
func waitFor(cond func() bool) {
	for deadline := time.Now().Add(time.Second); !cond() && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
}

// txnFrames returns the frames of c's queue that carry a delta at lsn.
func txnFrames(c *Conn, lsn stream.LSN) []string {
	var out []string
	b, _ := c.Next(nil)
	for _, f := range b.Frames {
		if strings.Contains(string(f.Bytes), "@"+lsn.String()) {
			out = append(out, string(f.Bytes))
		}
	}
	return out
}

// TestTxnNeverSplitAcrossFrames pins a Publish between two deltas of one
// transaction owed to one subscription (another connection's subscription
// holds the lock Publish needs next) and, right then, ends that
// subscription's catch-up or lets its throttle flush. The transaction must
// still reach the client in one frame: were it split, a client that applied
// only the first frame would hold its lsn as a safe cursor and, resuming
// from it, never get the rest (a skipped version).
func TestTxnNeverSplitAcrossFrames(t *testing.T) {
	commit := func(t *testing.T, h *Hub, log *MemLog, lsn stream.LSN, subjects ...string) stream.Txn {
		var ops []Op
		for _, s := range subjects {
			ops = append(ops, Op{Subject: s, Score: 4 * stream.MicroUnit})
		}
		tx, err := log.Commit(lsn, ops)
		if err != nil {
			t.Fatal(err)
		}
		return tx
	}
	setup := func(t *testing.T) (*Hub, *gatedLog, *Conn, *sub) {
		mem := NewMemLog("e", 0x1000)
		log := &gatedLog{MemLog: mem}
		h := New(Options{Log: log, Codecs: []Codec{textCodec{}}, Config: Config{RingDeltas: -1}})
		m, _ := mem.Meta(context.Background())
		h.Reset(m)
		h.Publish(0x1001, []stream.Txn{commit(t, h, mem, 0x1000, "seller:1")})
		h.Publish(0x1011, []stream.Txn{commit(t, h, mem, 0x1010, "seller:1")})
		// B's subscription to seller:2 is matched before A's prefix
		// subscription for seller:2; holding its lock pins Publish.
		cb := h.Connect(0)
		t.Cleanup(func() { h.Disconnect(cb) })
		if _, err := cb.Subscribe(context.Background(), Request{ID: 1, Sel: stream.Selector{Subjects: []string{"seller:2"}}}); err != nil {
			t.Fatal(err)
		}
		return h, log, cb, onlySub(cb)
	}

	t.Run("release", func(t *testing.T) {
		h, log, _, sb := setup(t)
		ca := h.Connect(0)
		defer h.Disconnect(ca)
		// A catches up from the store (no ring), stopped after its
		// "subscribed" (which waits for Publish calls in flight), before
		// its replay.
		log.arm()
		since := stream.LSN(0x1000)
		subDone := make(chan error, 1)
		go func() {
			_, err := ca.Subscribe(context.Background(), Request{ID: 2, Sel: stream.Selector{Prefix: "seller:"}, Since: &since})
			subDone <- err
		}()
		<-log.entered
		sa := onlySub(ca)

		tx := commit(t, h, log.MemLog, 0x1011, "seller:1", "seller:2")
		sb.mu.Lock()
		pubDone := make(chan struct{})
		go func() { defer close(pubDone); h.Publish(0x1012, []stream.Txn{tx}) }()
		waitFor(func() bool { sa.mu.Lock(); defer sa.mu.Unlock(); return sa.bufDeltas > 0 })
		close(log.open) // A replays to H = 0x1010 and releases its buffer
		if err := <-subDone; err != nil {
			t.Fatal(err)
		}
		sb.mu.Unlock()
		<-pubDone

		fs := txnFrames(ca, tx.LSN)
		if len(fs) != 1 || !strings.Contains(fs[0], "seller:1@") || !strings.Contains(fs[0], "seller:2@") {
			t.Fatalf("transaction %s reached the client in frames %q, want one frame with both deltas", tx.LSN, fs)
		}
	})

	t.Run("throttle", func(t *testing.T) {
		h, log, _, sb := setup(t)
		ca := h.Connect(0)
		defer h.Disconnect(ca)
		if _, err := ca.Subscribe(context.Background(), Request{ID: 2, Sel: stream.Selector{Prefix: "seller:"}, Throttle: time.Nanosecond}); err != nil {
			t.Fatal(err)
		}
		sa := onlySub(ca)
		ca.Next(nil)

		tx := commit(t, h, log.MemLog, 0x1011, "seller:1", "seller:2")
		sb.mu.Lock()
		pubDone := make(chan struct{})
		go func() { defer close(pubDone); h.Publish(0x1012, []stream.Txn{tx}) }()
		// Let the flush timer fire while Publish is pinned.
		waitFor(func() bool { ca.mu.Lock(); defer ca.mu.Unlock(); return len(ca.q) > 0 })
		sb.mu.Unlock()
		<-pubDone
		waitFor(func() bool {
			sa.mu.Lock()
			defer sa.mu.Unlock()
			return len(sa.pending) == 0 && sa.timer == nil
		})

		fs := txnFrames(ca, tx.LSN)
		if len(fs) != 1 || !strings.Contains(fs[0], "seller:1@") || !strings.Contains(fs[0], "seller:2@") {
			t.Fatalf("transaction %s reached the client in frames %q, want one frame with both deltas", tx.LSN, fs)
		}
	})
}
