package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/stream"
)

// The fan-out floor is the fan-out baseline: a textbook gorilla/websocket
// broadcast server (a reader and a writer goroutine per connection, a
// buffered channel between hub and writer) that speaks just enough of the
// protocol for the bench client and does nothing else: no Postgres, no
// store, no hub. What it holds on this machine, with the same client
// process, bounds what any WebSocket server built this way can hold here.

// RunFloor is `repstream bench floor`: it listens on a loopback port, prints
// {"url": "ws://…/v1/stream", "control": "http://…/rate"} on out, and serves
// until ctx ends. POST /rate?deltas=N sets the deltas per second it
// broadcasts, round-robin over the subjects its clients subscribed to.
func RunFloor(ctx context.Context, out io.Writer) error {
	RaiseNoFile()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	f := &floor{subs: map[string][]*floorConn{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/stream", f.serveWS)
	mux.HandleFunc("/rate", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseFloat(r.URL.Query().Get("deltas"), 64)
		if err != nil || n < 0 {
			http.Error(w, "deltas: want a rate per second", http.StatusBadRequest)
			return
		}
		f.rate.Store(int64(n))
		w.WriteHeader(http.StatusNoContent)
	})
	srv := &http.Server{Handler: mux}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); f.broadcast(ctx) }()
	go func() { <-ctx.Done(); srv.Close() }() //nolint:errcheck
	addr := ln.Addr().String()
	if err := json.NewEncoder(out).Encode(map[string]string{
		"url": "ws://" + addr + "/v1/stream", "control": "http://" + addr + "/rate"}); err != nil {
		return err
	}
	err = srv.Serve(ln)
	cancel()
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

type floor struct {
	rate atomic.Int64 // deltas per second
	mu   sync.Mutex
	subs map[string][]*floorConn // by subject
	list []string                // subjects in subscription order
}

type floorConn struct {
	ws   *websocket.Conn
	send chan []byte
}

var floorUpgrader = websocket.Upgrader{
	ReadBufferSize: 1024, WriteBufferSize: 4096,
	Subprotocols: []string{wire.SubprotocolJSON},
	CheckOrigin:  func(*http.Request) bool { return true },
}

func (f *floor) serveWS(w http.ResponseWriter, r *http.Request) {
	ws, err := floorUpgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &floorConn{ws: ws, send: make(chan []byte, 256)}
	done := make(chan struct{})
	go func() { // the writer
		defer ws.Close()
		for {
			select {
			case b := <-c.send:
				if err := ws.WriteMessage(websocket.TextMessage, b); err != nil {
					return
				}
			case <-done:
				return
			}
		}
	}()
	defer close(done)
	c.send <- wire.JSON{}.Welcome("floor", 0, time.Minute, "floor")
	var subject string
	for {
		_, b, err := ws.ReadMessage()
		if err != nil {
			break
		}
		m, err := wire.JSON{}.DecodeClient(b)
		if err != nil || m.Type != wire.TypeSubscribe || len(m.Subjects) != 1 || subject != "" {
			continue
		}
		subject = m.Subjects[0]
		f.mu.Lock()
		if f.subs[subject] == nil {
			f.list = append(f.list, subject)
		}
		f.subs[subject] = append(f.subs[subject], c)
		f.mu.Unlock()
		c.send <- wire.JSON{}.Subscribed(m.ID, 0, "snapshot", false)
	}
	if subject != "" {
		f.mu.Lock()
		cs := f.subs[subject]
		for i, x := range cs {
			if x == c {
				f.subs[subject] = append(cs[:i], cs[i+1:]...)
				break
			}
		}
		f.mu.Unlock()
	}
}

// broadcast sends rate deltas per second, each to every subscriber of its
// subject, dropping a frame for a connection whose channel is full.
func (f *floor) broadcast(ctx context.Context) {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	var sent, lsn int64
	start, rate := time.Now(), int64(0)
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			if r := f.rate.Load(); r != rate {
				rate, start, sent = r, now, 0
			}
			due := int64(now.Sub(start).Seconds() * float64(rate))
			f.mu.Lock()
			for ; sent < due && len(f.list) > 0; sent++ {
				lsn++
				subject := f.list[int(lsn)%len(f.list)]
				d := stream.Delta{Subject: subject, LSN: stream.LSN(lsn), Version: lsn,
					After: stream.State{Subject: subject, Count: lsn, LSN: stream.LSN(lsn), Version: lsn, UpdatedAt: time.Now()}}
				b := wire.JSON{}.Delta(&d)
				for _, c := range f.subs[subject] {
					select {
					case c.send <- b:
					default:
					}
				}
			}
			f.mu.Unlock()
		}
	}
}

// floorProc is a running `repstream bench floor`.
type floorProc struct {
	cmd          *exec.Cmd
	url, control string
}

func (e *env) startFloor() (*floorProc, error) {
	cmd := exec.Command(e.self, "bench", "floor")
	cmd.Stderr = e.cliLog
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start the fan-out floor: %w", err)
	}
	var addr struct{ URL, Control string }
	if err := json.NewDecoder(out).Decode(&addr); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("bench: the fan-out floor: %w", err)
	}
	return &floorProc{cmd: cmd, url: addr.URL, control: addr.Control}, nil
}

func (f *floorProc) stop() {
	_ = f.cmd.Process.Signal(syscall.SIGTERM)
	_ = f.cmd.Wait()
}

func (f *floorProc) setRate(deltasPerSec float64) error {
	resp, err := http.Post(f.control+"?deltas="+strconv.FormatFloat(deltasPerSec, 'f', 0, 64), "", nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("bench: floor rate: %s", resp.Status)
	}
	return nil
}
