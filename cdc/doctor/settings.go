package doctor

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/repstream/repstream/cdc"
)

// errStop ends a run early after a check already said why (an unsupported server).
var errStop = errors.New("doctor: stop")

// connectFix says what to change when the connection itself failed.
func connectFix(databaseURL string, err error) string {
	db, role, hostport := "DB", "ROLE", "host:port"
	if u, perr := url.Parse(databaseURL); perr == nil && u.Host != "" {
		hostport = u.Host
		if u.User != nil {
			role = u.User.Username()
		}
		if p := strings.TrimPrefix(u.Path, "/"); p != "" {
			db = p
		}
	}
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		switch pg.Code {
		case "28P01":
			return "fix the password for role " + role + " in database_url (or ~/.pgpass); a DBA can reset it: ALTER ROLE " + quoteIdent(role) + " PASSWORD '...';"
		case "28000":
			if strings.Contains(pg.Message, "does not exist") {
				return "CREATE ROLE " + quoteIdent(role) + " LOGIN PASSWORD '...'; -- or fix the user in database_url"
			}
			return fmt.Sprintf("add a pg_hba.conf line such as `host %s %s <client address>/32 scram-sha-256`, then SELECT pg_reload_conf();", db, role)
		case "3D000":
			return "CREATE DATABASE " + quoteIdent(db) + "; -- or fix the database name in database_url"
		case "53300":
			return "the server has no free connection: close idle sessions or raise max_connections (ALTER SYSTEM SET max_connections = ...; then restart Postgres)"
		case "57P03":
			return "Postgres is starting up or shutting down: wait, then run doctor again"
		}
		return "see the server's message above; fix database_url or the server accordingly"
	}
	var perr *pgconn.ParseConfigError
	if errors.As(err, &perr) {
		return "fix database_url: postgres://USER[:PASSWORD]@HOST:5432/DATABASE?sslmode=..."
	}
	return "start Postgres, or fix " + hostport + " in database_url; check the server's listen_addresses and port, and any firewall between"
}

// checkServer records who doctor is connected as, on which platform, and
// says what the server's version means for repstream.
func (r *run) checkServer(ctx context.Context) error {
	var ver, num string
	if err := r.conn.QueryRow(ctx, `SELECT current_setting('server_version'), current_setting('server_version_num')`).Scan(&ver, &num); err != nil {
		return fmt.Errorf("read server version: %w", err)
	}
	r.serverVersion, _ = strconv.Atoi(num)
	if err := r.loadRole(ctx); err != nil {
		return err
	}
	if err := r.detectPlatform(ctx); err != nil {
		return err
	}
	r.add("connect", OK, fmt.Sprintf("connected to database %s as role %s (PostgreSQL %s)", r.role.database, r.role.name, ver), "")
	if err := r.conn.QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&r.standby); err != nil {
		return fmt.Errorf("read pg_is_in_recovery: %w", err)
	}
	st, msg, fix := versionMeaning(r.serverVersion, ver)
	r.add("server_version", st, msg, fix)
	return nil
}

// versionMeaning says what a server version gives and lacks.
func versionMeaning(num int, ver string) (Status, string, string) {
	const failover17 = "upgrade to PostgreSQL 17 or newer to keep the slot across a failover"
	switch {
	case num < 140000:
		return Fail, fmt.Sprintf("PostgreSQL %s: repstream needs 14 or newer (pgoutput's logical messages, which carry its heartbeat)", ver),
			"upgrade the server to PostgreSQL 14 or newer (17 or newer to survive a failover without a new epoch)"
	case num < cdc.V15:
		return Warn, fmt.Sprintf("PostgreSQL %s: supported, but publications have no column lists: every column of the source tables (review bodies too) is sent to repstream, which drops what it does not need; and a failover to a standby loses the slot: a new epoch, clients reset", ver),
			"upgrade to PostgreSQL 15 or newer to publish only the needed columns; " + failover17
	case num < cdc.V17:
		return OK, fmt.Sprintf("PostgreSQL %s: column lists publish only the needed columns; a failover to a standby loses the slot (failover slots need 17): repstream then starts a new epoch and clients reset", ver), ""
	}
	return OK, fmt.Sprintf("PostgreSQL %s: column lists publish only the needed columns; failover slots can keep repstream's slot on a standby across a promotion (see the failover checks)", ver), ""
}

// setting is one row of pg_settings.
type setting struct {
	val  string
	unit string
}

