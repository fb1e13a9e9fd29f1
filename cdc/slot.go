package cdc

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ConnectReplication opens a connection in logical replication mode
// (replication=database) to the database of databaseURL, with fixed output
// settings so pgoutput prints values as a ConnectSnapshot session reads them.
func ConnectReplication(ctx context.Context, databaseURL string) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("cdc: database_url: %w", err)
	}
	cfg.RuntimeParams["replication"] = "database"
	cfg.RuntimeParams["application_name"] = ReplicationAppName()
	setOutputSettings(cfg)
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("cdc: connect for replication: %w", err)
	}
	if err := checkOutputSettings(conn); err != nil {
		conn.Close(ctx)
		return nil, err
	}
	return conn, nil
}

// System identifies the database cluster and its history; an epoch is bound to it.
type System struct {
	ID       string
	Timeline int32
	XLogPos  pglogrepl.LSN
}

// IdentifySystem asks the server who it is.
func IdentifySystem(ctx context.Context, conn *pgconn.PgConn) (System, error) {
	r, err := pglogrepl.IdentifySystem(ctx, conn)
	if err != nil {
		return System{}, fmt.Errorf("cdc: identify system: %w", err)
	}
	return System{ID: r.SystemID, Timeline: r.Timeline, XLogPos: r.XLogPos}, nil
}

// Slot is a row of pg_replication_slots, what a DBA needs to see.
type Slot struct {
	Name              string
	Plugin            string
	Database          string
	Active            bool
	ActivePID         int32
	RestartLSN        pglogrepl.LSN
	ConfirmedFlushLSN pglogrepl.LSN
	WALStatus         string // reserved, extended, unreserved, lost
	RetainedBytes     int64  // WAL the slot holds back: current LSN - restart_lsn
	LagBytes          int64  // current LSN - confirmed_flush_lsn
}

// Querier is the subset of pgx.Conn and pgxpool.Pool the catalog checks need.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// walPosition is the server's current WAL position: the replay position
// on a standby, where pg_current_wal_lsn() is an error.
const walPosition = `(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)`

// LookupSlot returns the slot, or ok=false when it does not exist.
func LookupSlot(ctx context.Context, q Querier, name string) (s Slot, ok bool, err error) {
	var restart, confirmed *string
	var pid *int32
	var walStatus *string
	var retained, lag *int64
	err = q.QueryRow(ctx, `
SELECT slot_name, coalesce(plugin, ''), coalesce(database, ''), active, active_pid,
       restart_lsn::text, confirmed_flush_lsn::text, wal_status,
       (`+walPosition+` - restart_lsn)::bigint,
       (`+walPosition+` - confirmed_flush_lsn)::bigint
FROM pg_replication_slots WHERE slot_name = $1`, name).Scan(
		&s.Name, &s.Plugin, &s.Database, &s.Active, &pid, &restart, &confirmed, &walStatus, &retained, &lag)
	if errors.Is(err, pgx.ErrNoRows) {
		return Slot{}, false, nil
	}
	if err != nil {
		return Slot{}, false, fmt.Errorf("cdc: look up slot %s: %w", name, err)
	}
	if pid != nil {
		s.ActivePID = *pid
	}
	if restart != nil {
		s.RestartLSN, _ = pglogrepl.ParseLSN(*restart)
	}
	if confirmed != nil {
		s.ConfirmedFlushLSN, _ = pglogrepl.ParseLSN(*confirmed)
	}
	if walStatus != nil {
		s.WALStatus = *walStatus
	}
	if retained != nil {
		s.RetainedBytes = *retained
	}
	if lag != nil {
		s.LagBytes = *lag
	}
	return s, true, nil
}

// CreatedSlot is a new slot with the snapshot it exported: rows visible in
// the snapshot plus changes streamed from ConsistentPoint are the whole table.
type CreatedSlot struct {
	ConsistentPoint pglogrepl.LSN
	SnapshotName    string
}

