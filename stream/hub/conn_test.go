package hub_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/hub"
)

// drainer is a writer driven by hub.Conn.SetDrain, as the WebSocket
// session's. Its bookkeeping is deliberately not synchronised: the
// connection promises that drains never overlap (each starts under the
// connection's lock after the previous one parked there), so the race
// detector reports any overlap as a data race.
type drainer struct {
	c    *hub.Conn
	wg   sync.WaitGroup
	slow bool // yield between batches, to widen the windows

	starts atomic.Int64 // drains started
	ends   atomic.Int64 // drains returned

	// Touched only by the drain, unsynchronised (see above).
	frames  [][]byte
	pokes   int
	closes  int
	running int
}

func newDrainer(c *hub.Conn) *drainer {
	d := &drainer{c: c}
	c.SetDrain(func() {
		d.starts.Add(1)
		d.wg.Add(1)
		go d.run()
	})
	return d
}

func (d *drainer) run() {
	defer d.wg.Done()
	defer d.ends.Add(1)
	var written []hub.Frame
	for {
		// Nothing of the drain's is touched after a Next that parks it:
		// the next drain may be running by then.
		b, ok := d.c.Next(written)
		if !ok {
			return
		}
		d.running++
		if d.running != 1 {
			panic("two drains at once")
		}
		if b.Closed {
			d.closes++
			return // the connection never starts another drain
		}
		if b.Poked {
			d.pokes++
		}
		for _, f := range b.Frames {
			d.frames = append(d.frames, f.Bytes)
		}
		if d.slow {
			runtime.Gosched()
		}
		written = b.Frames
		d.running--
	}
}

// checkOrder checks that each producer's frames arrived in order and, if
// complete, all of them; it returns how many frames of each arrived.
func checkOrder(t *testing.T, frames [][]byte, producers, each int, complete bool) []int {
	t.Helper()
	got := make([]int, producers)
	for _, f := range frames {
		p, i, _ := strings.Cut(string(f), ":")
		pi, _ := strconv.Atoi(p)
		ii, _ := strconv.Atoi(i)
		if ii != got[pi] {
			t.Fatalf("producer %d: frame %d arrived after %d frames", pi, ii, got[pi])
		}
		got[pi]++
	}
	if complete {
		for p, n := range got {
			if n != each {
				t.Fatalf("producer %d: %d of %d frames arrived (a lost wake-up?)", p, n, each)
			}
		}
	}
	return got
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestDrainNoLostWakeups hammers Enqueue and Poke from several goroutines
// against a drain that keeps parking: every frame arrives, in order per
// producer, no two drains ever run at once (-race), and the drain ends
// parked.
func TestDrainNoLostWakeups(t *testing.T) {
	r := newRig(t, hub.Config{QueueFrames: 1 << 20, QueueBytes: 1 << 30})
	const producers, each = 4, 2000
	for round := range 20 {
		c := r.h.Connect(0)
		d := newDrainer(c)
		d.slow = round%2 == 1
		var wg sync.WaitGroup
		for p := range producers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					if !c.Enqueue([]byte(fmt.Sprintf("%d:%d", p, i))) {
						t.Errorf("enqueue refused")
						return
					}
					if rand.IntN(64) == 0 {
						runtime.Gosched()
					}
				}
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				c.Poke()
				runtime.Gosched()
			}
		}()
		wg.Wait()
		// Every start is matched by a parked drain once the queue is empty.
		waitUntil(t, "the drain to park", func() bool {
			s := d.starts.Load()
			return s > 0 && d.ends.Load() == s
		})
		d.wg.Wait()
		checkOrder(t, d.frames, producers, each, true)
		if d.pokes == 0 {
			t.Fatal("no poke reached the drain")
		}
		if d.running != 0 || d.closes != 0 {
			t.Fatalf("running %d, closes %d", d.running, d.closes)
		}
		// Parked and idle: a new frame starts exactly one more drain.
		starts := d.starts.Load()
		c.Enqueue([]byte("0:" + strconv.Itoa(each)))
		waitUntil(t, "the next drain", func() bool { return d.ends.Load() == starts+1 })
		if d.starts.Load() != starts+1 {
			t.Fatalf("%d drains started for one frame", d.starts.Load()-starts)
		}
		r.h.Disconnect(c)
		d.wg.Wait()
		if d.closes != 1 {
			t.Fatalf("%d closes written, want 1", d.closes)
		}
	}
}

