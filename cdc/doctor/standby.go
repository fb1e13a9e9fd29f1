package doctor

import (
	"context"
	"fmt"

	"github.com/repstream/repstream/cdc"
)

// checkStandbySource says what a standby can be to repstream: a source it
// decodes on (PostgreSQL 16+, with the store on a writable server), or
// only a server that may be promoted, checked for keeping the slot. It
// returns true when doctor should go on with a source's checks.
func (r *run) checkStandbySource(ctx context.Context) (bool, error) {
	major := r.serverVersion / 10000
	hasStore := r.in.StoreURL != "" && r.in.StoreURL != r.in.DatabaseURL
	switch {
	case r.serverVersion < cdc.V16 && hasStore:
		r.add("standby", Fail, fmt.Sprintf("this server is a standby running PostgreSQL %d: logical decoding on a standby needs PostgreSQL 16 or later, so serve cannot read from it", major),
			"point database_url at the primary (the store may stay where it is), or upgrade to PostgreSQL 16 or later")
		return false, nil
	case !hasStore:
		r.add("standby", Warn, "this server is a standby: serve writes its state to the source database unless store.database_url names a writable one, so as configured it must connect to the primary; doctor checks here only what keeps repstream's slot across this standby's promotion",
			"point database_url at the primary (or at the name that always resolves to it); to read from this standby (PostgreSQL 16+), set store.database_url to a database on the primary")
		return false, nil
	}
	in, err := cdc.InRecovery(ctx, r.store)
	if err != nil {
		return false, err
	}
	if in {
		r.add("standby", Fail, "this server and the store (store.database_url) are both standbys: repstream writes its state to the store",
			"point store.database_url at a database on the primary")
		return false, nil
	}
	r.add("standby", OK, fmt.Sprintf("this server is a standby (PostgreSQL %d): serve decodes its WAL here and writes its state to the store; a promotion of this server keeps the slot and the epoch", major), "")
	set, err := r.settings(ctx, "hot_standby_feedback", "primary_slot_name")
	if err != nil {
		return false, err
	}
	const reload = "; SELECT pg_reload_conf();"
	if v := set["hot_standby_feedback"].val; v == "on" {
		r.add("standby.hot_standby_feedback", OK, "hot_standby_feedback = on: the primary keeps the catalog rows the slot here needs", "")
	} else {
		r.add("standby.hot_standby_feedback", Fail, "hot_standby_feedback = "+v+": the primary's vacuum may remove catalog rows the slot here needs; the standby then invalidates the slot (a recovery conflict) and repstream starts a new epoch, clients reset",
			"ALTER SYSTEM SET hot_standby_feedback = on"+reload)
	}
	if v := set["primary_slot_name"].val; v != "" {
		r.add("standby.primary_slot_name", OK, "primary_slot_name = "+v+": the primary keeps this standby's feedback and WAL while it is disconnected", "")
	} else {
		r.add("standby.primary_slot_name", Warn, "primary_slot_name is empty: hot_standby_feedback holds only while this standby is connected, so a disconnection can still let the primary remove what the slot needs",
			"on the primary: SELECT pg_create_physical_replication_slot('standby1'); here: ALTER SYSTEM SET primary_slot_name = 'standby1'"+reload)
	}
	if r.in.Slot == "" {
		return true, nil
	}
	x, ok, err := cdc.LookupSlotExtra(ctx, r.conn, r.in.Slot)
	if err != nil {
		return false, err
	}
	if ok && (x.Conflicting || x.InvalidationReason != "") {
		why := x.InvalidationReason
		if why == "" {
			why = "conflicting with recovery"
		}
		r.add("standby.slot", Fail, fmt.Sprintf("slot %s is invalidated (%s): serve starts a new epoch from a fresh snapshot, clients reset", r.in.Slot, why),
			"fix the settings above so it does not happen again; serve drops and re-creates the slot by itself")
	}
	return true, nil
}
