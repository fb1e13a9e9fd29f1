package cdc

import (
	"bytes"

	"github.com/jackc/pglogrepl"
)

// Truncate option bits.
const (
	// TruncateCascade reports TRUNCATE ... CASCADE: the listed relations
	// include those emptied only because of the cascade.
	TruncateCascade uint8 = 1
	// TruncateRestartIdentity reports RESTART IDENTITY: sequences owned by
	// the tables were reset too.
	TruncateRestartIdentity uint8 = 2
)

// Truncate empties whole tables at once; consumers must drop every row
// they derived from RelationIDs, since no per-row Delete follows.
//
//	Byte1('T') Identifies the message as a truncate message.
type Truncate struct {
	// Int8 Option bits for TRUNCATE: 1 for CASCADE, 2 for RESTART IDENTITY.
	// Kept as sent; unknown bits are not rejected.
	Options uint8
	// Int32 Number of relations, then Int32 (Oid) OID of the relation,
	// repeated for each. One statement can truncate several tables.
	RelationIDs []uint32
}

func (*Truncate) msgType() byte { return 'T' }

// LogicalMessage is a pg_logical_emit_message() call, which lets an
// application put markers (e.g. a backfill watermark) into the stream.
// Postgres sends it only when the subscription asks for messages = true.
//
//	Byte1('M') Identifies the message as a logical decoding message.
type LogicalMessage struct {
	// Int8 Flags; Either 0 for no flags or 1 if the logical decoding
	// message is transactional. A transactional message arrives inside
	// Begin/Commit and only if the transaction commits; a
	// non-transactional one arrives at once, outside any transaction.
	// Only bit 0 is read; other bits are ignored.
	Transactional bool
	// Int64 (XLogRecPtr) The LSN of the logical decoding message.
	LSN pglogrepl.LSN
	// String The prefix of the logical decoding message.
	Prefix string
	// Int32 Length of the content, then Byte n: the content of the logical
	// decoding message. A copy; non-nil even when empty.
	Content []byte
}

func (*LogicalMessage) msgType() byte { return 'M' }

func decodeTruncate(r *msgReader) *Truncate {
	start := r.off
	n := r.i32("relation count")
	m := &Truncate{Options: r.u8("options")}
	if r.err != nil {
		return m
	}
	// Check the count only now that the options byte is consumed, so the
	// bytes left are exactly those holding the OIDs.
	if n < 0 {
		r.failAt(start, "relation count", "negative count %d", n)
		return m
	}
	if need := int64(n) * 4; need > int64(r.left()) {
		r.failAt(start, "relation count", "%d relations need %d bytes, have %d", n, need, r.left())
		return m
	}
	m.RelationIDs = make([]uint32, n)
	r.unit = "relation"
	for i := range m.RelationIDs {
		r.idx = i
		m.RelationIDs[i] = r.u32("oid")
	}
	r.idx = -1
	return m
}

func decodeLogicalMessage(r *msgReader) *LogicalMessage {
	m := &LogicalMessage{
		Transactional: r.u8("flags")&1 != 0,
		LSN:           r.lsn("lsn"),
		Prefix:        r.cstring("prefix"),
	}
	if p := r.lengthPrefixed("content length", "content"); p != nil {
		m.Content = bytes.Clone(p)
	}
	return m
}
