package api

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/hub"
)

// writeBuffers is shared by every connection's writes.
var writeBuffers sync.Pool

// readBufferSize is the size of a connection's read buffer. Client
// messages are small, and a larger one is read past the buffer. It must
// exceed 256 for gorilla to take the buffer serveWS hands it.
const readBufferSize = 288

// upgrader is shared by every upgrade.
var upgrader = websocket.Upgrader{
	// The read buffer comes with the hijacked connection (see
	// hijackWriter); write buffers are borrowed from a shared pool only
	// while a frame is written, so an idle connection holds none.
	ReadBufferSize:    0,
	WriteBufferSize:   4096,
	WriteBufferPool:   &writeBuffers,
	Subprotocols:      []string{wire.SubprotocolJSON, wire.SubprotocolProto},
	CheckOrigin:       func(*http.Request) bool { return true }, // refused below with 1008
	EnableCompression: false,
	Error: func(w http.ResponseWriter, _ *http.Request, status int, reason error) {
		writeError(w, status, wire.CodeBadRequest, "websocket upgrade: "+reason.Error())
	},
}

// hijackWriter hands the upgrade a read buffer of readBufferSize in place
// of the HTTP server's (4 KiB, and tied to the HTTP connection's state).
type hijackWriter struct {
	http.ResponseWriter
}

func (h hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil || brw.Reader.Buffered() > 0 {
		return c, brw, err // the upgrade refuses early data itself
	}
	return c, bufio.NewReadWriter(bufio.NewReaderSize(c, readBufferSize), brw.Writer), nil
}

// serveWS upgrades GET /v1/stream, starts the session and returns.
//
// An idle session costs one goroutine, its reader, which waits for the next
// client message on a fresh, small stack: each message is handled on the
// goroutine that read it, which then leaves the next read to a new
// goroutine (so neither the handler's stack, grown through net/http and the
// router, nor one grown by handling a message, is kept while idle; the
// handler's return also frees the HTTP connection's buffers). The writer (a
// drain of the hub queue, which also writes pings) and the worker
// (subscribes and unsubscribes, which may wait on the client during a
// catch-up) run only while they have something to do.
func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	ws, err := upgrader.Upgrade(hijackWriter{w}, r, nil)
	if err != nil {
		return // Upgrade answered
	}
	reject := func(code int, reason string) {
		s.m.closes.WithLabelValues(strconv.Itoa(code)).Inc()
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
		_ = ws.Close()
	}
	if !s.enter() {
		reject(CloseGoingAway, "server shutting down")
		return
	}
	if n := s.nconns.Add(1); n > int64(s.cfg.MaxConnections) {
		s.nconns.Add(-1)
		reject(CloseTooManyConnections, "too many connections")
		s.sessions.Done()
		return
	}
	leave := func() {
		s.nconns.Add(-1)
		s.sessions.Done()
	}
	if !s.originAllowed(r) {
		s.logger.Info("api: websocket origin refused", "origin", r.Header.Get("Origin"))
		reject(ClosePolicy, "origin not allowed")
		leave()
		return
	}
	codecIdx := 0
	for i, c := range s.codecs {
		if c.Name() == ws.Subprotocol() {
			codecIdx = i
		}
	}
	var grant *Grant
	if tok, present := bearer(r); present {
		g, err := s.auth.Verify(tok)
		if err != nil {
			s.m.authFailures.WithLabelValues(err.(*AuthError).Reason).Inc()
			reject(CloseUnauthenticated, truncate(err.Error(), 100))
			leave()
			return
		}
		grant = g
	} else if s.auth.Insecure() {
		// auth.insecure: no token is needed, so none is awaited; welcome at
		// once (a hello that comes anyway is taken as a refresh).
		grant = &Grant{All: true}
	}
	codec := s.codecs[codecIdx]
	ss := &session{srv: s, ws: ws, codec: codec, hc: s.hub.Connect(codecIdx)}
	s.m.sessions.Inc()
	started := false
	defer func() {
		if !started { // refused, or a panic (the router's Recoverer reports it)
			ss.end()
		}
	}()
	s.join(ss)
	ss.hc.SetDrain(ss.startDrain)
	// Shutdown closes the connections the hub holds once it is draining; a
	// session that registered with the hub only after that closes itself.
	s.mu.Lock()
	draining := s.draining
	s.mu.Unlock()
	if draining {
		ss.hc.Close(CloseGoingAway, "server shutting down")
	}
	if grant != nil {
		if !ss.authenticated(grant) {
			return
		}
	} else {
		ss.mu.Lock()
		ss.hello = time.AfterFunc(s.cfg.HelloTimeout, func() {
			ss.mu.Lock()
			authed := ss.grant != nil
			ss.mu.Unlock()
			if !authed {
				s.m.authFailures.WithLabelValues("no_hello").Inc()
				ss.hc.Close(CloseUnauthenticated, "no hello with a valid token in time")
			}
		})
		ss.mu.Unlock()
	}
	ss.ws.SetReadLimit(s.cfg.MaxFrameBytes)
	_ = ss.ws.SetReadDeadline(time.Now().Add(s.cfg.PongTimeout))
	ss.ws.SetPongHandler(func(string) error {
		return ss.ws.SetReadDeadline(time.Now().Add(s.cfg.PongTimeout))
	})
	ss.ws.SetPingHandler(ss.onPing)
	started = true
	go ss.readNext()
}

