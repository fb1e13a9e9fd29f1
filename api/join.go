package api

import (
	"bytes"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/stream"
)

// maxJoinBytes bounds the delta frames joined into one "deltas" frame.
const maxJoinBytes = 64 << 10

// deltaLSNFunc returns how to read the lsn of a frame the codec's Delta
// made (ok false for any other frame), or nil if the codec's frames are
// never joined.
func deltaLSNFunc(c wire.Codec) func(f []byte) (stream.LSN, bool) {
	switch c.(type) {
	case wire.JSON:
		return jsonDeltaLSN
	case wire.Proto:
		return protoDeltaLSN
	}
	return nil
}

// joinDeltas returns the frame to write for fs[i:] and the index of the
// frame after it: a run of single-delta frames in LSN order (at most
// maxJoinBytes of them) joined into one "deltas" frame, or fs[i] alone.
// Joining whole frames never splits a transaction, and the run keeps the
// queue's order, which is each subscription's LSN order.
func joinDeltas(c wire.Codec, lsnOf func([]byte) (stream.LSN, bool), fs [][]byte, i int) ([]byte, int) {
	if lsnOf == nil || i+1 >= len(fs) {
		return fs[i], i + 1
	}
	lsn, ok := lsnOf(fs[i])
	if !ok {
		return fs[i], i + 1
	}
	j, size := i+1, len(fs[i])
	for ; j < len(fs) && size+len(fs[j]) <= maxJoinBytes; j++ {
		l, ok := lsnOf(fs[j])
		if !ok || l < lsn {
			break
		}
		lsn, size = l, size+len(fs[j])
	}
	if j == i+1 {
		return fs[i], j
	}
	return c.Deltas(fs[i:j]), j
}

var jsonDeltaHead = []byte(`{"type":"delta","subject":"`)

// jsonDeltaLSN reads the lsn of a JSON "delta" frame (stream.Delta's
// MarshalJSON: type, subject, lsn, ...).
func jsonDeltaLSN(f []byte) (stream.LSN, bool) {
	if !bytes.HasPrefix(f, jsonDeltaHead) {
		return 0, false
	}
	i := len(jsonDeltaHead)
subject:
	for ; i < len(f); i++ {
		switch f[i] {
		case '\\':
			i++
		case '"':
			break subject
		}
	}
	const key = `","lsn":"`
	if i >= len(f) || !bytes.HasPrefix(f[i:], []byte(key)) {
		return 0, false
	}
	rest := f[i+len(key):]
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return 0, false
	}
	return parseLSN(rest[:end])
}

// Protobuf field numbers (api/proto/repstream.proto).
const (
	pbServerDelta = 4 // ServerMessage.delta
	pbDeltaLSN    = 2 // Delta.lsn
)

// protoDeltaLSN reads the lsn of a protobuf frame that holds only a
// ServerMessage.delta.
func protoDeltaLSN(f []byte) (stream.LSN, bool) {
	num, typ, n := protowire.ConsumeTag(f)
	if n < 0 || num != pbServerDelta || typ != protowire.BytesType {
		return 0, false
	}
	v, m := protowire.ConsumeBytes(f[n:])
	if m < 0 || n+m != len(f) {
		return 0, false
	}
	for len(v) > 0 {
		num, typ, n := protowire.ConsumeTag(v)
		if n < 0 {
			return 0, false
		}
		v = v[n:]
		if num == pbDeltaLSN && typ == protowire.BytesType {
			b, m := protowire.ConsumeBytes(v)
			if m < 0 {
				return 0, false
			}
			return parseLSN(b)
		}
		m := protowire.ConsumeFieldValue(num, typ, v)
		if m < 0 {
			return 0, false
		}
		v = v[m:]
	}
	return 0, false
}

// parseLSN parses the X/Y hex form without allocating.
func parseLSN(b []byte) (stream.LSN, bool) {
	slash := bytes.IndexByte(b, '/')
	if slash < 0 {
		return 0, false
	}
	hi, ok1 := parseHex32(b[:slash])
	lo, ok2 := parseHex32(b[slash+1:])
	return stream.LSN(uint64(hi)<<32 | uint64(lo)), ok1 && ok2
}

func parseHex32(b []byte) (uint32, bool) {
	if len(b) == 0 || len(b) > 8 {
		return 0, false
	}
	var v uint32
	for _, c := range b {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		default:
			return 0, false
		}
		v = v<<4 | uint32(c)
	}
	return v, true
}
