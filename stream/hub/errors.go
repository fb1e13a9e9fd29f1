package hub

import "errors"

// Error codes of the protocol's error message that the hub produces.
const (
	CodeBadRequest           = "bad_request"
	CodeBadCursor            = "bad_cursor"
	CodeTooManySubscriptions = "too_many_subscriptions"
	CodeInternal             = "internal"
)

// Close codes the hub closes connections with (PROTOCOL.md).
const (
	CloseGoingAway    = 1001 // shutting down, draining or epoch changed: reconnect with backoff
	CloseSlowConsumer = 4008 // the client fell too far behind: reconnect and resume
)

// Error is a failed request. Code is one of the protocol's error codes;
// callers answer with it and keep the connection.
type Error struct {
	Code string
	Msg  string
	Err  error // cause, not shown to clients
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Code + ": " + e.Msg + ": " + e.Err.Error()
	}
	return e.Code + ": " + e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// ErrClosed is returned by operations on a closed connection.
var ErrClosed = errors.New("hub: connection closed")

func errf(code, msg string, cause error) *Error { return &Error{Code: code, Msg: msg, Err: cause} }