// originAllowed applies Config.AllowedOrigins to browser requests.
func (s *Server) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true // not a browser
	}
	for _, o := range s.cfg.AllowedOrigins {
		if o == "*" || strings.EqualFold(o, origin) {
			return true
		}
	}
	if len(s.cfg.AllowedOrigins) > 0 {
		return false
	}
	u, err := url.Parse(origin)
	return err == nil && strings.EqualFold(u.Host, r.Host)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// maxPendingRequests bounds the subscribes and unsubscribes a session
// queues for its worker; past it the reader waits, so a flood of requests
// holds up the client rather than the server's memory.
const maxPendingRequests = 4

// session is one WebSocket connection.
type session struct {
	srv   *Server
	ws    *websocket.Conn
	codec wire.Codec
	hc    *hub.Conn
	// wg counts the drain and worker goroutines. The drain is started
	// under the hub connection's lock, and the worker by the reader, so
	// once end's hc.Close has returned none starts again and Wait is safe.
	wg sync.WaitGroup

	shared            *wsShared   // the server's pinger and drain goroutines
	pingSlot, pingIdx int         // guarded by shared.mu
	pingDue           atomic.Bool // set by the pinger before it pokes the drain

	mu       sync.Mutex
	grant    *Grant               // guarded by mu; nil until authenticated
	expiry   *time.Timer          // guarded by mu
	hello    *time.Timer          // guarded by mu
	reqs     []wire.ClientMessage // guarded by mu; subscribes and unsubscribes for the worker, in order
	reqSpace chan struct{}        // guarded by mu; closed when the worker takes a request
	cancel   context.CancelFunc   // guarded by mu; cancels the worker's requests
	pong     []byte               // guarded by mu; the payload of the client's latest ping
	working  bool                 // guarded by mu; the worker runs
	ended    bool                 // guarded by mu; end ran
	pongDue  bool                 // guarded by mu; a client's ping awaits its pong
}

// readNext is the session's reader while it is idle: it waits for the next
// client message with as little stack as it can and hands it on.
func (ss *session) readNext() {
	_, r, err := ss.ws.NextReader()
	ss.received(r, err)
}

