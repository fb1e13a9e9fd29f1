package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"

	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/stream"
)

const latBase = 900000000 // seller ids of the latency writer: 9 digits, one subject per transaction

// latency measures commit → frame at a WebSocket client at 1,000 tx/s,
// against commit → receipt by pg_recvlogical at the same rate.
func (e *env) latency(ctx context.Context) error {
	rate, d := 1000.0, 15*time.Second
	if e.o.Quick {
		d = 6 * time.Second
	}
	var rawP50, rawP99, svcP50, svcP99 []float64
	next := int64(0)
	for r := 0; r < e.runs; r++ {
		// Baseline: pg_recvlogical on its own slot, the service stopped.
		if err := e.stopService(); err != nil {
			return err
		}
		raw, err := e.latencyRaw(ctx, &next, rate, d)
		if err != nil {
			return err
		}
		e.svcTag = fmt.Sprintf("latency-%d", r)
		if err := e.ensureService(ctx, e.svcTag); err != nil {
			return err
		}
		svc, err := e.latencyService(ctx, &next, rate, d)
		if err != nil {
			return err
		}
		sort.Float64s(raw)
		sort.Float64s(svc)
		rawP50, rawP99 = append(rawP50, quantileOf(raw, .5)), append(rawP99, quantileOf(raw, .99))
		svcP50, svcP99 = append(svcP50, quantileOf(svc, .5)), append(svcP99, quantileOf(svc, .99))
		e.logf("  run %d: pg_recvlogical p50 %.2f ms p99 %.2f ms (%d samples); repstream p50 %.2f ms p99 %.2f ms max %.1f ms (%d samples)",
			r+1, rawP50[r], rawP99[r], len(raw), svcP50[r], svcP99[r], svc[len(svc)-1], len(svc))
	}
	p50, p99 := median(svcP50), median(svcP99)
	ok := p50 <= 3 && p99 <= 20
	v := verdict(ok)
	if ok {
		v += fmt.Sprintf(" (p50 %.1f×, p99 %.1f× under)", 3/p50, 20/p99)
	}
	e.add(row{Measurement: "latency commit → WebSocket frame at 1,000 tx/s",
		Baseline: fmt.Sprintf("pg_recvlogical commit → receipt p50 %.2f ms, p99 %.2f ms", median(rawP50), median(rawP99)),
		Result:   fmt.Sprintf("p50 %.2f ms, p99 %.2f ms", p50, p99),
		Ratio:    fmt.Sprintf("p50 %.1f×, p99 %.1f× baseline", p50/median(rawP50), p99/median(rawP99)),
		Target:   "p50 ≤ 3 ms, p99 ≤ 20 ms", Verdict: v})
	return nil
}

// latencyWriter commits one single-row transaction per sequence number,
// seller latBase+i, at rate for d, recording when each COMMIT returned.
func (e *env) latencyWriter(ctx context.Context, first int64, rate float64, d time.Duration) (commits []atomic.Int64, run func() error) {
	n := int64(rate * d.Seconds())
	commits = make([]atomic.Int64, n)
	p := &pacer{Rate: rate, Workers: 2, N: n, Do: func(ctx context.Context, c *pgx.Conn, i int64) error {
		_, err := c.Exec(ctx, `INSERT INTO reviews (seller_id, rating, status) VALUES ($1, 4, 'published')`, latBase+first+i)
		if err == nil {
			commits[i].Store(time.Now().UnixNano())
		}
		return err
	}}
	return commits, func() error { return p.run(ctx, e.pool) }
}

// latencyRaw is the baseline run.
func (e *env) latencyRaw(ctx context.Context, next *int64, rate float64, d time.Duration) ([]float64, error) {
	const slot = "bench_lat"
	e.dropSlot(ctx, slot)
	if err := e.createSlot(ctx, slot); err != nil {
		return nil, err
	}
	defer e.dropSlot(context.Background(), slot)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := e.recvlogical(rctx, slot, 0)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer cmd.Wait()                   //nolint:errcheck
	defer cmd.Process.Kill()           //nolint:errcheck
	time.Sleep(300 * time.Millisecond) // let it connect
	first := *next
	commits, run := e.latencyWriter(ctx, first, rate, d)
	n := int64(len(commits))
	*next += n
	arrivals := make([]int64, n)
	var mu sync.Mutex
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		// An Insert's seller_id is the text value 't', int32 length 9, then
		// nine digits; arrival is when its bytes reach us.
		pat := []byte{'t', 0, 0, 0, 9}
		buf := make([]byte, 64<<10)
		var carry []byte
		for {
			k, err := out.Read(buf)
			now := time.Now().UnixNano()
			data := append(carry, buf[:k]...)
			off := 0
			for {
				i := bytes.Index(data[off:], pat)
				if i < 0 || off+i+5+9 > len(data) {
					break
				}
				j := off + i + 5
				if v, err := strconv.ParseInt(string(data[j:j+9]), 10, 64); err == nil && v >= latBase+first && v < latBase+first+n {
					mu.Lock()
					if arrivals[v-latBase-first] == 0 {
						arrivals[v-latBase-first] = now
					}
					mu.Unlock()
				}
				off = j
			}
			if len(data) > 13 {
				carry = append(carry[:0], data[len(data)-13:]...)
			} else {
				carry = append(carry[:0], data...)
			}
			if err != nil {
				return
			}
		}
	}()
	if err := run(); err != nil {
		return nil, err
	}
	time.Sleep(500 * time.Millisecond)
	cancel()
	_ = cmd.Process.Kill()
	<-readDone
	mu.Lock()
	defer mu.Unlock()
	return latencies(commits, arrivals), nil
}

