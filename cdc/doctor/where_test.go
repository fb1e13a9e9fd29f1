package doctor_test

import (
	"strings"
	"testing"

	"github.com/repstream/repstream/cdc/doctor"
	"github.com/repstream/repstream/stream"
)

// A where value its column cannot hold fails with its key, as serve refuses
// it; one the column holds in another spelling passes.
func TestWhereValueNotOfTheColumn(t *testing.T) {
	dbURL, _ := newDB(t)
	sqlExec(t, dbURL, `CREATE TABLE public.items (sku char(4) PRIMARY KEY, seller int, rating int, published boolean)`)
	bad := stream.Source{Table: "public.items", Subject: "seller:{seller}", Score: "rating", Scale: []float64{1, 5},
		Where: map[string]any{"published": "maybe"}}
	rep := doctor.Run(ctx(t), input(dbURL, reviewsSource, bad))
	expectExit(t, rep, doctor.ExitFail)
	ch := expect(t, rep, "config:sources[1].where.published", doctor.Fail)
	if !strings.Contains(ch.Message, `"maybe" would match no row: published is boolean`) {
		t.Errorf("message: %s", ch.Message)
	}

	good := bad
	good.Where = map[string]any{"published": "yes", "sku": "ab"}
	rep = doctor.Run(ctx(t), input(dbURL, reviewsSource, good))
	for _, c := range rep.Checks {
		if strings.Contains(c.Name, "where") {
			t.Errorf("%s: %s %s", c.Name, c.Status, c.Message)
		}
	}
}
