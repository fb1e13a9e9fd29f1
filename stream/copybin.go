package stream

import (
	"encoding/binary"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

// The delta log and the row shadow have fixed column types, so a big group
// writes them with COPY in binary format built here straight into one
// buffer: pgx's CopyFrom boxes every value in an interface and plans its
// encoding value by value, which cost more CPU than the rest of the write.
// The format is Postgres's (see the COPY reference page, "Binary Format").

// copySignature starts every binary COPY stream; flags and header extension
// length (both zero) follow.
const copySignature = "PGCOPY\n\xff\r\n\x00"

// microsecFromUnixEpochToY2K is Postgres's timestamp epoch, 2000-01-01 UTC.
const microsecFromUnixEpochToY2K = 946_684_800 * 1_000_000

func appendCopyHeader(b []byte) []byte {
	b = append(b, copySignature...)
	return binary.BigEndian.AppendUint64(b, 0) // flags, header extension length
}

func appendCopyTrailer(b []byte) []byte { return binary.BigEndian.AppendUint16(b, 0xffff) }

func appendCopyTuple(b []byte, fields int) []byte {
	return binary.BigEndian.AppendUint16(b, uint16(fields))
}

func appendCopyNull(b []byte) []byte { return binary.BigEndian.AppendUint32(b, 0xffffffff) }

func appendCopyInt2(b []byte, v int16) []byte {
	b = binary.BigEndian.AppendUint32(b, 2)
	return binary.BigEndian.AppendUint16(b, uint16(v))
}

// appendCopy8 appends an eight-byte field: bigint, float8 (its IEEE bits)
// and pg_lsn alike.
func appendCopy8(b []byte, v uint64) []byte {
	b = binary.BigEndian.AppendUint32(b, 8)
	return binary.BigEndian.AppendUint64(b, v)
}

func appendCopyText(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// appendCopyTimestamptz appends t as microseconds since 2000-01-01 UTC,
// truncating nanoseconds as pgx does.
func appendCopyTimestamptz(b []byte, t time.Time) []byte {
	return appendCopy8(b, uint64(t.Unix()*1_000_000+int64(t.Nanosecond())/1000-microsecFromUnixEpochToY2K))
}

// appendArrayHeader appends a one-dimensional array's header after its
// length word at b[at:at+4], which appendArrayEnd fills in. An empty array
// has no dimensions.
func appendArrayHeader(b []byte, n int, hasNull bool, elem uint32) []byte {
	dims := uint32(1)
	if n == 0 {
		dims = 0
	}
	b = binary.BigEndian.AppendUint32(b, dims)
	null := uint32(0)
	if hasNull {
		null = 1
	}
	b = binary.BigEndian.AppendUint32(b, null)
	b = binary.BigEndian.AppendUint32(b, elem)
	if n > 0 {
		b = binary.BigEndian.AppendUint32(b, uint32(n))
		b = binary.BigEndian.AppendUint32(b, 1) // lower bound
	}
	return b
}

// appendCopyInt8Array appends a bigint[]; nil is NULL.
func appendCopyInt8Array(b []byte, h []int64) []byte {
	if h == nil {
		return appendCopyNull(b)
	}
	size := 12 + 12*len(h)
	if len(h) > 0 {
		size += 8
	}
	b = binary.BigEndian.AppendUint32(b, uint32(size))
	b = appendArrayHeader(b, len(h), false, pgtype.Int8OID)
	for _, v := range h {
		b = appendCopy8(b, uint64(v))
	}
	return b
}

// appendCopyTextArray appends a text[] whose elements may be NULL.
func appendCopyTextArray(b []byte, vals []*string) []byte {
	at := len(b)
	b = append(b, 0, 0, 0, 0) // length, filled in below
	hasNull := slices.Contains(vals, nil)
	b = appendArrayHeader(b, len(vals), hasNull, pgtype.TextOID)
	for _, v := range vals {
		if v == nil {
			b = appendCopyNull(b)
			continue
		}
		b = appendCopyText(b, *v)
	}
	binary.BigEndian.PutUint32(b[at:], uint32(len(b)-at-4))
	return b
}

// sqlCopyDeltas and sqlCopyRows name the columns appendDeltasCopy and
// appendRowCopy encode, in that order.
const (
	sqlCopyDeltas = `COPY repstream.deltas (` + deltaCols + `) FROM STDIN (FORMAT binary)`
	sqlCopyRows   = `COPY repstream.rows (source, key, vals) FROM STDIN (FORMAT binary)`
)

// appendDeltasCopy appends the deltas of txns as binary COPY tuples of
// deltaCols, ordered by subject and then LSN: consecutive rows then land
// next to each other in the (subject, lsn) primary key, which Postgres
// updates measurably faster than rows scattered over all its subjects.
func appendDeltasCopy(b []byte, txns []Txn) []byte {
	for _, d := range deltasBySubject(txns) {
		b = appendCopyTuple(b, 13)
		b = appendCopyText(b, d.Subject)
		b = appendCopy8(b, uint64(d.LSN))
		b = appendCopy8(b, uint64(d.Version))
		b = appendCopy8(b, uint64(d.After.Count))
		b = appendCopy8(b, uint64(d.After.Sum))
		b = appendCopy8(b, math.Float64bits(d.After.Mean))
		b = appendCopy8(b, math.Float64bits(d.After.Bayes))
		b = appendCopyInt8Array(b, d.After.Hist)
		b = appendCopy8(b, uint64(d.Change.Count))
		b = appendCopy8(b, uint64(d.Change.Sum))
		b = appendCopy8(b, math.Float64bits(d.Change.Mean))
		b = appendCopy8(b, math.Float64bits(d.Change.Bayes))
		b = appendCopyTimestamptz(b, d.After.UpdatedAt)
	}
	return b
}

// deltasBySubject lists the deltas of txns ordered by subject, keeping the
// order of txns (their LSN order) within a subject.
func deltasBySubject(txns []Txn) []*Delta {
	out := make([]*Delta, 0, countDeltas(txns))
	for i := range txns {
		for j := range txns[i].Deltas {
			out = append(out, &txns[i].Deltas[j])
		}
	}
	slices.SortStableFunc(out, func(x, y *Delta) int { return strings.Compare(x.Subject, y.Subject) })
	return out
}

// appendRowCopy appends a shadow row as a binary COPY tuple of (source, key, vals).
func appendRowCopy(b []byte, source int16, key string, vals []*string) []byte {
	b = appendCopyTuple(b, 3)
	b = appendCopyInt2(b, source)
	b = appendCopyText(b, key)
	return appendCopyTextArray(b, vals)
}
