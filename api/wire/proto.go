package wire

import (
	"fmt"
	"time"

	pb "github.com/repstream/repstream/api/proto"
	"github.com/repstream/repstream/stream"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Proto is the "repstream.v1.proto" subprotocol: one ClientMessage or
// ServerMessage (api/proto/repstream.proto) per binary frame.
type Proto struct{}

var _ Codec = Proto{}

// Field numbers the Deltas frame is assembled from without re-encoding.
const (
	fieldServerDelta  = 4 // ServerMessage.delta
	fieldServerDeltas = 5 // ServerMessage.deltas
	fieldDeltasItems  = 1 // Deltas.items
)

// Name implements Codec.
func (Proto) Name() string { return SubprotocolProto }

// Binary implements Codec.
func (Proto) Binary() bool { return true }

const timeLayout = "2006-01-02T15:04:05.000Z07:00"

func mustProto(m *pb.ServerMessage) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		b, _ = proto.Marshal(&pb.ServerMessage{Msg: &pb.ServerMessage_Error{Error: &pb.Error{Code: CodeInternal, Message: "unencodable message: " + err.Error()}}})
	}
	return b
}

func toPBState(s *stream.State) *pb.State {
	return &pb.State{Subject: s.Subject, Count: s.Count, SumMicro: int64(s.Sum), Mean: s.Mean, Bayes: s.Bayes,
		Hist: s.Hist, Version: s.Version, Lsn: s.LSN.String(), UpdatedAt: s.UpdatedAt.UTC().Format(timeLayout)}
}

func fromPBState(p *pb.State) (stream.State, error) {
	s := stream.State{Subject: p.GetSubject(), Count: p.GetCount(), Sum: stream.Micro(p.GetSumMicro()), Mean: p.GetMean(),
		Bayes: p.GetBayes(), Hist: p.GetHist(), Version: p.GetVersion()}
	lsn, err := stream.ParseLSN(p.GetLsn())
	if err != nil {
		return s, err
	}
	s.LSN = lsn
	if p.GetUpdatedAt() != "" {
		if s.UpdatedAt, err = time.Parse(time.RFC3339Nano, p.GetUpdatedAt()); err != nil {
			return s, err
		}
	}
	return s, nil
}

func toPBDelta(d *stream.Delta) *pb.Delta {
	c := d.Coalesced
	if c < 1 {
		c = 1
	}
	return &pb.Delta{Subject: d.Subject, Lsn: d.LSN.String(), Version: d.Version, After: toPBState(&d.After),
		Change:    &pb.Change{Count: d.Change.Count, SumMicro: int64(d.Change.Sum), Mean: d.Change.Mean, Bayes: d.Change.Bayes},
		Coalesced: int64(c)}
}

func fromPBDelta(p *pb.Delta) (stream.Delta, error) {
	d := stream.Delta{Subject: p.GetSubject(), Version: p.GetVersion(), Coalesced: int(p.GetCoalesced()),
		Change: stream.Change{Count: p.GetChange().GetCount(), Sum: stream.Micro(p.GetChange().GetSumMicro()),
			Mean: p.GetChange().GetMean(), Bayes: p.GetChange().GetBayes()}}
	lsn, err := stream.ParseLSN(p.GetLsn())
	if err != nil {
		return d, err
	}
	d.LSN = lsn
	if p.GetAfter() != nil {
		if d.After, err = fromPBState(p.GetAfter()); err != nil {
			return d, err
		}
	}
	return d, nil
}

// Delta implements Codec.
func (Proto) Delta(d *stream.Delta) []byte {
	return mustProto(&pb.ServerMessage{Msg: &pb.ServerMessage_Delta{Delta: toPBDelta(d)}})
}

// Deltas implements Codec. It splices the Delta messages out of frames
// made by Delta, so each delta is encoded once.
func (Proto) Deltas(frames [][]byte) []byte {
	var inner []byte
	for _, f := range frames {
		num, typ, n := protowire.ConsumeTag(f)
		if n < 0 || num != fieldServerDelta || typ != protowire.BytesType {
			continue // not made by Delta
		}
		v, m := protowire.ConsumeBytes(f[n:])
		if m < 0 {
			continue
		}
		inner = protowire.AppendTag(inner, fieldDeltasItems, protowire.BytesType)
		inner = protowire.AppendBytes(inner, v)
	}
	b := make([]byte, 0, len(inner)+12)
	b = protowire.AppendTag(b, fieldServerDeltas, protowire.BytesType)
	return protowire.AppendBytes(b, inner)
}

// Subscribed implements Codec.
func (Proto) Subscribed(id int64, h stream.LSN, mode string, reset bool) []byte {
	return mustProto(&pb.ServerMessage{Msg: &pb.ServerMessage_Subscribed{Subscribed: &pb.Subscribed{Id: id, Lsn: h.String(), Mode: mode, Reset_: reset}}})
}

// Snapshot implements Codec.
func (Proto) Snapshot(id int64, h stream.LSN, states []stream.State, more bool) []byte {
	ps := make([]*pb.State, len(states))
	for i := range states {
		ps[i] = toPBState(&states[i])
	}
	return mustProto(&pb.ServerMessage{Msg: &pb.ServerMessage_Snapshot{Snapshot: &pb.Snapshot{Id: id, Lsn: h.String(), States: ps, More: more}}})
}

