// Package client is the Go client of the repstream stream (PROTOCOL.md). It
// keeps one subscription alive across disconnects: it reconnects with
// exponential backoff and full jitter, resumes from the greatest LSN it has
// applied, resets when the server's epoch changes or a snapshot is marked
// reset, applies each delta at most once (only above the LSN of the state it
// holds), and refreshes its token with hello before it expires.
package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/stream"
)

// Handler receives what the client applies. Calls come from the goroutine
// running Run, in order.
type Handler interface {
	// Reset drops everything held: the epoch changed, or the cursor was
	// too old and a snapshot follows.
	Reset(epoch string)
	// State sets a subject's state from a snapshot.
	State(s stream.State)
	// Delta applies a delta; the client calls it only for a delta above
	// the LSN of the subject's held state.
	Delta(d stream.Delta)
}

// BoardHandler receives a leaderboard (Options.Top): the Handler of a
// board client must implement it. Each call carries the whole top at lsn,
// rank 1 first, and the rank changes since the previous call (Move.From or
// To 0: entered or left the board).
type BoardHandler interface {
	Board(lsn stream.LSN, entries []stream.State, moves []stream.Move)
}

// Options configure New. URL and Handler are required, and one of
// Subjects and Prefix.
type Options struct {
	// URL is the stream endpoint, ws[s]://host/v1/stream.
	URL     string
	Handler Handler
	// Token returns the JWT to present; nil sends none (a server with
	// auth.insecure). It is called at every connect and before the current
	// token expires.
	Token    func(ctx context.Context) (string, error)
	Subjects []string
	Prefix   string
	// Throttle asks the server to coalesce deltas (throttle_ms).
	Throttle time.Duration
	// Top, when positive, follows the leaderboard of Prefix instead of its
	// deltas: its first Top subjects by Order (bayes, mean or count;
	// empty: bayes), sent to the Handler's Board method.
	Top   int
	Order stream.Order
	// Proto selects the protobuf subprotocol instead of JSON.
	Proto bool
	// Epoch and Since resume from a cursor kept from an earlier run.
	Epoch string
	Since stream.LSN
	// MinBackoff and MaxBackoff bound the reconnect delay. Zero means
	// 250ms and 30s.
	MinBackoff, MaxBackoff time.Duration
	// Header is added to the upgrade request (Authorization is set from
	// Token).
	Header http.Header
	// Dialer defaults to websocket.DefaultDialer.
	Dialer *websocket.Dialer
	Logger *slog.Logger
	// Trace, if set, sees every server message before it is applied.
	Trace func(wire.ServerMessage)
}

// TerminalError is a failure that reconnecting cannot fix (a refused
// subscription, a malformed request, a refused origin). Run returns it.
type TerminalError struct {
	Code string // the error message's code, or "close:<code>"
	Msg  string
}

func (e *TerminalError) Error() string { return "repstream client: " + e.Code + ": " + e.Msg }

// Stats counts what the client did.
type Stats struct {
	Connects int // successful connects (welcome received)
	Applied  int // deltas applied
	Ignored  int // deltas at or below the held state's LSN (idempotent apply)
	Resets   int
}

// Client follows one subscription. Create it with New and call Run once.
type Client struct {
	o     Options
	codec wire.Codec
	log   *slog.Logger

	mu     sync.Mutex
	epoch  string     // guarded by mu
	cursor stream.LSN // guarded by mu; 0: none (snapshot)
	// cursorEpoch is the epoch cursor is known to belong to: Options.Epoch
	// for a cursor the user gave, the server's once the cursor was learnt
	// from it; "" when unknown (subscribe then names no epoch).
	cursorEpoch string                // guarded by mu
	held        map[string]stream.LSN // guarded by mu; LSN of each subject's held state
	stats       Stats                 // guarded by mu
}

// New checks the options and returns a client.
func New(o Options) (*Client, error) {
	if o.URL == "" || o.Handler == nil {
		return nil, errors.New("repstream client: URL and Handler are required")
	}
	if (len(o.Subjects) == 0) == (o.Prefix == "") {
		return nil, errors.New("repstream client: give Subjects or Prefix (one of them)")
	}
	if o.Top > 0 || o.Order != "" {
		if o.Prefix == "" || o.Top <= 0 {
			return nil, errors.New("repstream client: a leaderboard needs Prefix and a positive Top")
		}
		if _, ok := o.Handler.(BoardHandler); !ok {
			return nil, errors.New("repstream client: a leaderboard's Handler must implement BoardHandler")
		}
		if o.Order == "" {
			o.Order = stream.OrderBayes
		}
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 250 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 30 * time.Second
	}
	if o.Dialer == nil {
		o.Dialer = websocket.DefaultDialer
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	c := &Client{o: o, codec: wire.JSON{}, log: o.Logger, epoch: o.Epoch, cursor: o.Since, cursorEpoch: o.Epoch, held: map[string]stream.LSN{}}
	if o.Proto {
		c.codec = wire.Proto{}
	}
	return c, nil
}

// Cursor returns the epoch and the resume cursor: the greatest LSN applied
// (or of the snapshot or last tick).
func (c *Client) Cursor() (epoch string, lsn stream.LSN) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.epoch, c.cursor
}

