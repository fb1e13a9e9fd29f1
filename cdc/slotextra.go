package cdc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// SlotExtra is what newer servers say of a slot beyond Slot. Only the
// columns this server's pg_replication_slots has are read; the others
// leave their fields zero.
type SlotExtra struct {
	// Conflicting (16+) means a logical slot on a standby was invalidated by
	// a recovery conflict.
	Conflicting bool
	// InvalidationReason (17+): wal_removed, rows_removed,
	// wal_level_insufficient, idle_timeout (18); "" while the slot is valid.
	InvalidationReason string
	// InactiveSince (17+) is when the slot was last released; nil while in use.
	InactiveSince *time.Time
	// Failover (17+) means standbys with sync_replication_slots keep a copy.
	Failover bool
	// Synced (17+) means this is a standby's copy of a primary's failover slot.
	Synced bool
	// HasFailover says the server has failover slots (the failover column).
	HasFailover bool
}

// slotExtraColumns are the optional columns, each with its zero value.
var slotExtraColumns = []struct{ name, zero string }{
	{"conflicting", "false"},
	{"invalidation_reason", "''"},
	{"inactive_since", "NULL::timestamptz"},
	{"failover", "false"},
	{"synced", "false"},
}

// LookupSlotExtra reads SlotExtra for slot name; ok is false when there is no such slot.
func LookupSlotExtra(ctx context.Context, q Querier, name string) (x SlotExtra, ok bool, err error) {
	var have []string
	if err := q.QueryRow(ctx, `SELECT array_agg(attname::text) FROM pg_attribute WHERE attrelid = 'pg_catalog.pg_replication_slots'::regclass AND attnum > 0`).Scan(&have); err != nil {
		return x, false, fmt.Errorf("cdc: read the columns of pg_replication_slots: %w", err)
	}
	cols := make([]string, len(slotExtraColumns))
	for i, c := range slotExtraColumns {
		cols[i] = c.zero
		for _, h := range have {
			if h == c.name {
				cols[i] = "coalesce(" + c.name + ", " + c.zero + ")"
				x.HasFailover = x.HasFailover || h == "failover"
			}
		}
	}
	err = q.QueryRow(ctx, `SELECT `+strings.Join(cols, ", ")+` FROM pg_replication_slots WHERE slot_name = $1`, name).
		Scan(&x.Conflicting, &x.InvalidationReason, &x.InactiveSince, &x.Failover, &x.Synced)
	if errors.Is(err, pgx.ErrNoRows) {
		return SlotExtra{HasFailover: x.HasFailover}, false, nil
	}
	if err != nil {
		return SlotExtra{}, false, fmt.Errorf("cdc: look up slot %s: %w", name, err)
	}
	return x, true, nil
}