// Board implements hub.Codec.
func (Proto) Board(id int64, lsn stream.LSN, order string, entries []stream.State, moves []stream.Move) []byte {
	b := &pb.Board{Id: id, Lsn: lsn.String(), Order: order, Entries: make([]*pb.State, len(entries)), Moves: make([]*pb.Move, len(moves))}
	for i := range entries {
		b.Entries[i] = toPBState(&entries[i])
	}
	for i, m := range moves {
		b.Moves[i] = &pb.Move{Subject: m.Subject, From: int32(m.From), To: int32(m.To)}
	}
	return mustProto(&pb.ServerMessage{Msg: &pb.ServerMessage_Board{Board: b}})
}

// Tick implements Codec.
func (Proto) Tick(head stream.LSN) []byte {
	return mustProto(&pb.ServerMessage{Msg: &pb.ServerMessage_Tick{Tick: &pb.Tick{Lsn: head.String()}}})
}

// Welcome implements Codec.
func (Proto) Welcome(epoch string, head stream.LSN, heartbeat time.Duration, server string) []byte {
	return mustProto(&pb.ServerMessage{Msg: &pb.ServerMessage_Welcome{Welcome: &pb.Welcome{Epoch: epoch, Lsn: head.String(),
		HeartbeatMs: heartbeat.Milliseconds(), Server: server}}})
}

// Pong implements Codec.
func (Proto) Pong(id int64) []byte {
	return mustProto(&pb.ServerMessage{Msg: &pb.ServerMessage_Pong{Pong: &pb.Pong{Id: id}}})
}

// CaughtUp implements hub.Codec.
func (Proto) CaughtUp(id int64, lsn stream.LSN) []byte {
	return mustProto(&pb.ServerMessage{Msg: &pb.ServerMessage_CaughtUp{CaughtUp: &pb.CaughtUp{Id: id, Lsn: lsn.String()}}})
}

// Unsubscribed implements Codec.
func (Proto) Unsubscribed(id int64) []byte {
	return mustProto(&pb.ServerMessage{Msg: &pb.ServerMessage_Unsubscribed{Unsubscribed: &pb.Unsubscribed{Id: id}}})
}

// Error implements Codec.
func (Proto) Error(id int64, code, msg string) []byte {
	return mustProto(&pb.ServerMessage{Msg: &pb.ServerMessage_Error{Error: &pb.Error{Id: id, Code: code, Message: msg}}})
}

