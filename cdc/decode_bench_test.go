package cdc

import (
	"testing"
	"time"
)

// benchTxn is one single-row review transaction as pgoutput v1 sends it:
// Begin, Insert of (id, seller_id, rating, status), Commit.
func benchTxn() [][]byte {
	at := time.Date(2026, 11, 26, 21, 0, 0, 0, time.UTC)
	begin := wireMsg{}.b('B').lsn(0x16B3800).ts(at).i32(4242).bytes()
	insert := wireMsg{}.b('I').oid(16385).b('N').cols(4).
		text("123456").text("42").text("4.5").text("published").bytes()
	commit := wireMsg{}.b('C', 0).lsn(0x16B3800).lsn(0x16B3830).ts(at).bytes()
	return [][]byte{begin, insert, commit}
}

// BenchmarkDecodeTxn decodes a whole single-row transaction (3 messages);
// ns/op is per source transaction, changes/s = 1e9 / ns/op.
func BenchmarkDecodeTxn(b *testing.B) {
	msgs := benchTxn()
	b.ReportAllocs()
	for b.Loop() {
		for _, m := range msgs {
			if _, err := Decode(m); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkDecodeReviewInsert decodes one Insert of a reviews row.
func BenchmarkDecodeReviewInsert(b *testing.B) {
	m := benchTxn()[1]
	b.SetBytes(int64(len(m)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeUpdateKey decodes an Update carrying the old key (a
// primary-key change under DEFAULT replica identity).
func BenchmarkDecodeUpdateKey(b *testing.B) {
	m := wireMsg{}.b('U').oid(16385).b('K').cols(4).text("123456").null().null().null().
		b('N').cols(4).text("123457").text("42").text("4.5").text("published").bytes()
	b.SetBytes(int64(len(m)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(m); err != nil {
			b.Fatal(err)
		}
	}
}
