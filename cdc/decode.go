package cdc

// This file holds the entry point of the pgoutput decoder and its
// bounds-checked reader. The message structs live beside it, one file per
// family: msg_txn.go (B, C, O), msg_relation.go (R, Y and the relation
// cache), msg_row.go (I, U, D and TupleData) and msg_other.go (T, M).
//
// The wire format is "Logical Replication Message Formats" in the Postgres
// docs, protocol version 1 as of PG 15. WAL payloads are untrusted input:
// every read is bounds-checked, every length is checked against the bytes
// that remain before anything is allocated, and nothing here can panic.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
)

// ErrMalformed lets callers tell a corrupt or misframed payload, which no
// retry can fix, from a network failure; every decode error except an
// unknown type wraps it.
var ErrMalformed = errors.New("cdc: malformed pgoutput message")

// ErrUnknownMessage lets callers skip types this protocol-v1 decoder does
// not know (streaming S/E/c/A, two-phase commit, future additions) instead
// of stopping replication on them.
var ErrUnknownMessage = errors.New("cdc: unknown pgoutput message type")

// Message is one decoded pgoutput message, so the replication loop can
// type-switch on what arrived. Decode returns exactly one of *Begin,
// *Commit, *Origin, *Relation, *Type, *Insert, *Update, *Delete, *Truncate
// or *LogicalMessage; the set is closed.
type Message interface {
	// msgType returns the message's Byte1 on the wire; it seals the set.
	msgType() byte
}

// Decode parses the WALData of one XLogData message so the loop never runs
// pglogrepl's unchecked parsers on untrusted bytes.
//
// It never panics. On failure it returns a nil Message and an error that
// wraps ErrMalformed (truncated, over-long, trailing bytes, impossible
// lengths or markers) or ErrUnknownMessage (a type byte outside protocol
// v1). Decode does not retain b: every string and byte slice in the result
// is a copy, so the caller may reuse b as soon as Decode returns.
//
// Only protocol version 1 framing is understood: inside a streamed
// transaction (protocol v2) row messages carry an extra Xid and would be
// rejected as malformed, which is why the stream messages themselves are
// reported as unknown.
func Decode(b []byte) (Message, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty message", ErrMalformed)
	}
	r := msgReader{buf: b, off: 1, idx: -1}
	var m Message
	switch b[0] {
	case 'B':
		r.msg = "begin"
		m = decodeBegin(&r)
	case 'C':
		r.msg = "commit"
		m = decodeCommit(&r)
	case 'O':
		r.msg = "origin"
		m = decodeOrigin(&r)
	case 'R':
		r.msg = "relation"
		m = decodeRelation(&r)
	case 'Y':
		r.msg = "type"
		m = decodeType(&r)
	case 'I':
		r.msg = "insert"
		m = decodeInsert(&r)
	case 'U':
		r.msg = "update"
		m = decodeUpdate(&r)
	case 'D':
		r.msg = "delete"
		m = decodeDelete(&r)
	case 'T':
		r.msg = "truncate"
		m = decodeTruncate(&r)
	case 'M':
		r.msg = "message"
		m = decodeLogicalMessage(&r)
	default:
		return nil, fmt.Errorf("%w: type byte %s at offset 0", ErrUnknownMessage, quoteByte(b[0]))
	}
	r.finish()
	if r.err != nil {
		return nil, r.err
	}
	return m, nil
}

// quoteByte renders a type byte both ways, e.g. 'S' (0x53), so an unknown
// or binary byte is readable in logs.
func quoteByte(c byte) string {
	return strconv.QuoteRune(rune(c)) + fmt.Sprintf(" (0x%02x)", c)
}

// pgEpochUnix is 2000-01-01 00:00:00 UTC, the Postgres epoch, in Unix
// seconds.
const pgEpochUnix = 946684800

// pgTime converts a TimestampTz on the wire (microseconds since
// 2000-01-01 UTC) to a UTC time.Time. pglogrepl's equivalent is
// unexported. It splits seconds and microseconds so that no value, however
// large, overflows the way a time.Duration product would.
func pgTime(us int64) time.Time {
	return time.Unix(pgEpochUnix+us/1e6, (us%1e6)*1e3).UTC()
}

// msgReader is a bounds-checked cursor over one message. Like pgx's
// pgio.Reader it keeps the first error and turns every later read into a
// no-op returning zero values, so decoders read field after field and check
// r.err once where it matters (before allocating or branching).
//
// Error text names the message, the part, the column and the field, and
// the offset of the field within the whole message (type byte = offset 0).
type msgReader struct {
	buf []byte
	off int // next unread byte; always 0 <= off <= len(buf)

	msg  string // message name for errors, e.g. "insert"
	part string // sub-part for errors, e.g. "new tuple"; "" for none
	unit string // what idx counts, e.g. "column"
	idx  int    // index of the unit being read; -1 for none

	err error // first error; sticky
}