// Stats returns counters.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// Backoff returns the delay before reconnect attempt n (0-based): full
// jitter, uniformly random in [0, min(max, min·2^n)).
func Backoff(n int, minD, maxD time.Duration) time.Duration {
	ceil := maxD
	if n < 32 {
		ceil = min(maxD, minD<<n)
	}
	if ceil <= 0 {
		return 0
	}
	return rand.N(ceil)
}

// Run connects and follows the subscription until ctx is done (then it
// returns nil) or a *TerminalError.
func (c *Client) Run(ctx context.Context) error {
	attempt := 0
	unauth := 0
	for {
		progressed, err := c.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var te *TerminalError
		if errors.As(err, &te) {
			return err
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) && ce.Code == 4001 && !progressed {
			if unauth++; unauth >= 3 {
				return &TerminalError{Code: "close:4001", Msg: ce.Text}
			}
		} else if progressed {
			unauth = 0
		}
		if progressed {
			attempt = 0
		}
		d := Backoff(attempt, c.o.MinBackoff, c.o.MaxBackoff)
		attempt++
		c.log.Debug("repstream client: reconnecting", "err", err, "in", d)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(d):
		}
	}
}

var errRetry = errors.New("resubscribe")

// session runs one connection. progressed reports whether it got as far as
// a subscribed message (the backoff then starts over).
func (c *Client) session(ctx context.Context) (progressed bool, err error) {
	h := http.Header{}
	for k, v := range c.o.Header {
		h[k] = v
	}
	var token string
	if c.o.Token != nil {
		if token, err = c.o.Token(ctx); err != nil {
			return false, fmt.Errorf("token: %w", err)
		}
		h.Set("Authorization", "Bearer "+token)
	}
	d := *c.o.Dialer
	d.Subprotocols = []string{c.codec.Name()}
	ws, resp, err := d.DialContext(ctx, c.o.URL, h)
	if err != nil {
		if resp != nil {
			return false, fmt.Errorf("dial: %w (HTTP %s)", err, resp.Status)
		}
		return false, fmt.Errorf("dial: %w", err)
	}
	defer ws.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		<-sctx.Done()
		// Close, not a read deadline: the loop sets a new deadline before
		// every read, which would undo one set here while frames keep coming.
		_ = ws.NetConn().Close()
	}()
	var wmu sync.Mutex
	send := func(m wire.ClientMessage) error {
		b, err := c.codec.EncodeClient(m)
		if err != nil {
			return err
		}
		mt := websocket.TextMessage
		if c.codec.Binary() {
			mt = websocket.BinaryMessage
		}
		wmu.Lock()
		defer wmu.Unlock()
		_ = ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
		return ws.WriteMessage(mt, b)
	}
	if c.o.Token == nil {
		// No token: say hello anyway, so a server with auth.insecure need not
		// wait out its hello timeout before serving us.
		if err := send(wire.ClientMessage{Type: wire.TypeHello}); err != nil {
			return false, fmt.Errorf("hello: %w", err)
		}
	}
	refresh := c.scheduleRefresh(sctx, token, send)
	defer refresh.Stop()

	readTimeout := 45 * time.Second
	const subID = 1
	for {
		_ = ws.SetReadDeadline(time.Now().Add(readTimeout))
		_, b, err := ws.ReadMessage()
		if err != nil {
			return progressed, err
		}
		m, err := c.codec.DecodeServer(b)
		if err != nil {
			return progressed, err
		}
		if c.o.Trace != nil {
			c.o.Trace(m)
		}
		switch m.Type {
		case wire.TypeWelcome:
			if m.HeartbeatMs > 0 {
				readTimeout = 2*time.Duration(m.HeartbeatMs)*time.Millisecond + 10*time.Second
			}
			c.mu.Lock()
			if c.epoch != "" && c.epoch != m.Epoch {
				c.resetLocked(m.Epoch)
			}
			c.epoch = m.Epoch
			c.stats.Connects++
			sub := wire.ClientMessage{Type: wire.TypeSubscribe, ID: subID, Subjects: c.o.Subjects, Prefix: c.o.Prefix,
				ThrottleMs: c.o.Throttle.Milliseconds(), Top: int64(c.o.Top), Order: string(c.o.Order)}
			if c.cursor > 0 {
				sub.Since, sub.HasSince, sub.Epoch = c.cursor.String(), true, c.cursorEpoch
			}
			c.mu.Unlock()
			if err := send(sub); err != nil {
				return progressed, err
			}
		case wire.TypeSubscribed:
			progressed = true
			if m.Reset {
				c.mu.Lock()
				c.resetLocked(c.epoch)
				c.mu.Unlock()
			}
		case wire.TypeSnapshot:
			c.mu.Lock()
			for _, s := range m.States {
				if s.LSN > c.held[s.Subject] || c.held[s.Subject] == 0 {
					c.held[s.Subject] = s.LSN
					c.o.Handler.State(s)
				}
			}
			if !m.More {
				c.cursor = max(c.cursor, m.LSN)
				c.cursorEpoch = c.epoch
			}
			c.mu.Unlock()
		case wire.TypeDelta, wire.TypeDeltas:
			c.mu.Lock()
			for _, d := range m.Deltas {
				if d.LSN <= c.held[d.Subject] {
					c.stats.Ignored++
					continue
				}
				c.held[d.Subject] = d.LSN
				c.stats.Applied++
				c.o.Handler.Delta(d)
				c.cursor = max(c.cursor, d.LSN)
				c.cursorEpoch = c.epoch
			}
			c.mu.Unlock()
		case wire.TypeBoard:
			if m.ID == subID {
				c.mu.Lock()
				c.o.Handler.(BoardHandler).Board(m.LSN, m.States, m.Moves)
				c.cursor = max(c.cursor, m.LSN)
				c.cursorEpoch = c.epoch
				c.mu.Unlock()
			}
		case wire.TypeCaughtUp:
			if m.ID == subID { // everything the subscription was owed up to m.LSN came
				c.mu.Lock()
				c.cursor = max(c.cursor, m.LSN)
				c.cursorEpoch = c.epoch
				c.mu.Unlock()
			}
		case wire.TypeTick:
			if progressed {
				c.mu.Lock()
				c.cursor = max(c.cursor, m.LSN)
				c.cursorEpoch = c.epoch
				c.mu.Unlock()
			}
		case wire.TypeError:
			switch m.Code {
			case wire.CodeBadCursor:
				// Malformed or ahead of the server: start over from a snapshot.
				c.mu.Lock()
				c.resetLocked(c.epoch)
				c.mu.Unlock()
				return progressed, errRetry
			case wire.CodeUnauthenticated:
				// A failed refresh; the server closes with 4001 at expiry.
				c.log.Warn("repstream client: token refresh refused", "message", m.Message)
			case wire.CodeInternal:
				return progressed, fmt.Errorf("server: %s", m.Message)
			default:
				if m.ID == subID {
					return progressed, &TerminalError{Code: m.Code, Msg: m.Message}
				}
			}
		}
	}
}

