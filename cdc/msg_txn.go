package cdc

import (
	"time"

	"github.com/jackc/pglogrepl"
)

// Begin opens a transaction; FinalLSN lets the loop know, before any row
// arrives, the position it may confirm once the matching Commit is applied.
//
//	Byte1('B') Identifies the message as a begin message.
type Begin struct {
	// Int64 (XLogRecPtr) The final LSN of the transaction.
	FinalLSN pglogrepl.LSN
	// Int64 (TimestampTz) Commit timestamp of the transaction. The value is
	// in number of microseconds since PostgreSQL epoch (2000-01-01).
	// Decoded in UTC.
	CommitTime time.Time
	// Int32 (TransactionId) Xid of the transaction.
	Xid uint32
}

func (*Begin) msgType() byte { return 'B' }

// Commit closes a transaction; EndLSN is the position to confirm to the
// server once everything before it is durably applied.
//
//	Byte1('C') Identifies the message as a commit message.
type Commit struct {
	// Int8(0) Flags; currently unused. Kept as sent, not validated.
	Flags uint8
	// Int64 (XLogRecPtr) The LSN of the commit.
	CommitLSN pglogrepl.LSN
	// Int64 (XLogRecPtr) The end LSN of the transaction.
	EndLSN pglogrepl.LSN
	// Int64 (TimestampTz) Commit timestamp of the transaction. The value is
	// in number of microseconds since PostgreSQL epoch (2000-01-01).
	// Decoded in UTC.
	CommitTime time.Time
}

func (*Commit) msgType() byte { return 'C' }

// Origin marks a transaction that was itself replicated from elsewhere, so
// the loop can skip changes it would otherwise echo back.
//
//	Byte1('O') Identifies the message as an origin message.
//
// Note that there can be multiple Origin messages inside a single
// transaction.
type Origin struct {
	// Int64 (XLogRecPtr) The LSN of the commit on the origin server.
	CommitLSN pglogrepl.LSN
	// String Name of the origin.
	Name string
}

func (*Origin) msgType() byte { return 'O' }

func decodeBegin(r *msgReader) *Begin {
	return &Begin{
		FinalLSN:   r.lsn("final lsn"),
		CommitTime: r.timestamp("commit time"),
		Xid:        r.u32("xid"),
	}
}

func decodeCommit(r *msgReader) *Commit {
	return &Commit{
		Flags:      r.u8("flags"),
		CommitLSN:  r.lsn("commit lsn"),
		EndLSN:     r.lsn("end lsn"),
		CommitTime: r.timestamp("commit time"),
	}
}

func decodeOrigin(r *msgReader) *Origin {
	return &Origin{
		CommitLSN: r.lsn("commit lsn"),
		Name:      r.cstring("name"),
	}
}
