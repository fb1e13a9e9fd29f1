// Package wire holds the messages of the repstream WebSocket protocol
// (PROTOCOL.md) and their two encodings, the subprotocols
// "repstream.v1.json" and "repstream.v1.proto". The server (package api) and
// the Go client (package api/client) share it.
//
// Decoders take untrusted bytes and never panic; FuzzDecode* check that.
package wire

import (
	"errors"
	"fmt"
	"time"

	"github.com/repstream/repstream/stream"
)

// Subprotocols, in the server's order of preference.
const (
	SubprotocolJSON  = "repstream.v1.json"
	SubprotocolProto = "repstream.v1.proto"
)

// Message types.
const (
	TypeHello        = "hello"
	TypeSubscribe    = "subscribe"
	TypeUnsubscribe  = "unsubscribe"
	TypePing         = "ping"
	TypeWelcome      = "welcome"
	TypeSubscribed   = "subscribed"
	TypeUnsubscribed = "unsubscribed"
	TypeSnapshot     = "snapshot"
	TypeDelta        = "delta"
	TypeDeltas       = "deltas"
	TypeTick         = "tick"
	TypePong         = "pong"
	TypeError        = "error"
	TypeCaughtUp     = "caught_up"
	TypeBoard        = "board"
)

// Error codes of the error message and of HTTP error bodies.
const (
	CodeBadRequest           = "bad_request"
	CodeUnauthenticated      = "unauthenticated"
	CodeForbidden            = "forbidden"
	CodeBadCursor            = "bad_cursor"
	CodeTooManySubscriptions = "too_many_subscriptions"
	CodeNotFound             = "not_found"
	CodeInternal             = "internal"
	CodeUnavailable          = "unavailable"
)

// ClientMessage is a message from client to server.
type ClientMessage struct {
	Type     string
	ID       int64
	Token    string   // hello
	Subjects []string // subscribe, unsubscribe
	Prefix   string   // subscribe, unsubscribe
	// Since is the cursor in pg_lsn text form; HasSince tells an absent
	// since from an empty one.
	Since      string
	HasSince   bool
	ThrottleMs int64
	// Epoch optionally names the epoch of Since (an addition to
	// PROTOCOL.md): a cursor of another epoch gets a snapshot with reset.
	Epoch string
	// Top > 0 makes a subscribe a leaderboard of Prefix (an addition to
	// PROTOCOL.md): its first Top subjects by Order.
	Top   int64
	Order string
}

// ServerMessage is a message from server to client.
type ServerMessage struct {
	Type        string
	ID          int64
	Epoch       string         // welcome
	LSN         stream.LSN     // welcome (head), subscribed and snapshot (H), tick, caught_up
	HeartbeatMs int64          // welcome
	Server      string         // welcome
	Mode        string         // subscribed
	Reset       bool           // subscribed
	States      []stream.State // snapshot
	More        bool           // snapshot: more chunks follow
	Deltas      []stream.Delta // delta (one) and deltas
	Code        string         // error
	Message     string         // error
	Order       string         // board
	Moves       []stream.Move  // board; its entries are States, States[i] of rank i+1
}

// ErrMalformed means a frame is not a message at all (not JSON, not
// protobuf): the server closes the connection with 4000.
var ErrMalformed = errors.New("malformed message")

// RequestError means a frame is a message the server cannot act on (an
// unknown type, a missing field): the server answers with an error message
// of code bad_request and keeps the connection.
type RequestError struct {
	ID  int64
	Msg string
}

func (e *RequestError) Error() string { return "bad request: " + e.Msg }

// Codec is one subprotocol: the server messages it encodes (including the
// ones the hub encodes, see hub.Codec) and the client messages it decodes,
// and the reverse for clients.
type Codec interface {
	// Name is the subprotocol.
	Name() string
	// Binary tells whether frames are binary (else text).
	Binary() bool

	// Server side.
	Delta(d *stream.Delta) []byte
	Deltas(frames [][]byte) []byte
	Subscribed(id int64, h stream.LSN, mode string, reset bool) []byte
	Snapshot(id int64, h stream.LSN, states []stream.State, more bool) []byte
	Tick(head stream.LSN) []byte
	CaughtUp(id int64, lsn stream.LSN) []byte
	Welcome(epoch string, head stream.LSN, heartbeat time.Duration, server string) []byte
	Pong(id int64) []byte
	Error(id int64, code, msg string) []byte
	Unsubscribed(id int64) []byte
	Board(id int64, lsn stream.LSN, order string, entries []stream.State, moves []stream.Move) []byte
	// DecodeClient returns ErrMalformed (wrapped) or a *RequestError for
	// frames it cannot accept.
	DecodeClient(b []byte) (ClientMessage, error)

	// Client side.
	EncodeClient(m ClientMessage) ([]byte, error)
	DecodeServer(b []byte) (ServerMessage, error)
}

// Codecs returns the supported codecs, JSON first (the default).
func Codecs() []Codec { return []Codec{JSON{}, Proto{}} }

// ByName returns the codec of a subprotocol.
func ByName(name string) (Codec, bool) {
	for _, c := range Codecs() {
		if c.Name() == name {
			return c, true
		}
	}
	return nil, false
}

// validate checks what every codec requires of a decoded client message.
func validate(m ClientMessage) error {
	switch m.Type {
	case TypeHello:
		if m.Token == "" {
			return &RequestError{ID: m.ID, Msg: "hello needs a token"}
		}
	case TypeSubscribe, TypeUnsubscribe:
		if (len(m.Subjects) == 0) == (m.Prefix == "") {
			return &RequestError{ID: m.ID, Msg: m.Type + " needs subjects or a prefix (one of them)"}
		}
		if m.ThrottleMs < 0 {
			return &RequestError{ID: m.ID, Msg: "throttle_ms must not be negative"}
		}
		if m.Top < 0 {
			return &RequestError{ID: m.ID, Msg: "top must not be negative"}
		}
		if (m.Top > 0 || m.Order != "") && m.Prefix == "" {
			return &RequestError{ID: m.ID, Msg: "a leaderboard (top, order) needs a prefix"}
		}
	case TypePing:
	case "":
		return &RequestError{ID: m.ID, Msg: "message without a type"}
	default:
		return &RequestError{ID: m.ID, Msg: fmt.Sprintf("unknown message type %.40q", m.Type)}
	}
	return nil
}
