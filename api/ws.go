package api

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"

	"github.com/repstream/repstream/api/netpoll"

	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/hub"
)

// upgrader is shared by every upgrade.
var upgrader = ws.HTTPUpgrader{
	Protocol: func(p string) bool { return p == wire.SubprotocolJSON || p == wire.SubprotocolProto },
}

// readers lend a connection's reads a buffer only while it reads: an idle
// session holds none.
var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}

// isUpgrade tells a WebSocket handshake from a plain request, which is
// answered in the API's own error format.
func isUpgrade(r *http.Request) bool {
	return r.Method == http.MethodGet && strings.EqualFold(r.Header.Get("Upgrade"), "websocket") &&
		headerHasToken(r.Header.Values("Connection"), "upgrade")
}

func headerHasToken(values []string, token string) bool {
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// serveWS upgrades GET /v1/stream, starts the session and returns.
//
// An idle session runs no goroutine: its socket waits in the server's
// poller (api/netpoll), which starts a reader when the client sends
// something (a message, a pong, or a hangup). The reader handles what came
// and hands the socket back to the poller. The writer (a drain of the hub
// queue, which also writes pings) and the worker (subscribes and
// unsubscribes, which may wait on the client during a catch-up) run only
// while they have something to do.
func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	if !isUpgrade(r) {
		writeError(w, http.StatusBadRequest, wire.CodeBadRequest,
			"websocket upgrade: not a WebSocket handshake (a GET with Upgrade: websocket and Connection: Upgrade)")
		return
	}
	if s.refuseWithoutStore(w) {
		return
	}
	conn, rw, hs, err := upgrader.Upgrade(r, w)
	if err != nil {
		if conn != nil {
			_ = conn.Close()
		}
		return // Upgrade answered
	}
	reject := func(code int, reason string) {
		s.m.closes.WithLabelValues(strconv.Itoa(code)).Inc()
		_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
		_ = ws.WriteFrame(conn, ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusCode(code), reason)))
		_ = conn.Close()
	}
	sc, pollable := conn.(syscall.Conn)
	if rw.Reader.Buffered() > 0 || !pollable {
		// A client must await the handshake's answer before it sends
		// (RFC 6455 4.1); and a connection without a socket (none that
		// net/http hands out) cannot be polled.
		s.logger.Info("api: websocket refused: data before the handshake's answer, or no socket", "remote", r.RemoteAddr)
		reject(CloseProtocolError, "data sent before the handshake completed")
		return
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
		if c.Name() == hs.Protocol {
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
	ss := &session{srv: s, conn: conn, codec: codec, hc: s.hub.Connect(codecIdx)}
	ss.lastRead.Store(time.Now().UnixNano())
	s.m.sessions.Inc()
	started := false
	defer func() {
		if !started { // refused, or a panic (the router's Recoverer reports it)
			ss.end()
		}
	}()
	if err := s.join(ss, sc); err != nil {
		s.logger.Error("api: cannot watch a websocket", "err", err)
		ss.hc.Close(CloseInternal, "server cannot watch the connection")
		return
	}
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
	if err := ss.rh.Arm(); err != nil {
		s.logger.Error("api: cannot watch a websocket", "err", err)
		ss.hc.Close(CloseInternal, "server cannot watch the connection")
		return
	}
	started = true
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

// closeGrace is how long a session that sent its close waits for the
// peer's before it drops the connection.
const closeGrace = time.Second

// session is one WebSocket connection.
type session struct {
	srv   *Server
	conn  net.Conn
	rh    *netpoll.Handle // the read side, while no reader runs
	codec wire.Codec
	hc    *hub.Conn
	// wg counts the drain and worker goroutines. The drain is started
	// under the hub connection's lock, and the worker by the reader, so
	// once end's hc.Close has returned none starts again and Wait is safe.
	wg sync.WaitGroup

	shared            *wsShared    // the server's poller, pinger and drain goroutines
	pingSlot, pingIdx int          // guarded by shared.mu
	pingDue           atomic.Bool  // set by the pinger before it pokes the drain
	inLine            bool         // guarded by shared.wmu; waiting for a subscribe worker
	lastRead          atomic.Int64 // unix nanoseconds of the peer's last frame; the pinger drops a peer silent for PongTimeout
	dropped           atomic.Bool  // the read side is shut down: the next read ends the session

	writeBy time.Time // the drain's own: the write deadline set last

	// The reader's own: the message whose fragments are arriving (nil
	// between messages). One reader runs at a time (the poller notifies
	// once per Arm).
	frag []byte

	mu       sync.Mutex
	grant    *Grant               // guarded by mu; nil until authenticated
	expiry   *time.Timer          // guarded by mu
	hello    *time.Timer          // guarded by mu
	grace    *time.Timer          // guarded by mu; drops the connection closeGrace after the close was sent
	reqs     []wire.ClientMessage // guarded by mu; subscribes and unsubscribes for the worker, in order
	reqSpace chan struct{}        // guarded by mu; closed when the worker takes a request
	cancel   context.CancelFunc   // guarded by mu; cancels the worker's requests
	pong     []byte               // guarded by mu; the payload of the client's latest ping
	working  bool                 // guarded by mu; the worker runs
	detached bool                 // guarded by mu; the worker gave its slot back (a client-paced catch-up)
	ended    bool                 // guarded by mu; end ran
	pongDue  bool                 // guarded by mu; a client's ping awaits its pong
}

// readable is the session's reader. The poller starts it, on a fresh
// goroutine, when the socket has something: it handles every frame that
// came, then gives the socket back to the poller, or ends the session.
// end runs only here (or in serveWS before the first Arm), so it never
// races the poller.
func (ss *session) readable() {
	s := ss.srv
	br := readers.Get().(*bufio.Reader)
	br.Reset(ss.conn)
	again := false
	defer func() {
		br.Reset(nil)
		readers.Put(br)
		if again {
			return
		}
		if p := recover(); p != nil {
			s.logger.Error("api: websocket session panicked", "panic", p, "stack", string(debug.Stack()))
		}
		ss.end()
	}()
	for {
		if ss.dropped.Load() {
			return
		}
		// A frame begun must be finished in time.
		_ = ss.conn.SetReadDeadline(time.Now().Add(s.cfg.PongTimeout))
		if !ss.readFrame(br) {
			return
		}
		if br.Buffered() == 0 {
			break
		}
	}
	again = ss.rh.Arm() == nil // from here another reader may run
}

// readFrame reads one frame and acts on it; false ends the session.
func (ss *session) readFrame(br *bufio.Reader) bool {
	s := ss.srv
	h, err := ws.ReadHeader(br)
	if err != nil {
		return false // hangup, reset, a dropped read side, or a frame not finished in time
	}
	state := ws.StateServerSide
	if ss.frag != nil {
		state |= ws.StateFragmented
	}
	if err := ws.CheckHeader(h, state); err != nil {
		s.m.received.WithLabelValues("malformed").Inc()
		ss.hc.Close(CloseProtocolError, truncate(err.Error(), 100))
		return false
	}
	if h.Length > ss.frameLimit()-int64(len(ss.frag)) {
		ss.hc.Close(CloseTooBig, "frame too large")
		return false
	}
	p, err := readPayload(br, h.Length)
	if err != nil {
		return false
	}
	ws.Cipher(p, h.Mask, 0)
	ss.lastRead.Store(time.Now().UnixNano())
	switch h.OpCode {
	case ws.OpPing:
		ss.onPing(p)
		return true
	case ws.OpPong:
		return true // lastRead is what the pinger looks at
	case ws.OpClose:
		// Answer with the peer's code (RFC 6455 5.5.1), then end: the
		// drain that end waits for writes the answer.
		code, reason := ws.ParseCloseFrameData(p)
		switch {
		case len(p) == 0:
			code = ws.StatusNormalClosure
		case ws.CheckCloseFrameData(code, reason) != nil:
			code = ws.StatusProtocolError
		}
		ss.hc.Close(int(code), "")
		return false
	case ws.OpContinuation:
		ss.frag = append(ss.frag, p...)
	default: // text or binary: the codec tells its own from others
		ss.frag = p // not nil, even when empty
	}
	if !h.Fin {
		return true
	}
	m := ss.frag
	ss.frag = nil
	return ss.handle(m)
}

// preHelloFrameBytes bounds a message before the session is
// authenticated: room for a hello with a large token, little for a peer
// that has shown no credentials.
const preHelloFrameBytes = 8 << 10

// frameLimit is the largest message the session takes now: the configured
// max_frame_bytes once authenticated, preHelloFrameBytes before.
func (ss *session) frameLimit() int64 {
	ss.mu.Lock()
	authed := ss.grant != nil
	ss.mu.Unlock()
	if authed {
		return ss.srv.cfg.MaxFrameBytes
	}
	return min(ss.srv.cfg.MaxFrameBytes, preHelloFrameBytes)
}

// payloadStep is the most readPayload allocates ahead of the bytes that
// arrived.
const payloadStep = 4 << 10

// readPayload reads a frame's n payload bytes, growing the buffer as they
// arrive (doubling, from at most payloadStep), so a header that announces
// a large frame costs no more memory than the bytes the peer really sends.
func readPayload(r io.Reader, n int64) ([]byte, error) {
	p := make([]byte, 0, min(n, payloadStep))
	for int64(len(p)) < n {
		if len(p) == cap(p) {
			p = slices.Grow(p, int(min(n-int64(len(p)), int64(cap(p)))))
		}
		m, err := r.Read(p[len(p):min(int64(cap(p)), n)])
		p = p[:len(p)+m]
		if err != nil {
			if err == io.EOF && int64(len(p)) < n {
				err = io.ErrUnexpectedEOF
			}
			if int64(len(p)) < n {
				return nil, err
			}
		}
	}
	return p, nil
}

// closeRead shuts the connection's read side down, which ends the session
// whether its reader runs (the read fails) or it waits in the poller (the
// shutdown makes it readable, and the read finds the end).
func (ss *session) closeRead() {
	ss.dropped.Store(true)
	_ = ss.conn.SetReadDeadline(time.Unix(1, 0))
	if c, ok := ss.conn.(interface{ CloseRead() error }); ok {
		_ = c.CloseRead()
	}
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
	if ss.shared != nil && ss.shared.dropWaiting(ss) {
		// Its requests never ran: the worker it waited for is not coming.
		ss.mu.Lock()
		ss.working, ss.reqs = false, nil
		ss.mu.Unlock()
		ss.wg.Done()
	}
	ss.wg.Wait()
	ss.mu.Lock()
	for _, t := range []*time.Timer{ss.expiry, ss.hello, ss.grace} {
		if t != nil {
			t.Stop()
		}
	}
	ss.mu.Unlock()
	if ss.rh != nil {
		ss.rh.Remove()
	}
	s.leave(ss)
	s.hub.Disconnect(ss.hc)
	_ = ss.conn.Close()
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
		if ss.currentGrant() == nil {
			// Not welcomed: a hello without a token (or anything else
			// invalid) ends the session now, not at the hello timeout.
			s.m.authFailures.WithLabelValues("no_hello").Inc()
			ss.hc.Close(CloseUnauthenticated, truncate("send hello with a token first: "+re.Msg, 100))
			return true
		}
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
	}
	// ping, subscribe, unsubscribe: nothing but errors (and the close) goes
	// to a session that has not been welcomed.
	if grant == nil {
		ss.hc.Enqueue(ss.codec.Error(m.ID, wire.CodeUnauthenticated, "send hello with a token first"))
		return true
	}
	if m.Type == wire.TypePing {
		ss.hc.Enqueue(ss.codec.Pong(m.ID))
		return true
	}
	if m.Type == wire.TypeSubscribe {
		// The subjects claim is checked here, once per subscribe.
		if ok, what := grant.allowsRequest(m); !ok {
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
		ss.revoke(g)
		return true
	}
	epoch, head, err := s.hub.Ready(context.Background())
	if err != nil {
		s.logger.Error("api: cannot welcome a client: store unavailable", "err", err)
		ss.hc.Close(CloseInternal, "store unavailable")
		return false
	}
	ss.hc.Enqueue(ss.codec.Welcome(epoch, head, s.cfg.Heartbeat, "repstream/"+s.version))
	ss.hc.Admit() // ticks only after welcome
	return true
}

// revoke stops the subscriptions a refreshed grant no longer covers, each
// answered with error forbidden for its id.
func (ss *session) revoke(g *Grant) {
	ids := ss.hc.Revoke(func(sel stream.Selector, board bool) bool {
		if board {
			return g.AllowsBoard(sel.Prefix)
		}
		ok, _ := g.AllowsSelector(sel)
		return ok
	})
	for _, id := range ids {
		ss.srv.m.authFailures.WithLabelValues("forbidden").Inc()
		ss.hc.Enqueue(ss.codec.Error(id, wire.CodeForbidden, "the refreshed token does not cover this subscription; it was stopped"))
	}
}

// currentGrant returns the session's grant now (a refresh may have
// replaced the one a request was checked against).
func (ss *session) currentGrant() *Grant {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.grant
}

// request queues a subscribe or unsubscribe for the worker, starting it
// (or putting the session in line for one, wsShared.startWork) if it is not
// running; while maxPendingRequests wait, it waits (or until the connection
// closes).
func (ss *session) request(m wire.ClientMessage) {
	for {
		ss.mu.Lock()
		if len(ss.reqs) < maxPendingRequests {
			ss.reqs = append(ss.reqs, m)
			start := !ss.working
			if start {
				ss.working = true
				ss.wg.Add(1)
			}
			ss.mu.Unlock()
			if start {
				ss.shared.startWork(ss)
			}
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

// detach gives the session's subscribe worker slot back while its request
// goes on (on the same goroutine): the request's catch-up now waits on the
// client, and a slow client must not hold a worker the other connections'
// subscribes need. work then ends after that request.
func (ss *session) detach() {
	ss.mu.Lock()
	if ss.detached {
		ss.mu.Unlock()
		return
	}
	ss.detached = true
	ss.mu.Unlock()
	ss.shared.releaseSlot()
}

// work runs the queued subscribes and unsubscribes in order, on one of the
// server's subscribe workers, and returns when none is left (request starts
// it again). Its context is cancelled when the session ends. If a request
// gave the worker slot back (detach), work returns after it, true, and the
// requests left are put in line for a worker again.
func (ss *session) work() (detached bool) {
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
		if ss.detached {
			ss.detached = false
			requeue := len(ss.reqs) > 0 && !ss.ended
			if requeue {
				ss.wg.Add(1) // for the work the line starts
			} else {
				ss.working, ss.reqs = false, nil
			}
			ss.cancel = nil
			ss.mu.Unlock()
			cancel()
			if requeue {
				ss.shared.startWork(ss)
			}
			return true
		}
	}
	ss.working, ss.reqs, ss.cancel = false, nil, nil
	ss.mu.Unlock()
	cancel()
	return false
}

// serve runs one subscribe or unsubscribe.
func (ss *session) serve(ctx context.Context, m wire.ClientMessage) {
	s := ss.srv
	switch m.Type {
	case wire.TypeUnsubscribe:
		if m.Top > 0 || m.Order != "" {
			ss.hc.UnsubscribeBoard(m.Prefix, stream.Order(m.Order))
		} else {
			ss.hc.Unsubscribe(stream.Selector{Subjects: m.Subjects, Prefix: m.Prefix})
		}
		ss.hc.Enqueue(ss.codec.Unsubscribed(m.ID))
	case wire.TypeSubscribe:
		req := hub.Request{ID: m.ID, Sel: stream.Selector{Subjects: m.Subjects, Prefix: m.Prefix},
			Epoch: m.Epoch, Throttle: s.cfg.throttle(m.ThrottleMs), Waiting: ss.detach}
		if m.Top > 0 || m.Order != "" {
			req.Board = &hub.BoardRequest{Top: int(min(m.Top, 1<<30)), Order: stream.Order(m.Order)}
		}
		if m.HasSince && m.Since != "" {
			lsn, err := stream.ParseLSN(m.Since)
			if err != nil {
				ss.hc.Enqueue(ss.codec.Error(m.ID, wire.CodeBadCursor, truncate(err.Error(), 200)))
				return
			}
			req.Since = &lsn
		}
		// The grant may have been refreshed since the request was
		// checked: check it again, and once more after the subscription
		// is registered, so a refresh racing it cannot miss it (revoke
		// sees it registered, or this sees the new grant).
		g := ss.currentGrant()
		if ok, what := g.allowsRequest(m); !ok {
			ss.hc.Enqueue(ss.codec.Error(m.ID, wire.CodeForbidden, "the token does not cover "+strconv.Quote(truncate(what, 100))))
			return
		}
		req.Registered = func() {
			if g2 := ss.currentGrant(); g2 != g {
				ss.revoke(g2)
			}
		}
		if _, err := ss.hc.Subscribe(ctx, req); err != nil {
			var he *hub.Error
			if errors.As(err, &he) {
				if he.Code == hub.CodeInternal {
					s.logger.Error("api: subscribe failed", "err", err)
				}
				ss.hc.Enqueue(ss.codec.Error(m.ID, he.Code, he.Msg))
				if he.Code == hub.CodeInternal && s.store.now() != nil {
					// The store is gone: the client reconnects with
					// backoff, through a load balancer to a node that
					// has one, and resumes from its cursor.
					ss.hc.Close(CloseInternal, "store unavailable")
				}
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
			s.m.closes.WithLabelValues(strconv.Itoa(code)).Inc()
			_ = ss.writeFrame(ws.OpClose, ws.NewCloseFrameBody(ws.StatusCode(code), reason))
			// Give the peer a moment to answer the close, then drop it.
			ss.mu.Lock()
			if ss.grace == nil {
				ss.grace = time.AfterFunc(closeGrace, ss.closeRead)
			}
			ss.mu.Unlock()
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
	if ss.pingDue.Swap(false) {
		if err := ss.writeFrame(ws.OpPing, nil); err != nil {
			ss.failed()
			return false
		}
	}
	ss.mu.Lock()
	pong, due := ss.pong, ss.pongDue
	ss.pong, ss.pongDue = nil, false
	ss.mu.Unlock()
	if due {
		if err := ss.writeFrame(ws.OpPong, pong); err != nil {
			ss.failed()
			return false
		}
	}
	return true
}

// onPing answers a client's ping through the drain, so the reader does not
// write.
func (ss *session) onPing(payload []byte) {
	ss.mu.Lock()
	ss.pong, ss.pongDue = payload, true // only the latest ping needs an answer (RFC 6455 5.5.3)
	ss.mu.Unlock()
	ss.hc.Poke()
}

// failed ends a session whose socket failed a write: the close cannot be
// sent, and the read side is shut down, which ends the session.
func (ss *session) failed() {
	ss.hc.Close(CloseGoingAway, "write failed")
	ss.closeRead()
}

// writeFrame writes one frame, in one system call, given at least half of
// WriteTimeout (armWrite).
func (ss *session) writeFrame(op ws.OpCode, p []byte) error {
	var hdr [ws.MaxHeaderSize]byte
	bufs := net.Buffers{hdr[:putHeader(hdr[:], op, len(p))], p}
	ss.armWrite()
	_, err := bufs.WriteTo(ss.conn)
	return err
}

// armWrite gives the next write at least half of WriteTimeout. The
// deadline is renewed only when less than that is left, which spares a
// timer reset per write when a session writes often.
func (ss *session) armWrite() {
	now, wt := time.Now(), ss.srv.cfg.WriteTimeout
	if ss.writeBy.Sub(now) < wt/2 {
		ss.writeBy = now.Add(wt)
		_ = ss.conn.SetWriteDeadline(ss.writeBy)
	}
}

// maxWriteBatch bounds the bytes one system call writes, so a long queue
// notices a close between calls, and each call has its write deadline.
const maxWriteBatch = 256 << 10

// batch is a drain's scratch for one system call's frames.
type batch struct {
	hdr  []byte
	bufs net.Buffers
}

var batches = sync.Pool{New: func() any { return new(batch) }}

// write writes a batch of frames, joining runs of delta frames, a system
// call per maxWriteBatch bytes, each given at least half of WriteTimeout
// (armWrite), with one metrics
// update for the batch. A closed connection stops the batch (its queue is
// dropped). False means the socket failed.
func (ss *session) write(fs []hub.Frame) bool {
	if len(fs) == 0 {
		return true
	}
	s := ss.srv
	op := ws.OpText
	if ss.codec.Binary() {
		op = ws.OpBinary
	}
	var frames, bytes int
	defer func() {
		if frames > 0 {
			s.m.written.Add(float64(frames))
			s.m.writtenBytes.Add(float64(bytes))
		}
	}()
	b := batches.Get().(*batch)
	defer func() {
		clear(b.bufs[:cap(b.bufs)])
		b.bufs = b.bufs[:0]
		batches.Put(b)
	}()
	for i := 0; i < len(fs); {
		if i > 0 {
			select {
			case <-ss.hc.Done():
				return true
			default:
			}
		}
		// Headers are sliced out of b.hdr, so it must not grow while the
		// call's frames refer to it: room for a header per frame.
		if need := ws.MaxHeaderSize * (len(fs) - i); cap(b.hdr) < need {
			b.hdr = make([]byte, 0, need)
		}
		hdr, bufs, size := b.hdr[:0], b.bufs[:0], 0
		for i < len(fs) && size < maxWriteBatch {
			var f []byte
			f, i = joinDeltas(ss.codec, fs, i)
			n := len(hdr)
			hdr = hdr[:n+putHeader(hdr[n:n+ws.MaxHeaderSize], op, len(f))]
			bufs = append(bufs, hdr[n:], f)
			size += len(f)
			frames++
			bytes += len(f)
		}
		b.bufs = bufs[:0] // WriteTo consumes the slice header it is given
		ss.armWrite()
		if _, err := bufs.WriteTo(ss.conn); err != nil {
			ss.failed()
			return false
		}
	}
	return true
}

// putHeader writes the header of an unmasked, final frame of n payload
// bytes into b (at least ws.MaxHeaderSize long) and returns its length.
func putHeader(b []byte, op ws.OpCode, n int) int {
	b[0] = 0x80 | byte(op)
	switch {
	case n < 126:
		b[1] = byte(n)
		return 2
	case n <= 0xffff:
		b[1] = 126
		binary.BigEndian.PutUint16(b[2:], uint16(n))
		return 4
	default:
		b[1] = 127
		binary.BigEndian.PutUint64(b[2:], uint64(n))
		return 10
	}
}
