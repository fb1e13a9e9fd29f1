package doctor_test

import (
	"strings"
	"testing"

	"github.com/repstream/repstream/cdc/doctor"
	"github.com/repstream/repstream/stream"
)

// Every table shape serve refuses is a doctor failure with the exact fix,
// and the shapes serve supports are not.
func TestTableShapes(t *testing.T) {
	dbURL, _ := newDB(t)
	needColumnLists(t, dbURL)
	sqlExec(t, dbURL,
		`CREATE TABLE public.deferred (id int PRIMARY KEY DEFERRABLE, seller_id int, rating int)`,
		`CREATE TABLE public.deferred_full (id int PRIMARY KEY DEFERRABLE, seller_id int, rating int)`,
		`ALTER TABLE public.deferred_full REPLICA IDENTITY FULL`,
		`CREATE TABLE public.by_index (id int PRIMARY KEY, ext uuid NOT NULL UNIQUE, seller_id int, rating int)`,
		`ALTER TABLE public.by_index REPLICA IDENTITY USING INDEX by_index_ext_key`,
		`CREATE TABLE public.index_only (ext uuid NOT NULL UNIQUE, seller_id int, rating int)`,
		`ALTER TABLE public.index_only REPLICA IDENTITY USING INDEX index_only_ext_key`,
		`CREATE TABLE public.parts (id int, at date, seller_id int, rating int, PRIMARY KEY (id, at)) PARTITION BY RANGE (at)`,
		`CREATE TABLE public.parts_1 PARTITION OF public.parts FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')`,
	)
	src := func(table string) stream.Source {
		return stream.Source{Table: table, Subject: "seller:{seller_id}", Score: "rating", Scale: []float64{1, 5}}
	}
	in := input(dbURL, src("deferred"), src("deferred_full"), src("by_index"), src("index_only"), src("parts"))
	rep := doctor.Run(ctx(t), in)
	ch := expect(t, rep, "table.replica_identity:public.deferred", doctor.Fail)
	if !strings.HasPrefix(ch.Fix, `ALTER TABLE "public"."deferred" REPLICA IDENTITY FULL;`) {
		t.Errorf("fix: %s", ch.Fix)
	}
	expect(t, rep, "table.replica_identity:public.deferred_full", doctor.Warn)
	expect(t, rep, "table.replica_identity:public.by_index", doctor.OK)
	expect(t, rep, "table.replica_identity:public.index_only", doctor.OK)
	expect(t, rep, "table.primary_key:public.index_only", doctor.OK)
	p, _ := doctor.PlanPublication(ctx(t), in)
	if !strings.Contains(p.SQL(), "publish_via_partition_root = true") || !strings.Contains(p.SQL(), `"public"."deferred_full",`) ||
		!strings.Contains(p.SQL(), `"public"."by_index" ("ext", "rating", "seller_id")`) {
		t.Errorf("plan:\n%s", p.SQL())
	}

	// A DBA's publication of the partitioned table without publish_via_partition_root.
	sqlExec(t, dbURL, `CREATE PUBLICATION pub1 FOR TABLE public.parts`)
	rep = doctor.Run(ctx(t), input(dbURL, src("parts")))
	ch = expect(t, rep, "publication.via_root:public.parts", doctor.Fail)
	if !strings.HasPrefix(ch.Fix, `ALTER PUBLICATION "pub1" SET (publish_via_partition_root = true);`) {
		t.Errorf("fix: %s", ch.Fix)
	}
	stmt, _, _ := strings.Cut(ch.Fix, " -- ")
	sqlExec(t, dbURL, stmt)
	rep = doctor.Run(ctx(t), input(dbURL, src("parts")))
	expect(t, rep, "publication.via_root:public.parts", doctor.OK)
	expect(t, rep, "publication.table:public.parts", doctor.OK)
}

// A source serve stopped while running (its table changed under it) is
// named in the epoch finding: the next start reloads it.
func TestStoppedSourceEpoch(t *testing.T) {
	dbURL, _ := newDB(t)
	sqlExec(t, dbURL, pubDDL(t, dbURL), `SELECT pg_create_logical_replication_slot('slot1', 'pgoutput')`)
	writeMeta(t, dbURL, "slot1", prior)
	sqlExec(t, dbURL, `UPDATE repstream.meta SET sources_hash = 'stopped:source_column_missing:public.reviews'`)
	rep := doctor.Run(ctx(t), input(dbURL))
	ch := expect(t, rep, "epoch", doctor.Warn)
	if !strings.Contains(ch.Message, "a source stopped while serving (source_column_missing:public.reviews") {
		t.Errorf("epoch: %s", ch.Message)
	}
}
