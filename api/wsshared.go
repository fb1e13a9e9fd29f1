package api

import (
	"sync"
	"syscall"
	"time"

	"github.com/repstream/repstream/api/netpoll"
)

// wsShared is what a server's WebSocket sessions share instead of each
// holding it: the poller that watches idle sockets (instead of a reader
// goroutine per session), the pinger, one goroutine that pings every
// session and drops those that went silent (instead of a ticker and a read
// deadline per session), and a cache of idle drain goroutines (a drain
// started on a fresh goroutine would grow its stack through the socket
// write every time). It exists while the server has sessions.
type wsShared struct {
	stop chan struct{} // closed after the last session left
	poll *netpoll.Poller

	mu    sync.Mutex
	slots [pingSlots][]*session // guarded by mu
	cur   int                   // guarded by mu; the slot pinged last
	next  int                   // guarded by mu; the slot the next session joins
	n     int                   // guarded by mu; sessions

	// The subscribe workers: at most cfg.SubscribeWorkers sessions run
	// their requests at once; the others wait in line, without a goroutine.
	wmu     sync.Mutex
	working int        // guarded by wmu; sessions whose requests run
	waiting []*session // guarded by wmu; sessions with requests, in the order they asked
	maxWork int

	// Idle drain goroutines, most recently idle last: the next drain goes
	// to the one whose stack is warmest, and those idle for a whole ping
	// tick are retired.
	dmu     sync.Mutex
	idle    []*drainer // guarded by dmu
	ticks   uint64     // guarded by dmu; ping ticks so far
	stopped bool       // guarded by dmu
}

// maxIdleDrainers bounds a server's idle drain goroutines. Each keeps a
// stack of the runtime's average size; past a few per core they save little
// (a new goroutine costs well under a microsecond, a write several).
const maxIdleDrainers = 64

// drainer is an idle drain goroutine.
type drainer struct {
	next  chan *session // cap 1: the session to drain next; nil ends the goroutine
	since uint64        // the tick it went idle at
}

// pingSlots spreads a server's pings over its heartbeat, so ten thousand
// sessions are not pinged in one burst.
const pingSlots = 8

// join adds ss to its server's shared machinery, starting it for the first
// session, and sets ss.shared and ss.rh (unarmed) for its socket sc.
//
// The pinger keeps sessions in a wheel of pingSlots slots and pings one
// slot every heartbeat/pingSlots, so each session is pinged once a
// heartbeat, as with a ticker of its own (its first ping comes within a
// heartbeat). Sessions join the slots in turn, so even a burst of
// connections spreads its pings over the heartbeat.
func (s *Server) join(ss *session, sc syscall.Conn) error {
	s.wsMu.Lock()
	defer s.wsMu.Unlock()
	w := s.ws
	if w == nil {
		p, err := netpoll.New()
		if err != nil {
			return err
		}
		w = &wsShared{stop: make(chan struct{}), poll: p, maxWork: s.cfg.SubscribeWorkers}
		s.ws = w
		go w.ping(s.cfg.Heartbeat/pingSlots, s.cfg.PongTimeout)
	}
	rh, err := w.poll.Add(sc, ss.readable)
	if err != nil {
		return err
	}
	ss.shared, ss.rh = w, rh
	w.mu.Lock()
	ss.pingSlot = w.next
	w.next = (w.next + 1) % pingSlots
	ss.pingIdx = len(w.slots[ss.pingSlot])
	w.slots[ss.pingSlot] = append(w.slots[ss.pingSlot], ss)
	w.n++
	w.mu.Unlock()
	return nil
}

// leave removes ss, which runs no drain any more, stopping the shared
// machinery after the last session.
func (s *Server) leave(ss *session) {
	s.wsMu.Lock()
	defer s.wsMu.Unlock()
	w := ss.shared
	if w == nil || s.ws != w {
		return
	}
	w.mu.Lock()
	slot := w.slots[ss.pingSlot]
	last := len(slot) - 1
	if ss.pingIdx > last || slot[ss.pingIdx] != ss {
		w.mu.Unlock()
		return // left already
	}
	moved := slot[last]
	slot[ss.pingIdx], moved.pingIdx = moved, ss.pingIdx
	slot[last] = nil
	w.slots[ss.pingSlot] = slot[:last]
	if last == 0 {
		w.slots[ss.pingSlot] = nil
	}
	w.n--
	n := w.n
	w.mu.Unlock()
	if n == 0 {
		close(w.stop)
		_ = w.poll.Close()
		s.ws = nil
		w.dmu.Lock()
		w.stopped = true
		w.retireLocked(len(w.idle))
		w.dmu.Unlock()
	}
}

