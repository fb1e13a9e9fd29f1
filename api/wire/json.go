package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/repstream/repstream/stream"
)

// JSON is the "repstream.v1.json" subprotocol: one JSON object per text
// frame.
type JSON struct{}

var _ Codec = JSON{}

// Name implements Codec.
func (JSON) Name() string { return SubprotocolJSON }

// Binary implements Codec.
func (JSON) Binary() bool { return false }

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Only NaN or Inf in a state could fail; send an error instead of
		// a corrupt frame.
		b, _ = json.Marshal(errorJSON{Type: TypeError, Code: CodeInternal, Message: "unencodable message: " + err.Error()})
	}
	return b
}

// Delta implements Codec.
func (JSON) Delta(d *stream.Delta) []byte {
	if b, ok := d.AppendJSON(make([]byte, 0, 384)); ok {
		return b
	}
	return mustJSON(d)
}

// Deltas implements Codec.
func (JSON) Deltas(frames [][]byte) []byte {
	n := 32
	for _, f := range frames {
		n += len(f) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, `{"type":"deltas","items":[`...)
	for i, f := range frames {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, f...)
	}
	return append(b, "]}"...)
}

type subscribedJSON struct {
	Type  string `json:"type"`
	ID    int64  `json:"id"`
	LSN   string `json:"lsn"`
	Mode  string `json:"mode"`
	Reset bool   `json:"reset"`
}

// Subscribed implements Codec.
func (JSON) Subscribed(id int64, h stream.LSN, mode string, reset bool) []byte {
	return mustJSON(subscribedJSON{TypeSubscribed, id, h.String(), mode, reset})
}

type snapshotJSON struct {
	Type   string         `json:"type"`
	ID     int64          `json:"id"`
	LSN    string         `json:"lsn"`
	States []stream.State `json:"states"`
	More   bool           `json:"more,omitempty"`
}

// Snapshot implements Codec.
func (JSON) Snapshot(id int64, h stream.LSN, states []stream.State, more bool) []byte {
	if states == nil {
		states = []stream.State{}
	}
	return mustJSON(snapshotJSON{TypeSnapshot, id, h.String(), states, more})
}

type lsnJSON struct {
	Type string `json:"type"`
	LSN  string `json:"lsn"`
}

// Tick implements Codec.
func (JSON) Tick(head stream.LSN) []byte { return mustJSON(lsnJSON{TypeTick, head.String()}) }

type welcomeJSON struct {
	Type        string `json:"type"`
	Epoch       string `json:"epoch"`
	LSN         string `json:"lsn"`
	HeartbeatMs int64  `json:"heartbeat_ms"`
	Server      string `json:"server"`
}

// Welcome implements Codec.
func (JSON) Welcome(epoch string, head stream.LSN, heartbeat time.Duration, server string) []byte {
	return mustJSON(welcomeJSON{TypeWelcome, epoch, head.String(), heartbeat.Milliseconds(), server})
}

type idJSON struct {
	Type string `json:"type"`
	ID   int64  `json:"id"`
}

// Pong implements Codec.
func (JSON) Pong(id int64) []byte { return mustJSON(idJSON{TypePong, id}) }

type caughtUpJSON struct {
	Type string `json:"type"`
	ID   int64  `json:"id"`
	LSN  string `json:"lsn"`
}

// CaughtUp implements hub.Codec.
func (JSON) CaughtUp(id int64, lsn stream.LSN) []byte {
	return mustJSON(caughtUpJSON{TypeCaughtUp, id, lsn.String()})
}

// Unsubscribed implements Codec.
func (JSON) Unsubscribed(id int64) []byte { return mustJSON(idJSON{TypeUnsubscribed, id}) }

