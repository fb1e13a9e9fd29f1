package cdc

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
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
	// sync_replication_slots) and pg_replication_slots' failover, synced,
	// inactive_since and invalidation_reason.
	V17 = 170000
	// V18 brought idle_replication_slot_timeout (invalidation_reason 'idle_timeout').
	V18 = 180000
)

// serverMajor is the major version conn's server reported at connect (0 if
// unknown); a replication connection cannot run SQL to ask.
func serverMajor(conn *pgconn.PgConn) int {
	v := conn.ParameterStatus("server_version")
	if i := strings.IndexFunc(v, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		v = v[:i]
	}
	n, _ := strconv.Atoi(v)
	return n
}