// ping visits one slot of sessions every tick, so each session once a
// heartbeat: a session whose peer sent nothing, not even a pong, for
// silence is dropped; the others are marked ping-due and their drain is
// poked, which writes the ping. (The previous visit's ping was a heartbeat
// ago and silence exceeds a heartbeat, so a live peer has answered it.)
func (w *wsShared) ping(every, silence time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	var due []*session
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
		w.mu.Lock()
		w.cur = (w.cur + 1) % pingSlots
		due = append(due[:0], w.slots[w.cur]...)
		w.mu.Unlock()
		dead := time.Now().Add(-silence).UnixNano()
		for _, ss := range due {
			switch {
			case ss.dropped.Load():
			case ss.lastRead.Load() < dead:
				ss.hc.Close(CloseGoingAway, "peer gone: no pong in time")
				ss.closeRead()
			default:
				ss.pingDue.Store(true)
				ss.hc.Poke() // a no-op once the session's connection is closed
			}
		}
		clear(due)
		w.dmu.Lock()
		w.ticks++
		old := 0
		for old < len(w.idle) && w.idle[old].since+1 < w.ticks {
			old++
		}
		w.retireLocked(old)
		w.dmu.Unlock()
	}
}

// startWork runs ss.work on a new subscribe worker, or puts ss in line for
// one when maxWork run already.
func (w *wsShared) startWork(ss *session) {
	w.wmu.Lock()
	if w.working >= w.maxWork {
		w.waiting = append(w.waiting, ss)
		ss.inLine = true
		w.wmu.Unlock()
		return
	}
	w.working++
	w.wmu.Unlock()
	go w.worker(ss)
}

// worker runs ss's requests, then those of the sessions in line, until
// none waits, or until a request gave the slot back (releaseSlot handed it
// on).
func (w *wsShared) worker(ss *session) {
	for ss != nil {
		if ss.work() {
			return
		}
		ss = w.takeNext()
	}
}

// takeNext hands a worker slot to the next session in line, or gives it
// up when none waits (nil).
func (w *wsShared) takeNext() *session {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	var ss *session
	for ss == nil && len(w.waiting) > 0 {
		if x := w.waiting[0]; x.inLine { // else it ended while in line
			x.inLine = false
			ss = x
		}
		w.waiting[0] = nil
		w.waiting = w.waiting[1:]
	}
	if ss == nil {
		w.working--
		w.waiting = nil
	}
	return ss
}

// releaseSlot gives a worker slot back while its goroutine goes on with a
// client-paced request: the next session in line gets it, on a new worker.
func (w *wsShared) releaseSlot() {
	if next := w.takeNext(); next != nil {
		go w.worker(next)
	}
}

// dropWaiting takes ss out of the line (the worker that reaches it skips
// it), reporting whether it was in it.
func (w *wsShared) dropWaiting(ss *session) bool {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	in := ss.inLine
	ss.inLine = false
	return in
}

// startDrain runs ss.drain on the most recently idle drain goroutine, or a
// new one. It does not block: it is called with the hub connection's lock
// held.
func (w *wsShared) startDrain(ss *session) {
	w.dmu.Lock()
	if n := len(w.idle); n > 0 {
		d := w.idle[n-1]
		w.idle[n-1] = nil
		w.idle = w.idle[:n-1]
		w.dmu.Unlock()
		d.next <- ss
		return
	}
	w.dmu.Unlock()
	go w.drainer(ss)
}

// drainer runs drains, and between them waits idle to be handed the next
// one, unless maxIdleDrainers wait already or the server's last session
// left.
func (w *wsShared) drainer(ss *session) {
	d := &drainer{next: make(chan *session, 1)}
	for ss != nil {
		ss.drain()
		w.dmu.Lock()
		if w.stopped || len(w.idle) >= maxIdleDrainers {
			w.dmu.Unlock()
			return
		}
		d.since = w.ticks
		w.idle = append(w.idle, d)
		w.dmu.Unlock()
		ss = <-d.next
	}
}

// retireLocked ends the n longest idle drain goroutines. Called with dmu
// held.
func (w *wsShared) retireLocked(n int) {
	if n == 0 {
		return
	}
	for _, d := range w.idle[:n] {
		d.next <- nil
	}
	k := copy(w.idle, w.idle[n:])
	clear(w.idle[k:])
	w.idle = w.idle[:k]
	if k == 0 {
		w.idle = nil
	}
}

// idleDrainers returns how many drain goroutines the server keeps idle.
func (s *Server) idleDrainers() int {
	s.wsMu.Lock()
	w := s.ws
	s.wsMu.Unlock()
	if w == nil {
		return 0
	}
	w.dmu.Lock()
	defer w.dmu.Unlock()
	return len(w.idle)
}
