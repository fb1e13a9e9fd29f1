package cdc

import (
	"context"
	"fmt"
)

// ServerVersion is the server's server_version_num (170004 for 17.4):
// replication features differ between majors.
func ServerVersion(ctx context.Context, q Querier) (int, error) {
	var n int
	if err := q.QueryRow(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&n); err != nil {
		return 0, fmt.Errorf("cdc: read server_version_num: %w", err)
	}
	return n, nil
}

// Version thresholds of the replication features repstream adapts to.
const (
	// V15 brought publication column lists and row filters.
	V15 = 150000
	// V16 brought logical decoding on standbys and pgoutput proto_version 4.
	V16 = 160000
	// V17 brought failover slots (CREATE_REPLICATION_SLOT ... FAILOVER,
	// sync_replication_slots) and pg_replication_slots.invalidation_reason.
	V17 = 170000
	// V18 brought pg_replication_slots.inactive_since ... idle_replication_slot_timeout.
	V18 = 180000
)