// CreateSlot creates a logical pgoutput slot and exports its snapshot. The
// snapshot stays importable only until the next command on conn, so load it
// before starting replication on the same connection. On PostgreSQL 17 and
// later the slot is a failover slot: a standby with sync_replication_slots
// keeps a copy, so a promotion does not lose it. On a standby (16+), which
// cannot have failover slots, the command waits for the primary's next
// running-transactions record (see LogStandbySnapshot).
func CreateSlot(ctx context.Context, conn *pgconn.PgConn, name string) (CreatedSlot, error) {
	var r pglogrepl.CreateReplicationSlotResult
	var err error
	if serverMajor(conn) >= 17 && !InHotStandby(conn) {
		r, err = pglogrepl.ParseCreateReplicationSlot(conn.Exec(ctx,
			fmt.Sprintf("CREATE_REPLICATION_SLOT %s LOGICAL pgoutput (SNAPSHOT 'export', FAILOVER true)", quoteIdent(name))))
	} else {
		r, err = pglogrepl.CreateReplicationSlot(ctx, conn, name, "pgoutput",
			pglogrepl.CreateReplicationSlotOptions{SnapshotAction: "EXPORT_SNAPSHOT", Mode: pglogrepl.LogicalReplication})
	}
	if err != nil {
		return CreatedSlot{}, classify(fmt.Errorf("cdc: create slot %s: %w", name, err))
	}
	lsn, err := pglogrepl.ParseLSN(r.ConsistentPoint)
	if err != nil {
		return CreatedSlot{}, fmt.Errorf("cdc: create slot %s: consistent point %q: %w", name, r.ConsistentPoint, err)
	}
	return CreatedSlot{ConsistentPoint: lsn, SnapshotName: r.SnapshotName}, nil
}

// DropSlot drops the slot if it exists and is not active.
func DropSlot(ctx context.Context, q Querier, name string) error {
	_, err := q.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, name)
	if err != nil {
		return classify(fmt.Errorf("cdc: drop slot %s: %w", name, err))
	}
	return nil
}

// SafeURL is databaseURL with its password removed, for logs and status.
func SafeURL(databaseURL string) string {
	u, err := url.Parse(databaseURL)
	if err != nil || u.User == nil {
		if i := strings.Index(databaseURL, "password="); i >= 0 {
			return databaseURL[:i] + "password=REDACTED"
		}
		return databaseURL
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "REDACTED")
	}
	return u.String()
}

// ProcessTag names this process, host and PID, in the application_name
// of repstream's connections, so a standby (and a DBA) can tell whom a slot
// belongs to, and a standby can end every connection of a holder that
// stopped answering.
func ProcessTag() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s pid %d", host, os.Getpid())
}

// ReplicationAppName is the application_name of repstream's replication
// connections.
func ReplicationAppName() string { return appName("repstream " + ProcessTag()) }

// IsReplicationAppName reports whether an application_name is that of a
// repstream replication connection (older versions used "repstream").
func IsReplicationAppName(name string) bool {
	rest, ok := strings.CutPrefix(name, "repstream ")
	return name == "repstream" || (ok && strings.Contains(rest, " pid "))
}

// WriterAppName is the application_name of the store writer's connection.
func WriterAppName() string { return appName("repstream-writer " + ProcessTag()) }

func appName(s string) string {
	if len(s) > 63 { // NAMEDATALEN-1
		s = s[:63]
	}
	return s
}

// HistoryContinues says whether timeline to's history passes through
// timeline from at least up to lsn: after a promotion the new timeline
// shares the old one's WAL up to its switchpoint, so a position at or
// before it means the same changes on both.
func HistoryContinues(ctx context.Context, conn *pgconn.PgConn, from, to int32, lsn pglogrepl.LSN) (bool, error) {
	if from == to {
		return true, nil
	}
	if to < from || to < 2 {
		return false, nil
	}
	h, err := pglogrepl.TimelineHistory(ctx, conn, to)
	if err != nil {
		return false, fmt.Errorf("cdc: timeline %d history: %w", to, err)
	}
	return historyContinues(string(h.Content), from, lsn), nil
}

// historyContinues reads a timeline history file: each line is "parent
// timeline, switchpoint, reason", where the parent's WAL was followed up
// to the switchpoint.
func historyContinues(content string, from int32, lsn pglogrepl.LSN) bool {
	for _, line := range strings.Split(content, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		tli, err := strconv.ParseInt(f[0], 10, 32)
		if err != nil || int32(tli) != from {
			continue
		}
		sw, err := pglogrepl.ParseLSN(f[1])
		return err == nil && lsn <= sw
	}
	return false
}
