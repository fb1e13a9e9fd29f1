package cdc

import "sync"

// Relation describes a table's columns; row messages carry only its ID, so
// the loop must keep the latest one (see Relations) to name their values.
// Postgres sends it before the first change to a table in a session and
// again whenever the table's shape changes (a column added or dropped).
//
//	Byte1('R') Identifies the message as a relation message.
type Relation struct {
	// Int32 (Oid) OID of the relation.
	ID uint32
	// String Namespace (empty string for pg_catalog).
	Namespace string
	// String Relation name.
	Name string
	// Int8 Replica identity setting for the relation (same as relreplident
	// in pg_class): 'd' default, 'n' nothing, 'f' full, 'i' index.
	ReplicaIdentity byte
	// Int16 Number of columns, followed by one Column each. Column i
	// describes Values[i] of every Tuple of this relation.
	Columns []Column
}

func (*Relation) msgType() byte { return 'R' }

// Column is one column of a Relation; its position in Columns is its
// position in every Tuple.
type Column struct {
	// Int8 Flags for the column. Currently can be either 0 for no flags or 1
	// which marks the column as part of the key.
	Flags uint8
	// String Name of the column.
	Name string
	// Int32 (Oid) OID of the column's data type.
	TypeOID uint32
	// Int32 Type modifier of the column (atttypmod).
	TypeMod int32
}

// Key reports whether the column is part of the replica identity, i.e.
// whether a 'K' old tuple carries a value for it.
func (c Column) Key() bool { return c.Flags&1 != 0 }

// ColumnIndex maps a column name to its position in a Tuple, so callers
// survive columns being added or reordered; it returns -1 if the relation
// has no such column. The scan is linear: tables are narrow, and a map
// would cost an allocation per Relation.
func (r *Relation) ColumnIndex(name string) int {
	for i := range r.Columns {
		if r.Columns[i].Name == name {
			return i
		}
	}
	return -1
}

// Lookup returns the named column's value in t, so callers need not pair
// ColumnIndex with a bounds check; ok is false if the column is absent or t
// is shorter than the relation (a tuple decoded against a stale Relation).
func (r *Relation) Lookup(t Tuple, name string) (v Value, ok bool) {
	i := r.ColumnIndex(name)
	if i < 0 || i >= len(t) {
		return Value{}, false
	}
	return t[i], true
}

// Type describes a non-builtin data type a column uses, so binary or text
// values of custom types can be interpreted by name.
//
//	Byte1('Y') Identifies the message as a type message.
type Type struct {
	// Int32 (Oid) OID of the data type.
	ID uint32
	// String Namespace (empty string for pg_catalog).
	Namespace string
	// String Name of the data type.
	Name string
}

func (*Type) msgType() byte { return 'Y' }

// relationColumnMin is the fewest bytes one column of a Relation can take:
// Int8 flags, an empty String (its NUL), Int32 type OID and Int32 typmod.
const relationColumnMin = 1 + 1 + 4 + 4

func decodeRelation(r *msgReader) *Relation {
	m := &Relation{
		ID:              r.u32("relation id"),
		Namespace:       r.cstring("namespace"),
		Name:            r.cstring("name"),
		ReplicaIdentity: r.u8("replica identity"),
	}
	n := r.count("column count", false, relationColumnMin)
	if n < 0 {
		return m
	}
	m.Columns = make([]Column, n)
	r.unit = "column"
	for i := range m.Columns {
		r.idx = i
		c := &m.Columns[i]
		c.Flags = r.u8("flags")
		c.Name = r.cstring("name")
		c.TypeOID = r.u32("type oid")
		c.TypeMod = r.i32("type modifier")
		if r.err != nil {
			break
		}
	}
	r.idx = -1
	return m
}

func decodeType(r *msgReader) *Type {
	return &Type{
		ID:        r.u32("type oid"),
		Namespace: r.cstring("namespace"),
		Name:      r.cstring("name"),
	}
}

// Relations caches the latest Relation per ID because row messages carry
// only the ID. The zero value is an empty cache ready to use, and it is
// safe for concurrent use.
//
// The cache shares the *Relation it is given: callers must not modify a
// Relation after passing it to Set, nor one returned by Get.
type Relations struct {
	mu sync.RWMutex
	m  map[uint32]*Relation // guarded by mu
}

// Set stores rel under rel.ID, replacing any earlier one, because Postgres
// re-sends a Relation whenever its columns change and the newest one
// describes every tuple that follows. A nil rel is ignored.
func (rs *Relations) Set(rel *Relation) {
	if rel == nil {
		return
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.m == nil {
		rs.m = make(map[uint32]*Relation)
	}
	rs.m[rel.ID] = rel
}

// Get returns the Relation a row message's RelationID refers to. ok is
// false if none has been Set; since Postgres sends a Relation before the
// first row of each table in every replication session, a miss means
// messages were lost or skipped.
func (rs *Relations) Get(id uint32) (rel *Relation, ok bool) {
	rs.mu.RLock()
	defer rs.mu.RUnlock()
	rel, ok = rs.m[id]
	return rel, ok
}
