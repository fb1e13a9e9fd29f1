package api

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/hub"
)

// writeBuffers is shared by every connection's writes.
var writeBuffers sync.Pool

// serveWS upgrades GET /v1/stream and runs the session on this goroutine
// (the reader); a writer goroutine drains the hub queue and a worker
// goroutine runs subscribes, so a catch-up that waits for the client never
// stops the reader from answering pings and hellos.
func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	up := websocket.Upgrader{
		// Client messages are small; write buffers are borrowed from a
		// shared pool only while a frame is written, so an idle
		// connection holds none.
		ReadBufferSize:    1024,
		WriteBufferSize:   4096,
		WriteBufferPool:   &writeBuffers,
		Subprotocols:      []string{wire.SubprotocolJSON, wire.SubprotocolProto},
		CheckOrigin:       func(*http.Request) bool { return true }, // refused below with 1008
		EnableCompression: false,
		Error: func(w http.ResponseWriter, _ *http.Request, status int, reason error) {
			writeError(w, status, wire.CodeBadRequest, "websocket upgrade: "+reason.Error())
		},
	}
	ws, err := up.Upgrade(w, r, nil)
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
	defer s.sessions.Done()
	if n := s.nconns.Add(1); n > int64(s.cfg.MaxConnections) {
		s.nconns.Add(-1)
		reject(CloseTooManyConnections, "too many connections")
		return
	}
	defer s.nconns.Add(-1)
	if !s.originAllowed(r) {
		s.logger.Info("api: websocket origin refused", "origin", r.Header.Get("Origin"))
		reject(ClosePolicy, "origin not allowed")
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
			return
		}
		grant = g
	} else if s.auth.Insecure() {
		// auth.insecure: no token is needed, so none is awaited; welcome at
		// once (a hello that comes anyway is taken as a refresh).
		grant = &Grant{All: true}
	}
	sess := &session{srv: s, ws: ws, codec: s.codecs[codecIdx], hc: s.hub.Connect(codecIdx),
		reqs: make(chan wire.ClientMessage, 4)}
	s.m.sessions.Inc()
	defer s.m.sessions.Dec()
	sess.run(r.Context(), grant)
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

// session is one WebSocket connection.
type session struct {
	srv   *Server
	ws    *websocket.Conn
	codec wire.Codec
	hc    *hub.Conn
	reqs  chan wire.ClientMessage // reader -> worker: subscribe and unsubscribe

	mu      sync.Mutex
	grant   *Grant      // guarded by mu; nil until authenticated
	expiry  *time.Timer // guarded by mu
	welcome bool        // guarded by mu
}

func (ss *session) run(ctx context.Context, grant *Grant) {
	s := ss.srv
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); ss.writer() }()
	go func() { defer wg.Done(); ss.worker(ctx) }()
	defer func() {
		ss.hc.Close(CloseGoingAway, "peer gone")
		cancel()
		close(ss.reqs)
		wg.Wait()
		ss.mu.Lock()
		if ss.expiry != nil {
			ss.expiry.Stop()
		}
		ss.mu.Unlock()
		s.hub.Disconnect(ss.hc)
		_ = ss.ws.Close()
	}()
	if grant != nil {
		if !ss.authenticated(ctx, grant) {
			return
		}
	} else {
		hello := time.AfterFunc(s.cfg.HelloTimeout, func() {
			ss.mu.Lock()
			authed := ss.grant != nil
			ss.mu.Unlock()
			if !authed {
				s.m.authFailures.WithLabelValues("no_hello").Inc()
				ss.hc.Close(CloseUnauthenticated, "no hello with a valid token in time")
			}
		})
		defer hello.Stop()
	}
	ss.ws.SetReadLimit(s.cfg.MaxFrameBytes)
	_ = ss.ws.SetReadDeadline(time.Now().Add(s.cfg.PongTimeout))
	ss.ws.SetPongHandler(func(string) error {
		return ss.ws.SetReadDeadline(time.Now().Add(s.cfg.PongTimeout))
	})
	for {
		_, b, err := ss.ws.ReadMessage()
		if err != nil {
			if errors.Is(err, websocket.ErrReadLimit) {
				// gorilla has sent close 1009 already.
				s.m.closes.WithLabelValues(strconv.Itoa(CloseTooBig)).Inc()
				ss.hc.Close(CloseTooBig, "frame too large")
			}
			return
		}
		_ = ss.ws.SetReadDeadline(time.Now().Add(s.cfg.PongTimeout))
		if !ss.handle(ctx, b) {
			return
		}
	}
}

// handle acts on one client frame; false ends the session.
func (ss *session) handle(ctx context.Context, b []byte) bool {
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
		return ss.authenticated(ctx, g)
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
	select {
	case ss.reqs <- m:
	case <-ss.hc.Done():
	}
	return true
}

// authenticated installs a verified grant (the first, or a refresh), arms
// the expiry and, the first time, sends welcome.
func (ss *session) authenticated(ctx context.Context, g *Grant) bool {
	s := ss.srv
	ss.mu.Lock()
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
	first := !ss.welcome
	ss.welcome = true
	ss.mu.Unlock()
	if !first {
		return true
	}
	epoch, head, err := s.hub.Ready(ctx)
	if err != nil {
		s.logger.Error("api: cannot welcome a client: store unavailable", "err", err)
		ss.hc.Close(CloseInternal, "store unavailable")
		return false
	}
	ss.hc.Enqueue(ss.codec.Welcome(epoch, head, s.cfg.Heartbeat, "repstream/"+s.version))
	return true
}

// worker runs subscribes and unsubscribes in order.
func (ss *session) worker(ctx context.Context) {
	s := ss.srv
	for m := range ss.reqs {
		if ctx.Err() != nil {
			continue // drain
		}
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
					continue
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
}

// writer drains the hub queue to the socket, pings, and closes the socket
// with the hub connection's close code.
func (ss *session) writer() {
	s := ss.srv
	mt := websocket.TextMessage
	if ss.codec.Binary() {
		mt = websocket.BinaryMessage
	}
	ping := time.NewTicker(s.cfg.Heartbeat)
	defer ping.Stop()
	for {
		select {
		case <-ss.hc.Wake():
			for _, f := range ss.hc.Pop() {
				_ = ss.ws.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
				if err := ss.ws.WriteMessage(mt, f); err != nil {
					ss.hc.Close(CloseGoingAway, "write failed")
					_ = ss.ws.NetConn().Close()
					return
				}
				s.m.written.Inc()
				s.m.writtenBytes.Add(float64(len(f)))
			}
		case <-ping.C:
			if err := ss.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(s.cfg.WriteTimeout)); err != nil {
				ss.hc.Close(CloseGoingAway, "ping failed")
			}
		case <-ss.hc.Done():
			_, code, reason := ss.hc.Closed()
			if code != CloseTooBig { // gorilla sent that one
				s.m.closes.WithLabelValues(strconv.Itoa(code)).Inc()
				_ = ss.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(s.cfg.WriteTimeout))
			}
			// Give the peer a moment to answer the close, then drop it.
			_ = ss.ws.NetConn().SetReadDeadline(time.Now().Add(time.Second))
			return
		}
	}
}