// DecodeClient implements Codec. Bytes that are not a ClientMessage are
// ErrMalformed; a ClientMessage with no (or an unknown) message set is a
// *RequestError.
func (Proto) DecodeClient(b []byte) (ClientMessage, error) {
	var p pb.ClientMessage
	if err := proto.Unmarshal(b, &p); err != nil {
		return ClientMessage{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	var m ClientMessage
	switch x := p.GetMsg().(type) {
	case *pb.ClientMessage_Hello:
		m = ClientMessage{Type: TypeHello, Token: x.Hello.GetToken()}
	case *pb.ClientMessage_Subscribe:
		s := x.Subscribe
		m = ClientMessage{Type: TypeSubscribe, ID: s.GetId(), Subjects: s.GetSubjects(), Prefix: s.GetPrefix(),
			ThrottleMs: s.GetThrottleMs(), Epoch: s.GetEpoch(), Top: int64(s.GetTop()), Order: s.GetOrder()}
		if s.Since != nil {
			m.Since, m.HasSince = s.GetSince(), true
		}
	case *pb.ClientMessage_Unsubscribe:
		u := x.Unsubscribe
		m = ClientMessage{Type: TypeUnsubscribe, ID: u.GetId(), Subjects: u.GetSubjects(), Prefix: u.GetPrefix(),
			Top: int64(u.GetTop()), Order: u.GetOrder()}
	case *pb.ClientMessage_Ping:
		m = ClientMessage{Type: TypePing, ID: x.Ping.GetId()}
	default:
		return ClientMessage{}, &RequestError{Msg: "unknown message type"}
	}
	return m, validate(m)
}

// EncodeClient implements Codec.
func (Proto) EncodeClient(m ClientMessage) ([]byte, error) {
	var p pb.ClientMessage
	switch m.Type {
	case TypeHello:
		p.Msg = &pb.ClientMessage_Hello{Hello: &pb.Hello{Token: m.Token}}
	case TypeSubscribe:
		s := &pb.Subscribe{Id: m.ID, Subjects: m.Subjects, Prefix: m.Prefix, ThrottleMs: m.ThrottleMs, Epoch: m.Epoch,
			Top: int32(min(max(m.Top, -1), 1<<31-1)), Order: m.Order}
		if m.HasSince {
			s.Since = proto.String(m.Since)
		}
		p.Msg = &pb.ClientMessage_Subscribe{Subscribe: s}
	case TypeUnsubscribe:
		p.Msg = &pb.ClientMessage_Unsubscribe{Unsubscribe: &pb.Unsubscribe{Id: m.ID, Subjects: m.Subjects, Prefix: m.Prefix,
			Top: int32(min(max(m.Top, -1), 1<<31-1)), Order: m.Order}}
	case TypePing:
		p.Msg = &pb.ClientMessage_Ping{Ping: &pb.Ping{Id: m.ID}}
	default:
		return nil, fmt.Errorf("wire: proto cannot encode message type %q", m.Type)
	}
	return proto.Marshal(&p)
}

// DecodeServer implements Codec.
func (Proto) DecodeServer(b []byte) (ServerMessage, error) {
	var p pb.ServerMessage
	if err := proto.Unmarshal(b, &p); err != nil {
		return ServerMessage{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	bad := func(what string, err error) (ServerMessage, error) {
		return ServerMessage{}, fmt.Errorf("%w: %s: %v", ErrMalformed, what, err)
	}
	switch x := p.GetMsg().(type) {
	case *pb.ServerMessage_Welcome:
		lsn, err := stream.ParseLSN(x.Welcome.GetLsn())
		if err != nil {
			return bad("welcome lsn", err)
		}
		return ServerMessage{Type: TypeWelcome, Epoch: x.Welcome.GetEpoch(), LSN: lsn,
			HeartbeatMs: x.Welcome.GetHeartbeatMs(), Server: x.Welcome.GetServer()}, nil
	case *pb.ServerMessage_Subscribed:
		lsn, err := stream.ParseLSN(x.Subscribed.GetLsn())
		if err != nil {
			return bad("subscribed lsn", err)
		}
		return ServerMessage{Type: TypeSubscribed, ID: x.Subscribed.GetId(), LSN: lsn,
			Mode: x.Subscribed.GetMode(), Reset: x.Subscribed.GetReset_()}, nil
	case *pb.ServerMessage_Board:
		lsn, err := stream.ParseLSN(x.Board.GetLsn())
		if err != nil {
			return bad("board lsn", err)
		}
		m := ServerMessage{Type: TypeBoard, ID: x.Board.GetId(), LSN: lsn, Order: x.Board.GetOrder(),
			States: make([]stream.State, len(x.Board.GetEntries())), Moves: make([]stream.Move, len(x.Board.GetMoves()))}
		for i, s := range x.Board.GetEntries() {
			if m.States[i], err = fromPBState(s); err != nil {
				return bad("board entry", err)
			}
		}
		for i, mv := range x.Board.GetMoves() {
			m.Moves[i] = stream.Move{Subject: mv.GetSubject(), From: int(mv.GetFrom()), To: int(mv.GetTo())}
		}
		return m, nil
	case *pb.ServerMessage_Snapshot:
		lsn, err := stream.ParseLSN(x.Snapshot.GetLsn())
		if err != nil {
			return bad("snapshot lsn", err)
		}
		m := ServerMessage{Type: TypeSnapshot, ID: x.Snapshot.GetId(), LSN: lsn, More: x.Snapshot.GetMore(),
			States: make([]stream.State, len(x.Snapshot.GetStates()))}
		for i, s := range x.Snapshot.GetStates() {
			if m.States[i], err = fromPBState(s); err != nil {
				return bad("snapshot state", err)
			}
		}
		return m, nil
	case *pb.ServerMessage_Delta:
		d, err := fromPBDelta(x.Delta)
		if err != nil {
			return bad("delta", err)
		}
		return ServerMessage{Type: TypeDelta, Deltas: []stream.Delta{d}}, nil
	case *pb.ServerMessage_Deltas:
		m := ServerMessage{Type: TypeDeltas, Deltas: make([]stream.Delta, len(x.Deltas.GetItems()))}
		for i, it := range x.Deltas.GetItems() {
			var err error
			if m.Deltas[i], err = fromPBDelta(it); err != nil {
				return bad("deltas item", err)
			}
		}
		return m, nil
	case *pb.ServerMessage_Tick:
		lsn, err := stream.ParseLSN(x.Tick.GetLsn())
		if err != nil {
			return bad("tick lsn", err)
		}
		return ServerMessage{Type: TypeTick, LSN: lsn}, nil
	case *pb.ServerMessage_Pong:
		return ServerMessage{Type: TypePong, ID: x.Pong.GetId()}, nil
	case *pb.ServerMessage_Error:
		return ServerMessage{Type: TypeError, ID: x.Error.GetId(), Code: x.Error.GetCode(), Message: x.Error.GetMessage()}, nil
	case *pb.ServerMessage_Unsubscribed:
		return ServerMessage{Type: TypeUnsubscribed, ID: x.Unsubscribed.GetId()}, nil
	case *pb.ServerMessage_CaughtUp:
		lsn, err := stream.ParseLSN(x.CaughtUp.GetLsn())
		if err != nil {
			return ServerMessage{}, fmt.Errorf("%w: caught_up lsn: %v", ErrMalformed, err)
		}
		return ServerMessage{Type: TypeCaughtUp, ID: x.CaughtUp.GetId(), LSN: lsn}, nil
	default:
		return ServerMessage{}, nil // a message this client does not know: ignored
	}
}
