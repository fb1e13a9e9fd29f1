package stream_test

import (
	"bytes"
	"context"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/repstream/repstream/cdc/localpg"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/streamtest"
)

// cutProxy forwards TCP to Postgres. Armed, it forwards the store writer's
// next request but never its answer, and closes that connection: a commit
// that happened is then reported as an error.
type cutProxy struct {
	ln     net.Listener
	target string
	armed  atomic.Bool
	// after and match, if set, narrow the cut: to the first request that
	// contains match once one that contains after went by on the same
	// connection while armed.
	after, match []byte
	cuts         atomic.Int32
	wg           sync.WaitGroup
	mu           sync.Mutex
	conns        []net.Conn
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() { defer p.wg.Done(); p.handle(c) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *cutProxy) track(c net.Conn) {
	p.mu.Lock()
	p.conns = append(p.conns, c)
	p.mu.Unlock()
}

func (p *cutProxy) handle(c net.Conn) {
	p.track(c)
	defer c.Close()
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	p.track(s)
	defer s.Close()
	buf := make([]byte, 1<<16)
	n, err := c.Read(buf) // the startup message names the application
	if err != nil {
		return
	}
	writer := bytes.Contains(buf[:n], []byte("repstream-writer"))
	if _, err := s.Write(buf[:n]); err != nil {
		return
	}
	var mute atomic.Bool
	primed := false
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer c.Close()
		b := make([]byte, 1<<16)
		for {
			n, err := s.Read(b)
			if err != nil {
				return
			}
			if mute.Load() {
				continue
			}
			if _, err := c.Write(b[:n]); err != nil {
				return
			}
		}
	}()
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		if writer && p.after != nil && p.armed.Load() && bytes.Contains(buf[:n], p.after) {
			primed = true
		}
		ready := p.after == nil || primed
		if p.match != nil && !bytes.Contains(buf[:n], p.match) {
			ready = false
		}
		cut := writer && ready && p.armed.CompareAndSwap(true, false)
		if cut {
			mute.Store(true)
		}
		if _, err := s.Write(buf[:n]); err != nil {
			return
		}
		if cut {
			time.Sleep(500 * time.Millisecond) // the server commits meanwhile
			p.cuts.Add(1)
			return
		}
	}
}

// TestAmbiguousCommitLeavesNoHole: the store writer's connection is cut
// after a group's COMMIT reached the server but before its answer came
// back. The commit happened; live clients must still get its deltas (the
// stream resumes after it), so versions stay contiguous.
func TestAmbiguousCommitLeavesNoHole(t *testing.T) {
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) }) // after the proxy's and the database's cleanups
	dbURL, name := localpg.NewDatabase(t)
	ctx := context.Background()
	conn := streamtest.Connect(t, dbURL)
	streamtest.Exec(t, conn, streamtest.Schema)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	p := newCutProxy(t, u.Host)
	u.Host = p.ln.Addr().String()
	rec := &recorder{}
	e, stop := startEngine(t, u.String(), name, rec, func(c *stream.EngineConfig) { c.Heartbeat = -1 })
	defer stop()
	streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating) VALUES (1, 5)`)
	streamtest.WaitConverged(t, conn, 20*time.Second)
	// seller:1's state is cached: the next group's only store traffic is its commit.
	p.armed.Store(true)
	streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating) VALUES (1, 3)`)
	deadline := time.Now().Add(20 * time.Second)
	for p.cuts.Load() == 0 || e.Readiness(ctx) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("cut %d times; readiness %v", p.cuts.Load(), e.Readiness(ctx))
		}
		time.Sleep(20 * time.Millisecond)
	}
	streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating) VALUES (1, 4)`)
	streamtest.WaitConverged(t, conn, 20*time.Second)
	var want int64
	if err := conn.QueryRow(ctx, `SELECT version FROM repstream.subjects WHERE subject = 'seller:1'`).Scan(&want); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		var got []int64
		rec.mu.Lock()
		for _, tx := range rec.txns {
			for _, d := range tx.Deltas {
				if d.Subject == "seller:1" {
					got = append(got, d.Version)
				}
			}
		}
		rec.mu.Unlock()
		ok := len(got) > 0 && got[len(got)-1] == want
		for i := 1; i < len(got); i++ {
			if got[i] != got[i-1]+1 {
				t.Fatalf("seller:1 versions published: %v: a hole where the ambiguous commit was", got)
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("seller:1 versions published: %v, want up to %d", got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if e.Status().Restarts == 0 {
		t.Fatal("the cut did not end the session")
	}
}

// TestAmbiguousLoadCommitStillResets: a reload's commit happens but reports
// an error. The next session resumes the new epoch without loading again;
// the publisher must still be reset to it (its clients hold the old one).
func TestAmbiguousLoadCommitStillResets(t *testing.T) {
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
	dbURL, name := localpg.NewDatabase(t)
	ctx := context.Background()
	conn := streamtest.Connect(t, dbURL)
	streamtest.Exec(t, conn, streamtest.Schema)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	p := newCutProxy(t, u.Host)
	p.after, p.match = []byte("TRUNCATE repstream.subjects"), []byte("commit\x00") // pgx's Tx.Commit
	u.Host = p.ln.Addr().String()
	rec := &recorder{}
	e, stop := startEngine(t, u.String(), name, rec)
	defer stop()
	streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating) VALUES (1, 5)`)
	streamtest.WaitConverged(t, conn, 20*time.Second)
	first := storedEpoch(t, conn)

	// The slot is lost under the running engine: it reloads, and the
	// reload's commit is cut.
	p.armed.Store(true)
	deadline := time.Now().Add(20 * time.Second)
	for {
		var dropped bool
		err := conn.QueryRow(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active`, name).Scan(&dropped)
		if err != nil && err.Error() != "no rows in result set" {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, name); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("could not drop the slot")
		}
		time.Sleep(5 * time.Millisecond)
	}
	streamtest.Exec(t, conn, `INSERT INTO reviews (seller_id, rating) VALUES (2, 4)`)
	for p.cuts.Load() == 0 || e.Readiness(ctx) != nil {
		if time.Now().After(deadline.Add(20 * time.Second)) {
			t.Fatalf("cut %d times; readiness %v", p.cuts.Load(), e.Readiness(ctx))
		}
		time.Sleep(20 * time.Millisecond)
	}
	streamtest.WaitConverged(t, conn, 20*time.Second)
	second := storedEpoch(t, conn)
	got := rec.epochs()
	if second == first || len(got) == 0 || got[len(got)-1] != second {
		t.Fatalf("publisher reset to %v; stored epochs %s then %s", got, first, second)
	}
}
