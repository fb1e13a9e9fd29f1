package cdc

import "testing"

var otherCases = []decodeCase{
	{
		name: "truncate one relation",
		in: wireMsg{}.
			b('T').     // Byte1('T')
			i32(1).     // Int32 number of relations
			flags(0).   // Int8 option bits
			oid(16385). // Int32 relation OID
			bytes(),
		want: &Truncate{Options: 0, RelationIDs: []uint32{16385}},
	},
	{
		// TRUNCATE a, b, c RESTART IDENTITY CASCADE
		name: "truncate several relations cascade restart identity",
		in: wireMsg{}.
			b('T').
			i32(3).
			flags(TruncateCascade | TruncateRestartIdentity).
			oid(16385).oid(16390).oid(0xfffffffe).
			bytes(),
		want: &Truncate{Options: 3, RelationIDs: []uint32{16385, 16390, 0xfffffffe}},
	},
	{
		name: "truncate zero relations",
		in:   wireMsg{}.b('T').i32(0).flags(2).bytes(),
		want: &Truncate{Options: 2, RelationIDs: []uint32{}},
	},
	{
		name: "transactional message",
		in: wireMsg{}.
			b('M').                             // Byte1('M')
			flags(1).                           // Int8 flags: 1 = transactional
			i64(0x16B3748).                     // Int64 LSN of the message
			str("repstream").                   // String prefix
			content([]byte(`{"watermark":7}`)). // Int32 length, Byte n content
			bytes(),
		want: &LogicalMessage{Transactional: true, LSN: 0x16B3748, Prefix: "repstream", Content: []byte(`{"watermark":7}`)},
	},
	{
		name: "non-transactional message, empty prefix and content",
		in:   wireMsg{}.b('M').flags(0).i64(5).str("").content(nil).bytes(),
		want: &LogicalMessage{Transactional: false, LSN: 5, Prefix: "", Content: []byte{}},
	},
	{
		name: "non-transactional binary content with NULs",
		in:   wireMsg{}.b('M').flags(0).i64(6).str("bin").content([]byte{0, 0, 0xff, 0}).bytes(),
		want: &LogicalMessage{LSN: 6, Prefix: "bin", Content: []byte{0, 0, 0xff, 0}},
	},
}

func TestMsgOther(t *testing.T) { runDecodeCases(t, otherCases) }

// TestMsgOtherMessageFlags: only bit 0 means "transactional"; other bits
// are ignored rather than stopping replication.
func TestMsgOtherMessageFlags(t *testing.T) {
	for flags, want := range map[uint8]bool{0: false, 1: true, 2: false, 3: true, 0xff: true} {
		m, err := Decode(wireMsg{}.b('M').flags(flags).i64(1).str("p").content(nil).bytes())
		if err != nil {
			t.Fatalf("flags %#x: %v", flags, err)
		}
		if got := m.(*LogicalMessage).Transactional; got != want {
			t.Errorf("flags %#x: Transactional = %v, want %v", flags, got, want)
		}
	}
}
