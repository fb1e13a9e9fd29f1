package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/stream"
)

// The client process holds many WebSockets for the fan-out, memory and
// reconnect measurements. The parent drives it with one JSON command per
// line on stdin and reads one JSON reply per line on stdout, so the
// server, the clients and the writer never share a Go runtime.

// clientCmd is a command from the parent.
type clientCmd struct {
	Cmd      string `json:"cmd"`       // connect, reset, report, reconnect, close, exit
	N        int    `json:"n"`         // connect: connections
	Subjects int    `json:"subjects"`  // connect: distinct subjects, one per connection round-robin
	Base     int    `json:"base"`      // connect: first seller id
	Parallel int    `json:"parallel"`  // connect: dials in flight (0: all at once)
	Settle   int    `json:"settle_ms"` // reconnect: how long to wait for everyone
}

// clientReply is the client process's answer.
type clientReply struct {
	OK        bool    `json:"ok"`
	Err       string  `json:"err,omitempty"`
	Conns     int     `json:"conns"`
	Live      int     `json:"live"`
	Closed    int     `json:"closed"`
	Failed    int     `json:"failed"`
	Frames    int64   `json:"frames"`
	Deltas    int64   `json:"deltas"`
	P50ms     float64 `json:"p50_ms"`
	P99ms     float64 `json:"p99_ms"`
	MaxMs     float64 `json:"max_ms"`
	TookMs    float64 `json:"took_ms"`
	LiveP50ms float64 `json:"live_p50_ms"`
	LiveP99ms float64 `json:"live_p99_ms"`
	LiveMaxMs float64 `json:"live_max_ms"`
	Elapsed   float64 `json:"elapsed_s"`
}

// hist is a lock-free latency histogram: 100 µs buckets up to 30 s.
type hist struct {
	b    [300001]atomic.Uint32
	n    atomic.Int64
	maxU atomic.Int64
}

func (h *hist) add(d time.Duration) {
	us := d.Microseconds()
	if us < 0 {
		us = 0
	}
	i := us / 100
	if i >= int64(len(h.b)) {
		i = int64(len(h.b)) - 1
	}
	h.b[i].Add(1)
	h.n.Add(1)
	for {
		m := h.maxU.Load()
		if us <= m || h.maxU.CompareAndSwap(m, us) {
			break
		}
	}
}

func (h *hist) reset() {
	for i := range h.b {
		h.b[i].Store(0)
	}
	h.n.Store(0)
	h.maxU.Store(0)
}

// quantile returns the q-quantile in milliseconds (bucket upper bound).
func (h *hist) quantile(q float64) float64 {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	want := int64(q*float64(n) + 0.5)
	if want < 1 {
		want = 1
	}
	var c int64
	for i := range h.b {
		c += int64(h.b[i].Load())
		if c >= want {
			return float64(i+1) / 10
		}
	}
	return float64(h.maxU.Load()) / 1000
}

// wsConn is one of the client process's connections.
type wsConn struct {
	subject string
	ws      *websocket.Conn
	cursor  atomic.Uint64 // greatest delta LSN seen
	epoch   string
	live    chan struct{} // closed at "subscribed"
	liveAt  time.Time
}

type clientProc struct {
	url     string
	dialer  *websocket.Dialer
	lat     hist
	frames  atomic.Int64
	deltas  atomic.Int64
	closed  atomic.Int64
	mu      sync.Mutex
	conns   []*wsConn
	started time.Time
	wg      sync.WaitGroup
}

