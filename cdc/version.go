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

// InHotStandby says whether conn's server was a standby when it last
// reported in_hot_standby (PostgreSQL 14+ reports it at connect and when
// it changes, so a promotion turns it off).
func InHotStandby(conn *pgconn.PgConn) bool {
	return conn.ParameterStatus("in_hot_standby") == "on"
}

// InRecovery says whether q's server is a standby (still in recovery).
func InRecovery(ctx context.Context, q Querier) (bool, error) {
	var in bool
	if err := q.QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&in); err != nil {
		return false, fmt.Errorf("cdc: read pg_is_in_recovery: %w", err)
	}
	return in, nil
}

// LogStandbySnapshot asks the primary q is connected to for a
// running-transactions WAL record (pg_log_standby_snapshot, 16+): a
// logical slot being created on its standby waits for one, which the
// primary otherwise logs only every 15 s, and not at all while idle.
func LogStandbySnapshot(ctx context.Context, q Querier) error {
	if _, err := q.Exec(ctx, `SELECT pg_log_standby_snapshot()`); err != nil {
		return fmt.Errorf("cdc: pg_log_standby_snapshot: %w", err)
	}
	return nil
}