type errorJSON struct {
	Type    string `json:"type"`
	ID      int64  `json:"id"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Error implements Codec.
func (JSON) Error(id int64, code, msg string) []byte {
	return mustJSON(errorJSON{TypeError, id, code, msg})
}

type boardJSON struct {
	Type    string            `json:"type"`
	ID      int64             `json:"id"`
	LSN     string            `json:"lsn"`
	Order   string            `json:"order"`
	Entries []json.RawMessage `json:"entries"`
	Moves   []moveJSON        `json:"moves"`
}

type moveJSON struct {
	Subject string `json:"subject"`
	From    *int   `json:"from"` // null: entered the board
	To      *int   `json:"to"`   // null: left it
}

func rankPtr(r int) *int {
	if r <= 0 {
		return nil
	}
	return &r
}

// Board implements hub.Codec. Each entry is the subject's state with its
// rank: {"rank":1,"subject":...}.
func (JSON) Board(id int64, lsn stream.LSN, order string, entries []stream.State, moves []stream.Move) []byte {
	w := boardJSON{Type: TypeBoard, ID: id, LSN: lsn.String(), Order: order,
		Entries: make([]json.RawMessage, len(entries)), Moves: make([]moveJSON, len(moves))}
	for i := range entries {
		b, err := json.Marshal(&entries[i])
		if err != nil || len(b) < 2 {
			return mustJSON(errorJSON{Type: TypeError, ID: id, Code: CodeInternal, Message: "unencodable board entry"})
		}
		e := fmt.Appendf(make([]byte, 0, len(b)+16), `{"rank":%d`, i+1)
		if len(b) > 2 {
			e = append(e, ',')
		}
		w.Entries[i] = append(e, b[1:]...)
	}
	for i, m := range moves {
		w.Moves[i] = moveJSON{m.Subject, rankPtr(m.From), rankPtr(m.To)}
	}
	return mustJSON(w)
}

type clientJSON struct {
	Type       string   `json:"type"`
	ID         int64    `json:"id"`
	Token      string   `json:"token"`
	Subjects   []string `json:"subjects"`
	Prefix     string   `json:"prefix"`
	Since      *string  `json:"since"`
	ThrottleMs int64    `json:"throttle_ms"`
	Epoch      string   `json:"epoch,omitempty"`
	Top        int64    `json:"top,omitempty"`
	Order      string   `json:"order,omitempty"`
}

// DecodeClient implements Codec. A frame that is not a JSON object is
// ErrMalformed; a JSON object with wrong field types or an unknown type is
// a *RequestError.
func (JSON) DecodeClient(b []byte) (ClientMessage, error) {
	t := bytes.TrimLeft(b, " \t\r\n")
	if len(t) == 0 || t[0] != '{' || !json.Valid(b) {
		return ClientMessage{}, fmt.Errorf("%w: not a JSON object", ErrMalformed)
	}
	var w clientJSON
	if err := json.Unmarshal(b, &w); err != nil {
		var id struct {
			ID int64 `json:"id"`
		}
		_ = json.Unmarshal(b, &id)
		return ClientMessage{}, &RequestError{ID: id.ID, Msg: err.Error()}
	}
	m := ClientMessage{Type: w.Type, ID: w.ID, Token: w.Token, Subjects: w.Subjects, Prefix: w.Prefix,
		ThrottleMs: w.ThrottleMs, Epoch: w.Epoch, Top: w.Top, Order: w.Order}
	if w.Since != nil {
		m.Since, m.HasSince = *w.Since, true
	}
	return m, validate(m)
}

// EncodeClient implements Codec.
func (JSON) EncodeClient(m ClientMessage) ([]byte, error) {
	w := clientJSON{Type: m.Type, ID: m.ID, Token: m.Token, Subjects: m.Subjects, Prefix: m.Prefix,
		ThrottleMs: m.ThrottleMs, Epoch: m.Epoch, Top: m.Top, Order: m.Order}
	if m.HasSince {
		w.Since = &m.Since
	}
	return json.Marshal(w)
}

type serverJSON struct {
	Type        string            `json:"type"`
	ID          int64             `json:"id"`
	Epoch       string            `json:"epoch"`
	LSN         string            `json:"lsn"`
	HeartbeatMs int64             `json:"heartbeat_ms"`
	Server      string            `json:"server"`
	Mode        string            `json:"mode"`
	Reset       bool              `json:"reset"`
	States      []stream.State    `json:"states"`
	More        bool              `json:"more"`
	Items       []json.RawMessage `json:"items"`
	Code        string            `json:"code"`
	Message     string            `json:"message"`
	Order       string            `json:"order"`
	Entries     []stream.State    `json:"entries"`
	Moves       []moveJSON        `json:"moves"`
}

// DecodeServer implements Codec.
func (JSON) DecodeServer(b []byte) (ServerMessage, error) {
	var w serverJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return ServerMessage{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	m := ServerMessage{Type: w.Type, ID: w.ID, Epoch: w.Epoch, HeartbeatMs: w.HeartbeatMs, Server: w.Server,
		Mode: w.Mode, Reset: w.Reset, States: w.States, More: w.More, Code: w.Code, Message: w.Message}
	switch w.Type {
	case TypeBoard:
		lsn, err := stream.ParseLSN(w.LSN)
		if err != nil {
			return ServerMessage{}, fmt.Errorf("%w: board lsn: %v", ErrMalformed, err)
		}
		m.LSN, m.Order, m.States = lsn, w.Order, w.Entries
		if m.States == nil {
			m.States = []stream.State{}
		}
		m.Moves = make([]stream.Move, len(w.Moves))
		for i, mv := range w.Moves {
			m.Moves[i].Subject = mv.Subject
			if mv.From != nil {
				m.Moves[i].From = *mv.From
			}
			if mv.To != nil {
				m.Moves[i].To = *mv.To
			}
		}
	case TypeWelcome, TypeSubscribed, TypeSnapshot, TypeTick, TypeCaughtUp:
		lsn, err := stream.ParseLSN(w.LSN)
		if err != nil {
			return ServerMessage{}, fmt.Errorf("%w: %s lsn: %v", ErrMalformed, w.Type, err)
		}
		m.LSN = lsn
	case TypeDelta:
		var d stream.Delta
		if err := json.Unmarshal(b, &d); err != nil {
			return ServerMessage{}, fmt.Errorf("%w: delta: %v", ErrMalformed, err)
		}
		m.Deltas = []stream.Delta{d}
	case TypeDeltas:
		m.Deltas = make([]stream.Delta, len(w.Items))
		for i, raw := range w.Items {
			if err := json.Unmarshal(raw, &m.Deltas[i]); err != nil {
				return ServerMessage{}, fmt.Errorf("%w: deltas item %d: %v", ErrMalformed, i, err)
			}
		}
	}
	return m, nil
}