// left reports how many bytes remain unread.
func (r *msgReader) left() int { return len(r.buf) - r.off }

// failAt records the first error, naming field and the offset at which it
// starts.
func (r *msgReader) failAt(off int, field, format string, args ...any) {
	if r.err != nil {
		return
	}
	// e.g. "insert: new tuple column 3 length", or just "commit".
	where := []string{r.msg + ":"}
	if r.part != "" {
		where = append(where, r.part)
	}
	if r.idx >= 0 {
		where = append(where, r.unit, strconv.Itoa(r.idx))
	}
	if field != "" {
		where = append(where, field)
	}
	if len(where) == 1 {
		where[0] = r.msg
	}
	r.err = fmt.Errorf("%w: %s at offset %d: %s", ErrMalformed, strings.Join(where, " "), off, fmt.Sprintf(format, args...))
}

// fail records the first error for a field starting at the current offset.
func (r *msgReader) fail(field, format string, args ...any) {
	r.failAt(r.off, field, format, args...)
}

// take returns the next n bytes, aliasing buf (callers copy what they
// keep), or nil after an error. The result's capacity is capped at n.
func (r *msgReader) take(n int, field string) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > r.left() {
		r.fail(field, "need %d bytes, have %d", n, r.left())
		return nil
	}
	p := r.buf[r.off : r.off+n : r.off+n]
	r.off += n
	return p
}

// Int8 / Byte1
func (r *msgReader) u8(field string) uint8 {
	p := r.take(1, field)
	if p == nil {
		return 0
	}
	return p[0]
}

// Int16
func (r *msgReader) u16(field string) uint16 {
	p := r.take(2, field)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint16(p)
}

// Int32 read as an unsigned OID, Xid or count.
func (r *msgReader) u32(field string) uint32 {
	p := r.take(4, field)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint32(p)
}

// Int32 read as signed (atttypmod, lengths).
func (r *msgReader) i32(field string) int32 {
	return int32(r.u32(field))
}

// Int64
func (r *msgReader) u64(field string) uint64 {
	p := r.take(8, field)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint64(p)
}

// Int64 (XLogRecPtr)
func (r *msgReader) lsn(field string) pglogrepl.LSN {
	return pglogrepl.LSN(r.u64(field))
}

// Int64 (TimestampTz)
func (r *msgReader) timestamp(field string) time.Time {
	us := int64(r.u64(field))
	if r.err != nil {
		return time.Time{}
	}
	return pgTime(us)
}

// String: a NUL-terminated C string; the result is a copy.
func (r *msgReader) cstring(field string) string {
	if r.err != nil {
		return ""
	}
	i := bytes.IndexByte(r.buf[r.off:], 0)
	if i < 0 {
		r.fail(field, "no NUL terminator in the %d bytes left", r.left())
		return ""
	}
	s := string(r.buf[r.off : r.off+i])
	r.off += i + 1
	return s
}

// count reads an Int32 or Int16 element count and checks that at least
// minEach bytes per element remain, so a forged count cannot make the caller
// allocate more than the message could hold. It returns -1 after an error.
func (r *msgReader) count(field string, wide bool, minEach int) int {
	start := r.off
	var n int
	if wide {
		v := r.i32(field)
		if r.err != nil {
			return -1
		}
		if v < 0 {
			r.failAt(start, field, "negative count %d", v)
			return -1
		}
		n = int(v)
	} else {
		n = int(r.u16(field))
		if r.err != nil {
			return -1
		}
	}
	// n <= MaxInt32 and minEach is small, so the product fits in int64.
	if need := int64(n) * int64(minEach); need > int64(r.left()) {
		r.failAt(start, field, "%d elements need at least %d bytes, have %d", n, need, r.left())
		return -1
	}
	return n
}

// lengthPrefixed reads an Int32 length n followed by Byte n, aliasing buf.
// A negative or over-long length is an error, checked before any
// allocation.
func (r *msgReader) lengthPrefixed(lenField, dataField string) []byte {
	start := r.off
	n := r.i32(lenField)
	if r.err != nil {
		return nil
	}
	if n < 0 {
		r.failAt(start, lenField, "negative length %d", n)
		return nil
	}
	return r.take(int(n), dataField)
}

// expect reads one marker byte and fails unless it is want.
func (r *msgReader) expect(want byte, field string) {
	start := r.off
	got := r.u8(field)
	if r.err == nil && got != want {
		r.failAt(start, field, "want %s, got %s", quoteByte(want), quoteByte(got))
	}
}

// finish rejects trailing bytes: pgoutput sends exactly one message per
// XLogData, so leftovers mean the framing was misread.
func (r *msgReader) finish() {
	r.part, r.idx = "", -1
	if r.err == nil && r.left() != 0 {
		r.fail("", "%d unexpected trailing bytes", r.left())
	}
}