func latencies(commits []atomic.Int64, arrivals []int64) []float64 {
	var out []float64
	for i := range arrivals {
		c := commits[i].Load()
		if c == 0 || arrivals[i] == 0 {
			continue
		}
		out = append(out, float64(arrivals[i]-c)/1e6)
	}
	if len(out) == 0 {
		out = []float64{0}
	}
	return out
}

// latencyService is the service run: a WebSocket client in this process
// subscribed to the writer's subjects.
func (e *env) latencyService(ctx context.Context, next *int64, rate float64, d time.Duration) ([]float64, error) {
	first := *next
	commits, run := e.latencyWriter(ctx, first, rate, d)
	n := int64(len(commits))
	*next += n
	arrivals := make([]int64, n)
	ws, err := dialSubscribe(ctx, e.wsURL, wire.ClientMessage{Type: wire.TypeSubscribe, ID: 1, Prefix: "seller:9"})
	if err != nil {
		return nil, err
	}
	defer ws.Close()
	var mu sync.Mutex
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				return
			}
			now := time.Now().UnixNano()
			scanDeltas(b, func(subject string, _ stream.LSN, _ time.Time) {
				v, err := strconv.ParseInt(subject[len("seller:"):], 10, 64)
				if err != nil || v < latBase+first || v >= latBase+first+n {
					return
				}
				mu.Lock()
				if arrivals[v-latBase-first] == 0 {
					arrivals[v-latBase-first] = now
				}
				mu.Unlock()
			})
		}
	}()
	if err := run(); err != nil {
		return nil, err
	}
	time.Sleep(500 * time.Millisecond)
	ws.Close()
	<-readDone
	mu.Lock()
	defer mu.Unlock()
	return latencies(commits, arrivals), nil
}

// dialSubscribe connects to the stream, waits for welcome, sends sub and
// waits for subscribed (skipping a snapshot).
func dialSubscribe(ctx context.Context, url string, sub wire.ClientMessage) (*websocket.Conn, error) {
	d := websocket.Dialer{Subprotocols: []string{wire.SubprotocolJSON}, HandshakeTimeout: 10 * time.Second}
	ws, _, err := d.DialContext(ctx, url, map[string][]string{"Authorization": {"Bearer bench"}})
	if err != nil {
		return nil, err
	}
	if err := expect(ws, wire.TypeWelcome); err != nil {
		ws.Close()
		return nil, err
	}
	b, _ := wire.JSON{}.EncodeClient(sub)
	if err := ws.WriteMessage(websocket.TextMessage, b); err != nil {
		ws.Close()
		return nil, err
	}
	if err := expect(ws, wire.TypeSubscribed); err != nil {
		ws.Close()
		return nil, err
	}
	if sub.HasSince {
		return ws, nil
	}
	// A snapshot follows; take all of it before anything is timed (earlier
	// runs' subjects would otherwise queue ahead of the first deltas).
	if err := readUntil(ws, func(m wire.ServerMessage) bool { return m.Type == wire.TypeSnapshot && !m.More }); err != nil {
		ws.Close()
		return nil, err
	}
	return ws, nil
}

func expect(ws *websocket.Conn, typ string) error {
	return readUntil(ws, func(m wire.ServerMessage) bool { return m.Type == typ })
}

// readUntil reads messages until done says so, within 30 s; an error
// message ends it with that error.
func readUntil(ws *websocket.Conn, done func(wire.ServerMessage) bool) error {
	_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	defer ws.SetReadDeadline(time.Time{}) //nolint:errcheck
	for {
		_, b, err := ws.ReadMessage()
		if err != nil {
			return err
		}
		m, err := wire.JSON{}.DecodeServer(b)
		if err != nil {
			return err
		}
		if done(m) {
			return nil
		}
		if m.Type == wire.TypeError {
			return fmt.Errorf("server: %s: %s", m.Code, m.Message)
		}
	}
}