// received reads and handles one client message, then starts the next
// read on a fresh goroutine, or ends the session.
func (ss *session) received(r io.Reader, err error) {
	s := ss.srv
	next := false
	defer func() {
		if next {
			return
		}
		if p := recover(); p != nil {
			// The router's Recoverer used to catch this when the reader
			// ran on the handler's goroutine.
			s.logger.Error("api: websocket session panicked", "panic", p, "stack", string(debug.Stack()))
		}
		ss.end()
	}()
	var b []byte
	if err == nil {
		b, err = io.ReadAll(r)
	}
	if err != nil {
		if errors.Is(err, websocket.ErrReadLimit) {
			// gorilla has sent close 1009 already.
			s.m.closes.WithLabelValues(strconv.Itoa(CloseTooBig)).Inc()
			ss.hc.Close(CloseTooBig, "frame too large")
		}
		return
	}
	_ = ss.ws.SetReadDeadline(time.Now().Add(s.cfg.PongTimeout))
	if !ss.handle(b) {
		return
	}
	next = true
	go ss.readNext()
}

// end closes the session: the close frame is written (by the drain the
// close starts, unless the connection was closed already), the worker
// stops, and the server's accounting is released.
func (ss *session) end() {
	s := ss.srv
	ss.hc.Close(CloseGoingAway, "peer gone")
	ss.mu.Lock()
	ss.ended = true
	if ss.cancel != nil {
		ss.cancel()
	}
	ss.mu.Unlock()
	ss.wg.Wait()
	ss.mu.Lock()
	if ss.expiry != nil {
		ss.expiry.Stop()
	}
	if ss.hello != nil {
		ss.hello.Stop()
	}
	ss.mu.Unlock()
	s.leave(ss)
	s.hub.Disconnect(ss.hc)
	_ = ss.ws.Close()
	s.m.sessions.Dec()
	s.nconns.Add(-1)
	s.sessions.Done()
}

// handle acts on one client frame; false ends the session.
func (ss *session) handle(b []byte) bool {
	s := ss.srv
	m, err := ss.codec.DecodeClient(b)
	var re *wire.RequestError
	switch {
	case errors.As(err, &re):
		s.m.received.WithLabelValues("invalid").Inc()
		ss.hc.Enqueue(ss.codec.Error(re.ID, wire.CodeBadRequest, truncate(re.Msg, 200)))
		return true
	case err != nil:
		s.m.received.WithLabelValues("malformed").Inc()
		ss.hc.Close(CloseMalformed, "malformed message")
		return true // the writer sends the close; the read then ends
	}
	s.m.received.WithLabelValues(m.Type).Inc()
	ss.mu.Lock()
	grant := ss.grant
	ss.mu.Unlock()
	switch m.Type {
	case wire.TypeHello:
		g, err := s.auth.Verify(m.Token)
		if err != nil {
			s.m.authFailures.WithLabelValues(err.(*AuthError).Reason).Inc()
			if grant == nil {
				ss.hc.Close(CloseUnauthenticated, truncate(err.Error(), 100))
				return true
			}
			// A failed refresh: the session keeps its current token.
			ss.hc.Enqueue(ss.codec.Error(m.ID, wire.CodeUnauthenticated, truncate(err.Error(), 200)))
			return true
		}
		return ss.authenticated(g)
	case wire.TypePing:
		ss.hc.Enqueue(ss.codec.Pong(m.ID))
		return true
	}
	// subscribe, unsubscribe
	if grant == nil {
		ss.hc.Enqueue(ss.codec.Error(m.ID, wire.CodeUnauthenticated, "send hello with a token first"))
		return true
	}
	if m.Type == wire.TypeSubscribe {
		// The subjects claim is checked here, once per subscribe.
		if ok, what := grant.AllowsSelector(stream.Selector{Subjects: m.Subjects, Prefix: m.Prefix}); !ok {
			s.m.authFailures.WithLabelValues("forbidden").Inc()
			ss.hc.Enqueue(ss.codec.Error(m.ID, wire.CodeForbidden, "the token does not cover "+strconv.Quote(truncate(what, 100))))
			return true
		}
	}
	ss.request(m)
	return true
}