// RunClient is `repstream bench client --url ws://…/v1/stream`.
func RunClient(ctx context.Context, url string, in io.Reader, out io.Writer) error {
	RaiseNoFile()
	var srcIdx atomic.Uint32
	nd := &net.Dialer{Timeout: 30 * time.Second}
	p := &clientProc{url: url, started: time.Now(), dialer: &websocket.Dialer{
		HandshakeTimeout: 60 * time.Second,
		Subprotocols:     []string{wire.SubprotocolJSON},
		ReadBufferSize:   2048, WriteBufferSize: 512,
		// Spread the source addresses over 127.0.0.2-9 so 10,000 sockets
		// and their TIME_WAITs never run out of ephemeral ports.
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			d := *nd
			d.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+srcIdx.Add(1)%8))}
			return d.DialContext(ctx, network, addr)
		},
	}}
	sc := bufio.NewScanner(in)
	enc := json.NewEncoder(out)
	for sc.Scan() {
		var c clientCmd
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			enc.Encode(clientReply{Err: err.Error()}) //nolint:errcheck
			continue
		}
		var r clientReply
		switch c.Cmd {
		case "connect":
			r = p.connect(ctx, c)
		case "reset":
			p.lat.reset()
			p.frames.Store(0)
			p.deltas.Store(0)
			p.started = time.Now()
			r = clientReply{OK: true}
		case "report":
			r = p.report()
		case "reconnect":
			r = p.reconnect(ctx, c)
		case "close":
			p.closeAll()
			r = clientReply{OK: true}
		case "exit":
			p.closeAll()
			enc.Encode(clientReply{OK: true}) //nolint:errcheck
			return nil
		default:
			r = clientReply{Err: "unknown command " + c.Cmd}
		}
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	p.closeAll()
	return sc.Err()
}

func (p *clientProc) report() clientReply {
	p.mu.Lock()
	n, live := len(p.conns), 0
	for _, c := range p.conns {
		select {
		case <-c.live:
			live++
		default:
		}
	}
	p.mu.Unlock()
	return clientReply{OK: true, Conns: n, Live: live, Closed: int(p.closed.Load()), Frames: p.frames.Load(), Deltas: p.deltas.Load(),
		P50ms: p.lat.quantile(0.50), P99ms: p.lat.quantile(0.99), MaxMs: float64(p.lat.maxU.Load()) / 1000,
		Elapsed: time.Since(p.started).Seconds()}
}

// closeAll closes every connection, waits for their readers and returns
// them (with their cursors).
func (p *clientProc) closeAll() []*wsConn {
	p.mu.Lock()
	cs := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range cs {
		if c.ws != nil {
			c.ws.Close()
		}
	}
	p.wg.Wait()
	p.closed.Store(0)
	return cs
}

// connect dials c.N connections, each subscribed to one subject.
func (p *clientProc) connect(ctx context.Context, c clientCmd) clientReply {
	start := time.Now()
	conns := make([]*wsConn, c.N)
	for i := range conns {
		conns[i] = &wsConn{subject: fmt.Sprintf("seller:%d", c.Base+i%max(c.Subjects, 1)), live: make(chan struct{})}
	}
	failed := p.dialAll(ctx, conns, c.Parallel, start)
	p.mu.Lock()
	p.conns = append(p.conns, conns...)
	p.mu.Unlock()
	r := p.liveStats(conns, start, 60*time.Second)
	r.Failed += failed
	r.TookMs = float64(time.Since(start).Microseconds()) / 1000
	return r
}

// dialAll opens every connection with parallel dials in flight and
// subscribes each (resuming from its cursor when it has one).
func (p *clientProc) dialAll(ctx context.Context, conns []*wsConn, parallel int, start time.Time) int {
	if parallel <= 0 {
		parallel = len(conns)
	}
	sem := make(chan struct{}, parallel)
	var failed atomic.Int64
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			h := http.Header{"Authorization": {"Bearer bench"}}
			ws, _, err := p.dialer.DialContext(ctx, p.url, h)
			if err != nil {
				failed.Add(1)
				fmt.Fprintln(os.Stderr, "bench client: dial:", err)
				return
			}
			c.ws = ws
			p.wg.Add(1)
			go p.read(c)
		}()
	}
	wg.Wait()
	return int(failed.Load())
}

// liveStats waits up to within for every connection to be subscribed and
// reports how long each took from start.
func (p *clientProc) liveStats(conns []*wsConn, start time.Time, within time.Duration) clientReply {
	deadline := time.After(within)
	var h hist
	live := 0
wait:
	for _, c := range conns {
		if c.ws == nil {
			continue
		}
		select {
		case <-c.live:
			live++
			h.add(c.liveAt.Sub(start))
		case <-deadline:
			break wait
		}
	}
	return clientReply{OK: true, Conns: len(conns), Live: live, Failed: len(conns) - live,
		LiveP50ms: h.quantile(0.5), LiveP99ms: h.quantile(0.99), LiveMaxMs: float64(h.maxU.Load()) / 1000}
}

