package cdc

// Value kinds, the Byte1 that starts each column of a TupleData.
const (
	// ValueNull lets callers tell SQL NULL from an empty string.
	ValueNull byte = 'n'
	// ValueUnchanged marks an unchanged TOASTed value whose data Postgres
	// did not send: keep the previous value, never overwrite it with empty.
	ValueUnchanged byte = 'u'
	// ValueText marks a value in the type's text output format.
	ValueText byte = 't'
	// ValueBinary marks a value in the type's binary send format, which
	// Postgres uses only when the subscription asks for binary = true.
	ValueBinary byte = 'b'
)

// Old tuple kinds of Update and Delete.
const (
	// OldKey marks an old tuple that holds only the replica identity
	// columns (Column.Key); the others are ValueNull.
	OldKey byte = 'K'
	// OldFull marks an old tuple that holds every column, sent when the
	// table has REPLICA IDENTITY FULL.
	OldFull byte = 'O'
)

// Tuple is a row image in wire order: column i is Values[i] and is
// described by Relation.Columns[i], so names come from the Relation.
type Tuple []Value

// Value is one column of a Tuple; Kind says whether Data holds anything,
// which matters because an unchanged TOAST value is not an empty one.
//
// Data is owned by the Value: Decode copies it out of the input buffer, so
// it stays valid after the caller reuses that buffer. Values of one tuple
// share a single allocation, each capped so appending to one cannot
// clobber another.
type Value struct {
	// Kind is the Byte1 that starts the column:
	//	Byte1('n') Identifies the data as NULL value.
	//	Or
	//	Byte1('u') Identifies unchanged TOASTed value (the actual value is
	//	not sent).
	//	Or
	//	Byte1('t') Identifies the data as text formatted value.
	//	Or
	//	Byte1('b') Identifies the data as binary value.
	Kind byte
	// Data is present for 't' and 'b':
	//	Int32 Length of the column value.
	//	Byte n The value of the column, either in binary or in text format.
	//	(As specified in the preceding format byte). n is the above length.
	// It is nil for 'n' and 'u', and non-nil (possibly empty) for 't' and
	// 'b', so an empty string is distinguishable from NULL by Data alone.
	Data []byte
}

// Insert carries a new row.
//
//	Byte1('I') Identifies the message as an insert message.
type Insert struct {
	// Int32 (Oid) OID of the relation corresponding to the ID in the
	// relation message.
	RelationID uint32
	//	Byte1('N') Identifies the following TupleData message as a new tuple.
	//	TupleData: TupleData message part representing the contents of new
	//	tuple.
	New Tuple
}

func (*Insert) msgType() byte { return 'I' }

// Update carries a changed row and, when the identity changed or is FULL,
// the old one, so a consumer can retract what the old row contributed.
//
//	Byte1('U') Identifies the message as an update message.
//
// The Update message may contain either a 'K' message part or an 'O'
// message part or neither of them, but never both of them.
type Update struct {
	// Int32 (Oid) OID of the relation corresponding to the ID in the
	// relation message.
	RelationID uint32
	// Old is the optional old TupleData ("This field is optional ... Only
	// present if the previous 'O' or 'K' part is present"); nil when
	// OldKind is 0.
	Old Tuple
	// OldKind is 0 when no old tuple was sent, or:
	//	Byte1('K') Identifies the following TupleData submessage as a key.
	//	This field is optional and is only present if the update changed
	//	data in any of the column(s) that are part of the REPLICA IDENTITY
	//	index.
	//	Or
	//	Byte1('O') Identifies the following TupleData submessage as an old
	//	tuple. This field is optional and is only present if table in which
	//	the update happened has REPLICA IDENTITY set to FULL.
	OldKind byte
	//	Byte1('N') Identifies the following TupleData message as a new tuple.
	//	TupleData: TupleData message part representing the contents of a new
	//	tuple.
	// Columns of kind 'u' did not change and were not sent: keep the value
	// the consumer already has.
	New Tuple
}

func (*Update) msgType() byte { return 'U' }

