package stream

import (
	"strings"
	"testing"

	"github.com/repstream/repstream/cdc"
)

// TestInvalidation: each way Postgres invalidates a slot is named with what
// prevents it, from 16's conflicting flag and 17's invalidation_reason.
func TestInvalidation(t *testing.T) {
	for _, c := range []struct {
		x    cdc.SlotExtra
		want []string
	}{
		{cdc.SlotExtra{Conflicting: true}, []string{"recovery conflict", "hot_standby_feedback = on"}},
		{cdc.SlotExtra{Conflicting: true, InvalidationReason: "rows_removed"}, []string{"recovery conflict", "rows_removed", "primary_slot_name"}},
		{cdc.SlotExtra{Conflicting: true, InvalidationReason: "wal_level_insufficient"}, []string{"wal_level", "set it back to logical"}},
		{cdc.SlotExtra{InvalidationReason: "wal_removed"}, []string{"max_slot_wal_keep_size"}},
		{cdc.SlotExtra{InvalidationReason: "idle_timeout"}, []string{"idle_replication_slot_timeout"}},
		{cdc.SlotExtra{InvalidationReason: "something_new"}, []string{"(something_new)"}},
	} {
		got := invalidation(c.x)
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("invalidation(%+v) = %q, want it to say %q", c.x, got, w)
			}
		}
	}
	if got := invalidation(cdc.SlotExtra{}); got != "" {
		t.Errorf("a valid slot: invalidation = %q, want empty", got)
	}
}