// resetLocked forgets the held states and the cursor.
func (c *Client) resetLocked(epoch string) {
	c.cursor, c.cursorEpoch = 0, ""
	clear(c.held)
	c.stats.Resets++
	c.o.Handler.Reset(epoch)
}

// scheduleRefresh sends hello with a fresh token before the current one
// expires (at 80% of its remaining life, at least 1s before exp).
func (c *Client) scheduleRefresh(ctx context.Context, token string, send func(wire.ClientMessage) error) *time.Timer {
	var t *time.Timer
	arm := func(tok string) {
		var claims jwt.RegisteredClaims
		if _, _, err := jwt.NewParser().ParseUnverified(tok, &claims); err != nil || claims.ExpiresAt == nil {
			return
		}
		left := time.Until(claims.ExpiresAt.Time)
		t.Reset(max(min(left*4/5, left-time.Second), 0))
	}
	t = time.AfterFunc(time.Hour, func() {
		if ctx.Err() != nil {
			return
		}
		tok, err := c.o.Token(ctx)
		if err != nil {
			c.log.Warn("repstream client: token refresh failed", "err", err)
			return
		}
		if err := send(wire.ClientMessage{Type: wire.TypeHello, Token: tok}); err == nil {
			arm(tok)
		}
	})
	t.Stop()
	if c.o.Token != nil && token != "" {
		arm(token)
	}
	return t
}
