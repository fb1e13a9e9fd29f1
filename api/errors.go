package api

import (
	"encoding/json"
	"net/http"

	"github.com/repstream/repstream/api/wire"
)

// WebSocket close codes (PROTOCOL.md). 1xxx are RFC 6455's; 4xxx are
// repstream's. Clients reconnect with backoff after 1001, 1011, 4008 and
// 4029, refresh their token after 4001, and treat the others as bugs or
// configuration errors.
const (
	CloseGoingAway          = 1001 // server shutting down, draining, or epoch changed
	CloseProtocolError      = 1002 // a frame that breaks RFC 6455 (unmasked, bad opcode, bad fragments)
	ClosePolicy             = 1008 // origin refused
	CloseTooBig             = 1009 // frame larger than max_frame_bytes
	CloseInternal           = 1011 // the server cannot serve (store unavailable)
	CloseMalformed          = 4000 // a frame that is not a message
	CloseUnauthenticated    = 4001 // no valid token in time, or it expired
	CloseSlowConsumer       = 4008 // fell too far behind: reconnect and resume
	CloseTooManyConnections = 4029 // max_connections reached
)

// httpError is the body of every HTTP error: {"code","message"}.
type httpError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="repstream"`)
	}
	writeJSON(w, status, httpError{Code: code, Message: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(httpError{Code: wire.CodeInternal, Message: "unencodable response"})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