// authenticated installs a verified grant (the first, or a refresh), arms
// the expiry and, the first time, sends welcome.
func (ss *session) authenticated(g *Grant) bool {
	s := ss.srv
	ss.mu.Lock()
	first := ss.grant == nil // a session is welcomed with its first grant
	ss.grant = g
	if ss.expiry != nil {
		ss.expiry.Stop()
		ss.expiry = nil
	}
	if !g.Expires.IsZero() {
		ss.expiry = time.AfterFunc(time.Until(g.Expires)+s.auth.cfg.Leeway, func() {
			s.m.authFailures.WithLabelValues("expired_in_session").Inc()
			ss.hc.Close(CloseUnauthenticated, "token expired")
		})
	}
	ss.mu.Unlock()
	if !first {
		return true
	}
	epoch, head, err := s.hub.Ready(context.Background())
	if err != nil {
		s.logger.Error("api: cannot welcome a client: store unavailable", "err", err)
		ss.hc.Close(CloseInternal, "store unavailable")
		return false
	}
	ss.hc.Enqueue(ss.codec.Welcome(epoch, head, s.cfg.Heartbeat, "repstream/"+s.version))
	return true
}

// request queues a subscribe or unsubscribe for the worker, starting it if
// it is not running; while maxPendingRequests wait, it waits (or until the
// connection closes).
func (ss *session) request(m wire.ClientMessage) {
	for {
		ss.mu.Lock()
		if len(ss.reqs) < maxPendingRequests {
			ss.reqs = append(ss.reqs, m)
			if !ss.working {
				ss.working = true
				ss.wg.Add(1)
				go ss.work()
			}
			ss.mu.Unlock()
			return
		}
		if ss.reqSpace == nil {
			ss.reqSpace = make(chan struct{})
		}
		space := ss.reqSpace
		ss.mu.Unlock()
		select {
		case <-space:
		case <-ss.hc.Done():
			return
		}
	}
}

// work runs the queued subscribes and unsubscribes in order, and returns
// when none is left (request starts it again). Its context is cancelled
// when the session ends.
func (ss *session) work() {
	defer ss.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	ss.mu.Lock()
	if ss.ended {
		cancel()
	}
	ss.cancel = cancel
	for len(ss.reqs) > 0 {
		m := ss.reqs[0]
		ss.reqs[0] = wire.ClientMessage{}
		ss.reqs = ss.reqs[1:]
		if ss.reqSpace != nil {
			close(ss.reqSpace)
			ss.reqSpace = nil
		}
		ss.mu.Unlock()
		if ctx.Err() == nil {
			ss.serve(ctx, m)
		}
		ss.mu.Lock()
	}
	ss.working, ss.reqs, ss.cancel = false, nil, nil
	ss.mu.Unlock()
	cancel()
}

// serve runs one subscribe or unsubscribe.
func (ss *session) serve(ctx context.Context, m wire.ClientMessage) {
	s := ss.srv
	switch m.Type {
	case wire.TypeUnsubscribe:
		ss.hc.Unsubscribe(stream.Selector{Subjects: m.Subjects, Prefix: m.Prefix})
		ss.hc.Enqueue(ss.codec.Unsubscribed(m.ID))
	case wire.TypeSubscribe:
		req := hub.Request{ID: m.ID, Sel: stream.Selector{Subjects: m.Subjects, Prefix: m.Prefix},
			Epoch: m.Epoch, Throttle: s.cfg.throttle(m.ThrottleMs)}
		if m.HasSince && m.Since != "" {
			lsn, err := stream.ParseLSN(m.Since)
			if err != nil {
				ss.hc.Enqueue(ss.codec.Error(m.ID, wire.CodeBadCursor, truncate(err.Error(), 200)))
				return
			}
			req.Since = &lsn
		}
		if _, err := ss.hc.Subscribe(ctx, req); err != nil {
			var he *hub.Error
			if errors.As(err, &he) {
				if he.Code == hub.CodeInternal {
					s.logger.Error("api: subscribe failed", "err", err)
				}
				ss.hc.Enqueue(ss.codec.Error(m.ID, he.Code, he.Msg))
			}
		}
	}
}

