package cdc

import (
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
)

// decodeFixtureTime is 2024-01-01 00:00:00.123456 UTC, i.e. 757382400123456
// microseconds after the Postgres epoch.
var decodeFixtureTime = time.Date(2024, 1, 1, 0, 0, 0, 123456000, time.UTC)

var txnCases = []decodeCase{
	{
		name: "begin",
		in: wireMsg{}.
			b('B').                // Byte1('B')
			i64(0x16B3748).        // Int64 final LSN
			i64(757382400_123456). // Int64 commit timestamp, µs since 2000-01-01
			i32(771).              // Int32 xid
			bytes(),
		want: &Begin{FinalLSN: 0x16B3748, CommitTime: decodeFixtureTime, Xid: 771},
	},
	{
		name: "begin pre-epoch time and max xid",
		in:   wireMsg{}.b('B').i64(0).neg(-1).neg(-1).neg(-1).bytes(),
		want: &Begin{
			FinalLSN:   0,
			CommitTime: time.Date(1999, 12, 31, 23, 59, 59, 999999000, time.UTC),
			Xid:        0xffffffff,
		},
	},
	{
		name: "commit",
		in: wireMsg{}.
			b('C').                // Byte1('C')
			flags(0).              // Int8(0) flags
			i64(0x16B3790).        // Int64 commit LSN
			i64(0x16B37C8).        // Int64 end LSN
			i64(757382400_123456). // Int64 commit timestamp
			bytes(),
		want: &Commit{Flags: 0, CommitLSN: 0x16B3790, EndLSN: 0x16B37C8, CommitTime: decodeFixtureTime},
	},
	{
		name: "commit with unknown flags kept",
		in:   wireMsg{}.b('C').flags(0x80).i64(1).i64(2).i64(0).bytes(),
		want: &Commit{Flags: 0x80, CommitLSN: 1, EndLSN: 2, CommitTime: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)},
	},
	{
		name: "origin",
		in: wireMsg{}.
			b('O').              // Byte1('O')
			i64(0xAB_0000_0010). // Int64 commit LSN on the origin
			str("pg_16395").     // String origin name
			bytes(),
		want: &Origin{CommitLSN: pglogrepl.LSN(0xAB_0000_0010), Name: "pg_16395"},
	},
	{
		name: "origin empty name",
		in:   wireMsg{}.b('O').i64(1).str("").bytes(),
		want: &Origin{CommitLSN: 1, Name: ""},
	},
}

func TestMsgTxn(t *testing.T) { runDecodeCases(t, txnCases) }