func (r *run) settings(ctx context.Context, names ...string) (map[string]setting, error) {
	rows, err := r.conn.Query(ctx, `SELECT name, setting, coalesce(unit, '') FROM pg_settings WHERE name = ANY($1)`, names)
	if err != nil {
		return nil, fmt.Errorf("read settings: %w", err)
	}
	defer rows.Close()
	out := map[string]setting{}
	for rows.Next() {
		var n string
		var s setting
		if err := rows.Scan(&n, &s.val, &s.unit); err != nil {
			return nil, fmt.Errorf("read settings: %w", err)
		}
		out[n] = s
	}
	return out, rows.Err()
}

// checkSettings checks wal_level, slot and sender headroom and the WAL cap.
func (r *run) checkSettings(ctx context.Context) error {
	if r.serverVersion < 140000 {
		return errStop
	}
	set, err := r.settings(ctx, "wal_level", "max_replication_slots", "max_wal_senders", "max_slot_wal_keep_size")
	if err != nil {
		return err
	}
	if wl := set["wal_level"].val; wl == "logical" {
		r.add("wal_level", OK, "wal_level = logical", "")
	} else {
		r.add("wal_level", Fail, fmt.Sprintf("wal_level = %s; logical replication needs wal_level = logical", wl),
			r.walLevelFix())
	}

	var slots int
	var exists bool
	if err := r.conn.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE slot_name = $1) > 0 FROM pg_replication_slots`, r.in.Slot).Scan(&slots, &exists); err != nil {
		return fmt.Errorf("count replication slots: %w", err)
	}
	maxSlots, _ := strconv.Atoi(set["max_replication_slots"].val)
	need := slots
	if !exists {
		need++
	}
	switch {
	case need > maxSlots:
		r.add("max_replication_slots", Fail, fmt.Sprintf("max_replication_slots = %d, %d in use: no room for slot %s", maxSlots, slots, r.in.Slot),
			fmt.Sprintf("ALTER SYSTEM SET max_replication_slots = %d; -- then restart Postgres (or drop an unused slot: SELECT pg_drop_replication_slot('name');)", need+4))
	case need == maxSlots:
		r.add("max_replication_slots", Warn, fmt.Sprintf("max_replication_slots = %d, %d in use counting repstream's: none to spare for another consumer", maxSlots, need),
			fmt.Sprintf("ALTER SYSTEM SET max_replication_slots = %d; -- then restart Postgres", need+4))
	default:
		r.add("max_replication_slots", OK, fmt.Sprintf("max_replication_slots = %d, %d in use counting repstream's", maxSlots, need), "")
	}

	var senders int
	if err := r.conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'`).Scan(&senders); err != nil {
		return fmt.Errorf("count WAL senders: %w", err)
	}
	maxSenders, _ := strconv.Atoi(set["max_wal_senders"].val)
	note := ""
	if !r.role.readAllStats {
		note = " (other roles' senders may be invisible to this role)"
	}
	switch need := senders + 1; {
	case need > maxSenders:
		r.add("max_wal_senders", Fail, fmt.Sprintf("max_wal_senders = %d, %d in use%s: no room for repstream's replication connection", maxSenders, senders, note),
			fmt.Sprintf("ALTER SYSTEM SET max_wal_senders = %d; -- then restart Postgres", need+4))
	case need == maxSenders:
		r.add("max_wal_senders", Warn, fmt.Sprintf("max_wal_senders = %d, %d in use counting repstream's%s: none to spare", maxSenders, need, note),
			fmt.Sprintf("ALTER SYSTEM SET max_wal_senders = %d; -- then restart Postgres", need+4))
	default:
		r.add("max_wal_senders", OK, fmt.Sprintf("max_wal_senders = %d, %d in use counting repstream's%s", maxSenders, need, note), "")
	}

	keep := set["max_slot_wal_keep_size"]
	if keep.val == "-1" {
		r.add("max_slot_wal_keep_size", Warn, "max_slot_wal_keep_size = -1 (unlimited): a stopped repstream makes its slot keep WAL until the disk fills",
			"ALTER SYSTEM SET max_slot_wal_keep_size = '50GB'; SELECT pg_reload_conf(); -- size it below the free space of pg_wal's disk")
	} else {
		r.add("max_slot_wal_keep_size", OK, fmt.Sprintf("max_slot_wal_keep_size = %s%s", keep.val, keep.unit), "")
	}
	return nil
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func quoteLiteral(s string) string { return `'` + strings.ReplaceAll(s, `'`, `''`) + `'` }