// startDrain is the hub connection's drain starter (hub.Conn.SetDrain): it
// runs with the connection's lock held, when a parked writer gets work.
func (ss *session) startDrain() {
	ss.wg.Add(1)
	ss.shared.startDrain(ss)
}

// drain writes what the hub connection hands it: pings, queued frames, and
// at last the close with the connection's close code. It returns when the
// queue is empty (Next parks it; the next frame starts a new drain), after
// the close, or when a write fails.
func (ss *session) drain() {
	defer ss.wg.Done()
	s := ss.srv
	var written []hub.Frame
	for {
		b, ok := ss.hc.Next(written)
		if !ok {
			return
		}
		if b.Closed {
			_, code, reason := ss.hc.Closed()
			if code != CloseTooBig { // gorilla sent that one
				s.m.closes.WithLabelValues(strconv.Itoa(code)).Inc()
				_ = ss.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(s.cfg.WriteTimeout))
			}
			// Give the peer a moment to answer the close, then drop it.
			_ = ss.ws.NetConn().SetReadDeadline(time.Now().Add(time.Second))
			return
		}
		if b.Poked && !ss.control() {
			continue // the next batch is the close
		}
		if !ss.write(b.Frames) {
			return
		}
		written = b.Frames
	}
}

// control writes the ping the pinger asked for and the pong a client's
// ping asked for; false means the connection is closed.
func (ss *session) control() bool {
	s := ss.srv
	if ss.pingDue.Swap(false) {
		if err := ss.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(s.cfg.WriteTimeout)); err != nil {
			ss.hc.Close(CloseGoingAway, "ping failed")
			return false
		}
	}
	ss.mu.Lock()
	pong, due := ss.pong, ss.pongDue
	ss.pong, ss.pongDue = nil, false
	ss.mu.Unlock()
	if due {
		// As gorilla's own ping handler: a failure shows up on the next
		// read or write.
		_ = ss.ws.WriteControl(websocket.PongMessage, pong, time.Now().Add(s.cfg.WriteTimeout))
	}
	return true
}

// onPing answers a client's ping through the drain, so the reader, which
// waits on a small stack, does not write.
func (ss *session) onPing(payload string) error {
	var b []byte
	if payload != "" {
		b = []byte(payload)
	}
	ss.mu.Lock()
	ss.pong, ss.pongDue = b, true // only the latest ping needs an answer (RFC 6455 5.5.3)
	ss.mu.Unlock()
	ss.hc.Poke()
	return nil
}

// write writes a batch of frames, joining runs of delta frames, with one
// write deadline and one metrics update for the batch. The deadline is
// renewed when a long batch has used an eighth of WriteTimeout, so each
// frame still gets most of WriteTimeout. A closed connection stops the
// batch (its queue is dropped). False means the socket failed and is
// closed.
func (ss *session) write(fs []hub.Frame) bool {
	if len(fs) == 0 {
		return true
	}
	s := ss.srv
	mt := websocket.TextMessage
	if ss.codec.Binary() {
		mt = websocket.BinaryMessage
	}
	wt := s.cfg.WriteTimeout
	set := time.Now()
	_ = ss.ws.SetWriteDeadline(set.Add(wt))
	var frames, bytes int
	defer func() {
		if frames > 0 {
			s.m.written.Add(float64(frames))
			s.m.writtenBytes.Add(float64(bytes))
		}
	}()
	for i := 0; i < len(fs); {
		if i > 0 {
			select {
			case <-ss.hc.Done():
				return true
			default:
			}
			if now := time.Now(); now.Sub(set) > wt/8 {
				set = now
				_ = ss.ws.SetWriteDeadline(now.Add(wt))
			}
		}
		var f []byte
		f, i = joinDeltas(ss.codec, fs, i)
		if err := ss.ws.WriteMessage(mt, f); err != nil {
			ss.hc.Close(CloseGoingAway, "write failed")
			_ = ss.ws.NetConn().Close()
			return false
		}
		frames++
		bytes += len(f)
	}
	return true
}