// Delete carries the identity of a removed row, so a consumer can find and
// retract it.
//
//	Byte1('D') Identifies the message as a delete message.
//
// The Delete message may contain either a 'K' message part or an 'O'
// message part, but never both of them.
type Delete struct {
	// Int32 (Oid) OID of the relation corresponding to the ID in the
	// relation message.
	RelationID uint32
	// Old is the TupleData message part representing the contents of the
	// old tuple or primary key, depending on the previous field.
	Old Tuple
	// OldKind is one of:
	//	Byte1('K') Identifies the following TupleData submessage as a key.
	//	This field is present if the table in which the delete has happened
	//	uses an index as REPLICA IDENTITY.
	//	Or
	//	Byte1('O') Identifies the following TupleData message as an old
	//	tuple. This field is present if the table in which the delete
	//	happened has REPLICA IDENTITY set to FULL.
	OldKind byte
}

func (*Delete) msgType() byte { return 'D' }

func decodeInsert(r *msgReader) *Insert {
	m := &Insert{RelationID: r.u32("relation id")}
	r.expect('N', "new tuple marker")
	m.New = r.tuple("new tuple")
	return m
}

func decodeUpdate(r *msgReader) *Update {
	m := &Update{RelationID: r.u32("relation id")}
	start := r.off
	switch marker := r.u8("tuple marker"); {
	case r.err != nil:
		return m
	case marker == OldKey || marker == OldFull:
		m.OldKind = marker
		m.Old = r.tuple(oldPart(marker))
		r.expect('N', "new tuple marker")
	case marker == 'N':
	default:
		r.failAt(start, "tuple marker", "want 'K', 'O' or 'N', got %s", quoteByte(marker))
		return m
	}
	m.New = r.tuple("new tuple")
	return m
}

func decodeDelete(r *msgReader) *Delete {
	m := &Delete{RelationID: r.u32("relation id")}
	start := r.off
	switch marker := r.u8("tuple marker"); {
	case r.err != nil:
	case marker == OldKey || marker == OldFull:
		m.OldKind = marker
		m.Old = r.tuple(oldPart(marker))
	default:
		r.failAt(start, "tuple marker", "want 'K' or 'O', got %s", quoteByte(marker))
	}
	return m
}

// oldPart names an old tuple in errors.
func oldPart(kind byte) string {
	if kind == OldKey {
		return "key tuple"
	}
	return "old tuple"
}

// tuple decodes a TupleData:
//
//	Int16 Number of columns.
//	Next, one of the following submessages appears for each column:
//	Byte1('n') | Byte1('u') | Byte1('t') Int32 Byte n | Byte1('b') Int32 Byte n
//
// It returns nil after an error. Data is copied into one allocation per
// tuple, so the result does not alias the input.
func (r *msgReader) tuple(part string) Tuple {
	r.part = part
	defer func() { r.part = "" }()

	// Every column takes at least its kind byte.
	n := r.count("column count", false, 1)
	if n < 0 {
		return nil
	}
	t := make(Tuple, n)
	total := 0
	r.unit = "column"
	for i := range t {
		r.idx = i
		start := r.off
		switch kind := r.u8("kind"); kind {
		case ValueNull, ValueUnchanged:
			t[i].Kind = kind
		case ValueText, ValueBinary:
			t[i] = Value{Kind: kind, Data: r.lengthPrefixed("length", "data")}
			total += len(t[i].Data)
		default:
			r.failAt(start, "kind", "want 'n', 'u', 't' or 'b', got %s", quoteByte(kind))
		}
		if r.err != nil {
			r.idx = -1
			return nil
		}
	}
	r.idx = -1

	// Copy out of the caller's buffer. total <= len(input), so this is
	// bounded by what was actually received.
	arena := make([]byte, total)
	for i := range t {
		if v := &t[i]; v.Kind == ValueText || v.Kind == ValueBinary {
			k := copy(arena, v.Data)
			v.Data = arena[:k:k]
			arena = arena[k:]
		}
	}
	return t
}