// TestDrainClose races Close against Enqueue and Poke: the drain writes
// the close exactly once, whatever it was doing, never starts again, and
// what it wrote before is an in-order prefix of each producer's frames.
func TestDrainClose(t *testing.T) {
	r := newRig(t, hub.Config{QueueFrames: 1 << 20, QueueBytes: 1 << 30})
	const producers, each = 3, 1000
	for round := range 50 {
		c := r.h.Connect(0)
		d := newDrainer(c)
		d.slow = round%2 == 1
		var wg sync.WaitGroup
		start := make(chan struct{})
		for p := range producers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for i := range each {
					if !c.Enqueue([]byte(fmt.Sprintf("%d:%d", p, i))) {
						return // closed
					}
				}
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for range 100 {
				c.Poke()
			}
		}()
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
			c.Close(4008, "slow consumer")
		}()
		close(start)
		wg.Wait()
		waitUntil(t, "the drain to write the close", func() bool {
			s := d.starts.Load()
			return s > 0 && d.ends.Load() == s
		})
		d.wg.Wait()
		if d.closes != 1 {
			t.Fatalf("round %d: %d closes written, want 1", round, d.closes)
		}
		starts := d.starts.Load()
		c.Enqueue([]byte("x:0"))
		c.Poke()
		c.Close(1001, "again")
		r.h.Disconnect(c)
		if d.starts.Load() != starts {
			t.Fatal("a drain started after the close was written")
		}
		if _, code, _ := c.Closed(); code != 4008 {
			t.Fatalf("close code %d, want 4008", code)
		}
		checkOrder(t, d.frames, producers, each, false)
	}
}

// TestDrainIdleClose: closing an idle connection starts a drain just to
// write the close; SetDrain on a connection with frames queued starts one
// at once.
func TestDrainIdleClose(t *testing.T) {
	r := newRig(t, hub.Config{})
	c := r.h.Connect(0)
	d := newDrainer(c)
	if d.starts.Load() != 0 {
		t.Fatal("a drain started with nothing to do")
	}
	c.Close(4001, "token expired")
	d.wg.Wait()
	if d.closes != 1 || d.starts.Load() != 1 {
		t.Fatalf("closes %d, starts %d", d.closes, d.starts.Load())
	}
	r.h.Disconnect(c)

	c = r.h.Connect(0)
	defer r.h.Disconnect(c)
	c.Enqueue([]byte("0:0"))
	d = newDrainer(c)
	waitUntil(t, "the drain", func() bool { return d.ends.Load() == 1 })
	d.wg.Wait()
	checkOrder(t, d.frames, 1, 1, true)
}

// TestDrainPacesCatchUp: a catch-up that waits for queue space is woken by
// the drain taking the queue (Next), as by Pop.
func TestDrainPacesCatchUp(t *testing.T) {
	r := newRig(t, hub.Config{QueueFrames: 8})
	first := r.write(hub.RandomOps(3)...)
	for range 200 {
		r.write(hub.RandomOps(3)...)
	}
	c := r.h.Connect(0)
	defer r.h.Disconnect(c)
	d := newDrainer(c)
	d.slow = true
	since := first.LSN
	res, err := c.Subscribe(context.Background(), hub.Request{ID: 1, Sel: stream.Selector{Prefix: "seller:"}, Since: &since})
	if err != nil {
		t.Fatal(err)
	}
	if res.Mode != hub.ModeReplay || res.Sent == 0 {
		t.Fatalf("%+v", res)
	}
	waitUntil(t, "the drain to park", func() bool {
		s := d.starts.Load()
		return s > 0 && d.ends.Load() == s
	})
	d.wg.Wait()
	var deltas int
	last := stream.LSN(0)
	for i, f := range d.frames {
		m, err := wire.JSON{}.DecodeServer(f)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			if m.Type != wire.TypeSubscribed {
				t.Fatalf("first frame %+v", m)
			}
			continue
		}
		for _, dl := range m.Deltas {
			if dl.LSN < last {
				t.Fatalf("lsn %s after %s", dl.LSN, last)
			}
			last = dl.LSN
			deltas++
		}
	}
	if deltas != res.Sent {
		t.Fatalf("%d deltas arrived, %d sent", deltas, res.Sent)
	}
	if closed, _, _ := c.Closed(); closed {
		t.Fatal("the catch-up overflowed the queue")
	}
}
