package cdc

import "testing"

// textV is a text Value.
func textV(s string) Value { return Value{Kind: ValueText, Data: []byte(s)} }

var (
	nullV  = Value{Kind: ValueNull}
	toastV = Value{Kind: ValueUnchanged}
)

var rowCases = []decodeCase{
	{
		name: "insert",
		in: wireMsg{}.
			b('I').                // Byte1('I')
			oid(16385).            // Int32 relation OID
			marker('N').           // Byte1('N') new tuple follows
			cols(5).               // Int16 number of columns
			text("42").            // Byte1('t') Int32 2 Byte2 "42"
			null().                // Byte1('n')
			text("").              // Byte1('t') Int32 0: empty string, not NULL
			bin(0x00, 0x01, 0xff). // Byte1('b') Int32 3 Byte3
			text("héllo").         // multi-byte UTF-8 counts bytes
			bytes(),
		want: &Insert{RelationID: 16385, New: Tuple{
			textV("42"),
			nullV,
			{Kind: ValueText, Data: []byte{}},
			{Kind: ValueBinary, Data: []byte{0x00, 0x01, 0xff}},
			textV("héllo"),
		}},
	},
	{
		name: "insert no columns",
		in:   wireMsg{}.b('I').oid(7).marker('N').cols(0).bytes(),
		want: &Insert{RelationID: 7, New: Tuple{}},
	},
	{
		name: "insert all nulls, empty binary",
		in:   wireMsg{}.b('I').oid(7).marker('N').cols(3).null().null().bin().bytes(),
		want: &Insert{RelationID: 7, New: Tuple{nullV, nullV, {Kind: ValueBinary, Data: []byte{}}}},
	},
	{
		// REPLICA IDENTITY DEFAULT, key unchanged: no old tuple; the big
		// TOASTed column did not change and is not sent.
		name: "update new only with unchanged toast",
		in: wireMsg{}.
			b('U').      // Byte1('U')
			oid(16385).  // Int32 relation OID
			marker('N'). // Byte1('N') new tuple, no 'K'/'O' part
			cols(3).
			text("42").
			unchanged(). // Byte1('u') unchanged TOASTed value
			text("1.50").
			bytes(),
		want: &Update{RelationID: 16385, New: Tuple{textV("42"), toastV, textV("1.50")}},
	},
	{
		// The key changed: 'K' carries the old key columns, NULL elsewhere.
		name: "update with K old key",
		in: wireMsg{}.
			b('U').oid(16385).
			marker('K'). // Byte1('K') key TupleData follows
			cols(3).text("41").null().null().
			marker('N'). // Byte1('N') new TupleData follows
			cols(3).text("42").unchanged().text("1.50").
			bytes(),
		want: &Update{
			RelationID: 16385,
			OldKind:    OldKey,
			Old:        Tuple{textV("41"), nullV, nullV},
			New:        Tuple{textV("42"), toastV, textV("1.50")},
		},
	},
	{
		// REPLICA IDENTITY FULL: 'O' carries the whole old row.
		name: "update with O old tuple",
		in: wireMsg{}.
			b('U').oid(16385).
			marker('O'). // Byte1('O') old TupleData follows
			cols(3).text("42").text("alice").text("1.00").
			marker('N').
			cols(3).text("42").text("alice").null().
			bytes(),
		want: &Update{
			RelationID: 16385,
			OldKind:    OldFull,
			Old:        Tuple{textV("42"), textV("alice"), textV("1.00")},
			New:        Tuple{textV("42"), textV("alice"), nullV},
		},
	},
	{
		name: "delete with K key",
		in: wireMsg{}.
			b('D').      // Byte1('D')
			oid(16385).  // Int32 relation OID
			marker('K'). // Byte1('K') key TupleData follows
			cols(3).text("42").null().null().
			bytes(),
		want: &Delete{RelationID: 16385, OldKind: OldKey, Old: Tuple{textV("42"), nullV, nullV}},
	},
	{
		name: "delete with O old tuple",
		in: wireMsg{}.
			b('D').oid(16385).
			marker('O'). // Byte1('O') old TupleData follows
			cols(3).text("42").text("alice").bin(0xde, 0xad).
			bytes(),
		want: &Delete{RelationID: 16385, OldKind: OldFull,
			Old: Tuple{textV("42"), textV("alice"), {Kind: ValueBinary, Data: []byte{0xde, 0xad}}}},
	},
}

func TestMsgRow(t *testing.T) { runDecodeCases(t, rowCases) }

// TestMsgRowNilVersusEmpty pins the documented distinction: NULL and
// unchanged values have nil Data, empty text has non-nil empty Data.
func TestMsgRowNilVersusEmpty(t *testing.T) {
	m, err := Decode(rowCases[0].in)
	if err != nil {
		t.Fatal(err)
	}
	row := m.(*Insert).New
	if row[1].Data != nil {
		t.Errorf("NULL Data = %#v, want nil", row[1].Data)
	}
	if row[2].Data == nil {
		t.Error("empty text Data is nil, want non-nil empty")
	}
	m, err = Decode(rowCases[3].in)
	if err != nil {
		t.Fatal(err)
	}
	if d := m.(*Update).New[1]; d.Kind != ValueUnchanged || d.Data != nil {
		t.Errorf("unchanged TOAST value = %#v", d)
	}
}