// reconnect drops every connection and redials them all at once, each
// resuming from its cursor.
func (p *clientProc) reconnect(ctx context.Context, c clientCmd) clientReply {
	old := p.closeAll()
	conns := make([]*wsConn, len(old))
	for i, oc := range old {
		conns[i] = &wsConn{subject: oc.subject, epoch: oc.epoch, live: make(chan struct{})}
		conns[i].cursor.Store(oc.cursor.Load())
	}
	start := time.Now()
	failed := p.dialAll(ctx, conns, 0, start)
	p.mu.Lock()
	p.conns = conns
	p.mu.Unlock()
	within := time.Duration(c.Settle) * time.Millisecond
	if within <= 0 {
		within = 30 * time.Second
	}
	r := p.liveStats(conns, start, within)
	r.Failed += failed
	r.TookMs = float64(time.Since(start).Microseconds()) / 1000
	return r
}

var (
	typeDelta = []byte(`{"type":"delta`) // delta and deltas
	typeWelc  = []byte(`{"type":"welcome"`)
	typeSubd  = []byte(`{"type":"subscribed"`)
	keySubj   = []byte(`{"type":"delta","subject":"`)
	keyLSN    = []byte(`"lsn":"`)
	keyAt     = []byte(`"updated_at":"`)
)

// read consumes one connection's frames until it closes.
func (p *clientProc) read(c *wsConn) {
	defer p.wg.Done()
	buf := make([]byte, 0, 4096)
	for {
		_, r, err := c.ws.NextReader()
		if err != nil {
			p.closed.Add(1)
			return
		}
		buf = buf[:0]
		for {
			if len(buf) == cap(buf) {
				buf = append(buf, 0)[:len(buf)]
			}
			n, err := r.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			if err == io.EOF {
				break
			}
			if err != nil {
				p.closed.Add(1)
				return
			}
		}
		now := time.Now()
		switch {
		case bytes.HasPrefix(buf, typeDelta):
			p.frames.Add(1)
			scanDeltas(buf, func(_ string, lsn stream.LSN, at time.Time) {
				p.deltas.Add(1)
				if uint64(lsn) > c.cursor.Load() {
					c.cursor.Store(uint64(lsn))
				}
				p.lat.add(now.Sub(at))
			})
		case bytes.HasPrefix(buf, typeWelc):
			m, err := wire.JSON{}.DecodeServer(buf)
			if err != nil {
				continue
			}
			sub := wire.ClientMessage{Type: wire.TypeSubscribe, ID: 1, Subjects: []string{c.subject}}
			if cur := c.cursor.Load(); cur > 0 && c.epoch == m.Epoch {
				sub.Since, sub.HasSince, sub.Epoch = stream.LSN(cur).String(), true, m.Epoch
			}
			c.epoch = m.Epoch
			b, _ := wire.JSON{}.EncodeClient(sub)
			if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
				p.closed.Add(1)
				return
			}
		case bytes.HasPrefix(buf, typeSubd):
			c.liveAt = now
			close(c.live)
		}
	}
}

// scanDeltas finds every delta in a delta or deltas frame without a full
// decode: its subject, LSN and after.updated_at (the source commit time).
func scanDeltas(b []byte, fn func(subject string, lsn stream.LSN, at time.Time)) {
	for {
		i := bytes.Index(b, keySubj)
		if i < 0 {
			return
		}
		b = b[i+len(keySubj):]
		j := bytes.IndexByte(b, '"')
		if j < 0 {
			return
		}
		subject := string(b[:j])
		b = b[j:]
		k := bytes.Index(b, keyLSN)
		if k < 0 {
			return
		}
		b = b[k+len(keyLSN):]
		j = bytes.IndexByte(b, '"')
		if j < 0 {
			return
		}
		lsn, _ := stream.ParseLSN(string(b[:j]))
		k = bytes.Index(b, keyAt)
		if k < 0 {
			return
		}
		b = b[k+len(keyAt):]
		j = bytes.IndexByte(b, '"')
		if j < 0 {
			return
		}
		at, _ := time.Parse(time.RFC3339Nano, string(b[:j]))
		fn(subject, lsn, at)
	}
}
