package cdc

import (
	"fmt"
	"sync"
	"testing"
)

var votesRel = &Relation{
	ID:              16385,
	Namespace:       "public",
	Name:            "votes",
	ReplicaIdentity: 'd',
	Columns: []Column{
		{Flags: 1, Name: "id", TypeOID: 20, TypeMod: -1},
		{Flags: 0, Name: "subject", TypeOID: 25, TypeMod: -1},
		{Flags: 0, Name: "score", TypeOID: 1700, TypeMod: (10<<16 | 2) + 4}, // numeric(10,2): ((p<<16)|s) + VARHDRSZ
	},
}

var relationCases = []decodeCase{
	{
		name: "relation",
		in: wireMsg{}.
			b('R').        // Byte1('R')
			oid(16385).    // Int32 relation OID
			str("public"). // String namespace
			str("votes").  // String relation name
			b('d').        // Int8 replica identity (relreplident)
			cols(3).       // Int16 number of columns
			b(1).          // Int8 flags: part of the key
			str("id").     //   String column name
			oid(20).       //   Int32 type OID (int8)
			typmod(-1).    //   Int32 atttypmod
			b(0).str("subject").oid(25).typmod(-1).
			b(0).str("score").oid(1700).typmod(655366).
			bytes(),
		want: votesRel,
	},
	{
		// pg_catalog is sent as the empty namespace.
		name: "relation no columns, pg_catalog, full identity",
		in:   wireMsg{}.b('R').oid(1).str("").str("empty").b('f').cols(0).bytes(),
		want: &Relation{ID: 1, Namespace: "", Name: "empty", ReplicaIdentity: 'f', Columns: []Column{}},
	},
	{
		name: "relation unicode names and empty column name",
		in:   wireMsg{}.b('R').oid(2).str("схема").str("表").b('n').cols(1).b(0).str("").oid(25).typmod(0).bytes(),
		want: &Relation{ID: 2, Namespace: "схема", Name: "表", ReplicaIdentity: 'n',
			Columns: []Column{{Name: "", TypeOID: 25, TypeMod: 0}}},
	},
	{
		name: "type",
		in: wireMsg{}.
			b('Y').        // Byte1('Y')
			oid(16400).    // Int32 type OID
			str("public"). // String namespace
			str("mood").   // String type name
			bytes(),
		want: &Type{ID: 16400, Namespace: "public", Name: "mood"},
	},
}

func TestMsgRelation(t *testing.T) { runDecodeCases(t, relationCases) }

func TestRelationColumnKey(t *testing.T) {
	for flags, want := range map[uint8]bool{0: false, 1: true, 3: true, 2: false} {
		if got := (Column{Flags: flags}).Key(); got != want {
			t.Errorf("Column{Flags: %d}.Key() = %v, want %v", flags, got, want)
		}
	}
}

func TestRelationColumnIndex(t *testing.T) {
	for name, want := range map[string]int{"id": 0, "subject": 1, "score": 2, "missing": -1, "": -1, "ID": -1} {
		if got := votesRel.ColumnIndex(name); got != want {
			t.Errorf("ColumnIndex(%q) = %d, want %d", name, got, want)
		}
	}
	if got := (&Relation{}).ColumnIndex("id"); got != -1 {
		t.Errorf("empty relation ColumnIndex = %d, want -1", got)
	}
}

func TestRelationLookup(t *testing.T) {
	row := Tuple{{Kind: ValueText, Data: []byte("7")}, {Kind: ValueNull}, {Kind: ValueText, Data: []byte("1.50")}}
	if v, ok := votesRel.Lookup(row, "score"); !ok || string(v.Data) != "1.50" {
		t.Errorf("Lookup(score) = %+v, %v", v, ok)
	}
	if v, ok := votesRel.Lookup(row, "subject"); !ok || v.Kind != ValueNull {
		t.Errorf("Lookup(subject) = %+v, %v; want a NULL value", v, ok)
	}
	if _, ok := votesRel.Lookup(row, "nope"); ok {
		t.Error("Lookup(nope) ok")
	}
	// A tuple shorter than the relation (decoded against a stale one).
	if _, ok := votesRel.Lookup(row[:2], "score"); ok {
		t.Error("Lookup past the end of a short tuple ok")
	}
}

// TestRelationsResend follows a table through ALTER TABLE ADD COLUMN:
// Postgres re-sends the Relation and rows after it have one more value.
func TestRelationsResend(t *testing.T) {
	var rs Relations // the zero value is ready to use
	if _, ok := rs.Get(16385); ok {
		t.Fatal("Get on an empty cache ok")
	}
	rs.Set(nil) // ignored, no panic

	before, err := Decode(relationCases[0].in)
	if err != nil {
		t.Fatal(err)
	}
	rs.Set(before.(*Relation))

	after, err := Decode(wireMsg{}.b('R').oid(16385).str("public").str("votes").b('d').cols(4).
		b(1).str("id").oid(20).typmod(-1).
		b(0).str("subject").oid(25).typmod(-1).
		b(0).str("score").oid(1700).typmod(655366).
		b(0).str("weight").oid(23).typmod(-1).bytes())
	if err != nil {
		t.Fatal(err)
	}
	rs.Set(after.(*Relation))

	rel, ok := rs.Get(16385)
	if !ok || rel != after {
		t.Fatalf("Get after re-send = %p, %v; want the newer relation %p", rel, ok, after)
	}
	if got := rel.ColumnIndex("weight"); got != 3 {
		t.Fatalf("ColumnIndex(weight) = %d, want 3", got)
	}
	ins, err := Decode(wireMsg{}.b('I').oid(16385).marker('N').cols(4).text("1").text("s").text("2.00").text("5").bytes())
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := rel.Lookup(ins.(*Insert).New, "weight"); !ok || string(v.Data) != "5" {
		t.Fatalf("Lookup(weight) = %+v, %v", v, ok)
	}

	// Dropping a column re-sends it again, narrower.
	rs.Set(&Relation{ID: 16385, Name: "votes", Columns: []Column{{Name: "id"}}})
	if rel, _ := rs.Get(16385); rel.ColumnIndex("weight") != -1 || len(rel.Columns) != 1 {
		t.Fatalf("after drop: %+v", rel)
	}
	if _, ok := rs.Get(1); ok {
		t.Fatal("Get(unknown id) ok")
	}
}

func TestRelationsConcurrent(t *testing.T) {
	var rs Relations
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				id := uint32(i % 16)
				rs.Set(&Relation{ID: id, Name: fmt.Sprint(g)})
				if rel, ok := rs.Get(id); !ok || rel.ID != id {
					t.Errorf("Get(%d) = %+v, %v", id, rel, ok)
					return
				}
			}
		}()
	}
	wg.Wait()
}
