package doctor

import (
	"context"
	"fmt"
	"strings"

	"github.com/repstream/repstream/cdc"
)

// checkFailover checks, on PostgreSQL 17 and later, what keeps repstream's
// slot across a promotion: on a primary, the slot's failover flag and
// synchronized_standby_slots; on a standby (doctor pointed at it), the
// settings that make it keep a synced copy. Before 17 a promotion always
// loses the slot: server_version already says so.
func (r *run) checkFailover(ctx context.Context) error {
	if r.serverVersion < cdc.V17 || r.in.Slot == "" {
		if r.standby {
			r.add("failover.slot", Warn, fmt.Sprintf("PostgreSQL %d has no failover slots: when this standby is promoted repstream's slot is not here, and repstream starts a new epoch (clients reset)", r.serverVersion/10000),
				"upgrade to PostgreSQL 17 or newer and configure failover slots (see the README)")
		}
		return nil
	}
	if r.standby {
		return r.checkStandby(ctx)
	}
	x, ok, err := cdc.LookupSlotExtra(ctx, r.conn, r.in.Slot)
	if err != nil {
		return err
	}
	switch {
	case !ok:
		r.add("failover.slot", OK, fmt.Sprintf("serve will create slot %s with failover = true: a standby with sync_replication_slots = on keeps a copy", r.in.Slot), "")
	case x.Failover:
		r.add("failover.slot", OK, fmt.Sprintf("slot %s has failover = true: standbys with sync_replication_slots = on keep a copy", r.in.Slot), "")
	default:
		r.add("failover.slot", Warn, fmt.Sprintf("slot %s has failover = false: a promoted standby will not have it, and repstream starts a new epoch (clients reset)", r.in.Slot),
			fmt.Sprintf("with repstream stopped: psql \"%s\" -c 'ALTER_REPLICATION_SLOT %s (FAILOVER true)'", replicationURL(r.in.DatabaseURL), quoteIdent(r.in.Slot)))
	}

	// Physical standbys streaming from here, by their slots.
	var physical []string
	var standbys int
	err = r.conn.QueryRow(ctx, `
SELECT count(*), coalesce(array_agg(s.slot_name::text ORDER BY s.slot_name) FILTER (WHERE s.slot_name IS NOT NULL), '{}')
FROM pg_stat_replication r JOIN pg_stat_activity a ON a.pid = r.pid AND a.datname IS NULL -- physical walsenders have no database
LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid AND s.slot_type = 'physical'`).Scan(&standbys, &physical)
	if err != nil {
		return fmt.Errorf("read the standbys: %w", err)
	}
	set, err := r.settings(ctx, "synchronized_standby_slots")
	if err != nil {
		return err
	}
	sss := set["synchronized_standby_slots"].val
	switch {
	case standbys == 0:
		r.add("failover.standbys", OK, "no physical standby streams from this server (to check one, run doctor with its database_url)", "")
	case len(physical) < standbys:
		r.add("failover.standbys", Warn, fmt.Sprintf("%d physical standby(s) stream without a replication slot: a standby needs one (primary_slot_name) to keep a synced copy of repstream's slot", standbys-len(physical)),
			"SELECT pg_create_physical_replication_slot('standby1'); -- then on the standby: ALTER SYSTEM SET primary_slot_name = 'standby1'; SELECT pg_reload_conf();")
	case sss == "":
		r.add("failover.synchronized_standby_slots", Warn, fmt.Sprintf("synchronized_standby_slots is empty: repstream may receive changes standby slot(s) %s have not, and after a promotion its synced slot would be behind what it applied", strings.Join(physical, ", ")),
			fmt.Sprintf("ALTER SYSTEM SET synchronized_standby_slots = '%s'; SELECT pg_reload_conf();", strings.Join(physical, ",")))
	default:
		r.add("failover.synchronized_standby_slots", OK, fmt.Sprintf("synchronized_standby_slots = %s: repstream receives only changes those standbys have", sss), "")
	}
	return nil
}

// checkStandby checks a standby's settings for keeping a synced copy of the slot.
func (r *run) checkStandby(ctx context.Context) error {
	set, err := r.settings(ctx, "sync_replication_slots", "hot_standby_feedback", "primary_slot_name", "primary_conninfo")
	if err != nil {
		return err
	}
	restart := "; SELECT pg_reload_conf();"
	if v := set["sync_replication_slots"].val; v == "on" {
		r.add("failover.sync_replication_slots", OK, "sync_replication_slots = on: this standby keeps copies of the primary's failover slots", "")
	} else {
		r.add("failover.sync_replication_slots", Fail, "sync_replication_slots = "+v+": this standby keeps no copy of repstream's slot; after its promotion repstream starts a new epoch",
			"ALTER SYSTEM SET sync_replication_slots = on"+restart)
	}
	if v := set["hot_standby_feedback"].val; v == "on" {
		r.add("failover.hot_standby_feedback", OK, "hot_standby_feedback = on", "")
	} else {
		r.add("failover.hot_standby_feedback", Fail, "hot_standby_feedback = "+v+": slot synchronization needs it (the primary must keep the catalog rows the slot needs)",
			"ALTER SYSTEM SET hot_standby_feedback = on"+restart)
	}
	if v := set["primary_slot_name"].val; v != "" {
		r.add("failover.primary_slot_name", OK, "primary_slot_name = "+v+" (name it in the primary's synchronized_standby_slots)", "")
	} else {
		r.add("failover.primary_slot_name", Fail, "primary_slot_name is empty: slot synchronization needs a physical slot on the primary",
			"on the primary: SELECT pg_create_physical_replication_slot('standby1'); here: ALTER SYSTEM SET primary_slot_name = 'standby1'"+restart)
	}
	if !strings.Contains(set["primary_conninfo"].val, "dbname=") {
		r.add("failover.primary_conninfo", Fail, "primary_conninfo names no dbname: slot synchronization connects to a database of the primary",
			"ALTER SYSTEM SET primary_conninfo = '... dbname=postgres'"+restart)
	}
	x, ok, err := cdc.LookupSlotExtra(ctx, r.conn, r.in.Slot)
	if err != nil {
		return err
	}
	switch {
	case ok && x.Synced && x.InvalidationReason == "":
		r.add("failover.synced", OK, fmt.Sprintf("slot %s is synced here: after a promotion repstream continues on this server without a new epoch", r.in.Slot), "")
	case ok && x.InvalidationReason != "":
		r.add("failover.synced", Fail, fmt.Sprintf("the synced copy of slot %s is invalidated (%s): after a promotion repstream starts a new epoch", r.in.Slot, x.InvalidationReason),
			"check the standby's log; the copy is recreated once the settings above are right and the primary's slot advances")
	default:
		r.add("failover.synced", Warn, fmt.Sprintf("slot %s has no synced copy here yet: it appears once the primary's slot has failover = true and advances", r.in.Slot),
			"wait for repstream to stream on the primary; then run doctor here again")
	}
	return nil
}

// replicationURL is databaseURL as a walsender connection, password hidden.
func replicationURL(databaseURL string) string {
	u := cdc.SafeURL(databaseURL)
	if strings.Contains(u, "?") {
		return u + "&replication=database"
	}
	return u + "?replication=database"
}
