package doctor

import (
	"context"
	"fmt"
	"strings"

	"github.com/repstream/repstream/sql/migrations"
)

// checkMigrations runs serve's own preflight (migrations.Inspect, which
// only reads): what it finds missing, serve would fail on.
func (r *run) checkMigrations(ctx context.Context) error {
	st, err := migrations.Inspect(ctx, r.store)
	if err != nil {
		return err
	}
	if len(st.Missing) > 0 {
		what, fixes := make([]string, len(st.Missing)), make([]string, len(st.Missing))
		for i, m := range st.Missing {
			what[i], fixes[i] = m.What, m.Fix
		}
		r.add("migrations", Fail, strings.Join(what, "; ")+"; serve cannot start", strings.Join(fixes, "\n"))
		return nil
	}
	switch {
	case st.Dirty:
		r.add("migrations", Fail, fmt.Sprintf("repstream's schema is dirty at version %d: a migration failed half-way; serve repairs it at start when the schema's marker says whether it committed", st.Applied),
			"`repstream migrate up` (as the role serve uses) to repair it now")
	case st.Applied > st.Latest:
		r.add("migrations", Fail, fmt.Sprintf("repstream's schema is at version %d, newer than this binary's %d", st.Applied, st.Latest),
			"run a repstream release at least as new as the one that migrated this database")
	case st.Current():
		r.add("migrations", OK, fmt.Sprintf("repstream's schema is at version %d, the latest", st.Applied), "")
	default:
		r.add("migrations", Warn, fmt.Sprintf("repstream's schema is at version %d of %d; serve applies the rest at start", st.Applied, st.Latest),
			"`repstream migrate up` to apply them now")
	}
	return nil
}
