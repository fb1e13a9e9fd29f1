package doctor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/repstream/repstream/cdc"
	"github.com/repstream/repstream/stream"
)

// Errors of the DBA commands, so callers choose an exit code without
// matching text; each returned error wraps one and says what to do.
var (
	ErrPublicationExists = errors.New("publication already exists")
	ErrPlanBlocked       = errors.New("the publication cannot be planned")
	ErrNoSlot            = errors.New("replication slot does not exist")
	ErrNotConfirmed      = errors.New("not confirmed")
	ErrSlotActive        = errors.New("replication slot is active")
)

// dial connects and compiles the sources: what every DBA command starts with.
func dial(ctx context.Context, in Input) (*pgx.Conn, []cdc.Table, error) {
	if in.DatabaseURL == "" {
		return nil, nil, &stream.ConfigError{Key: "database_url", Msg: "missing; set it in the file, as DATABASE_URL or with --database-url"}
	}
	var tables []cdc.Table
	if in.Sources != nil {
		rules, err := stream.CompileSources(in.Sources)
		if err != nil {
			return nil, nil, err
		}
		for _, r := range rules {
			tables = append(tables, cdc.Table{Schema: r.Schema, Name: r.Name, Columns: r.Columns})
		}
	}
	conn, err := connect(ctx, in.DatabaseURL)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to %s: %w (fix: %s)", cdc.SafeURL(in.DatabaseURL), err, connectFix(in.DatabaseURL, err))
	}
	return conn, tables, nil
}

func planOn(ctx context.Context, conn *pgx.Conn, name string, tables []cdc.Table) (Plan, error) {
	if name == "" {
		return Plan{}, &stream.ConfigError{Key: "publication", Msg: "missing; name the publication, e.g. repstream"}
	}
	states := make([]tableState, len(tables))
	for i, t := range tables {
		ts, err := loadTable(ctx, conn, t)
		if err != nil {
			return Plan{}, err
		}
		states[i] = ts
	}
	ver, err := cdc.ServerVersion(ctx, conn)
	if err != nil {
		return Plan{}, err
	}
	return plan(name, tables, states, ver >= cdc.V15), nil
}

// PlanPublication reads the source tables and returns the publication
// repstream needs, for `repstream publication sql`. It only reads. A plan
// with Blockers comes with an error wrapping ErrPlanBlocked.
func PlanPublication(ctx context.Context, in Input) (Plan, error) {
	conn, tables, err := dial(ctx, in)
	if err != nil {
		return Plan{}, err
	}
	defer conn.Close(context.Background())
	p, err := planOn(ctx, conn, in.Publication, tables)
	if err != nil {
		return p, err
	}
	if len(p.Blockers) > 0 {
		return p, fmt.Errorf("%w: %s", ErrPlanBlocked, strings.Join(p.Blockers, "; "))
	}
	return p, nil
}

// CreatePublication creates the planned publication, for `repstream
// publication create`. It refuses when the publication exists (it never
// alters one), when the plan is blocked, and when a table's replica identity
// must change first: that is the application's table, a DBA's call.
func CreatePublication(ctx context.Context, in Input) (Plan, error) {
	conn, tables, err := dial(ctx, in)
	if err != nil {
		return Plan{}, err
	}
	defer conn.Close(context.Background())
	p, err := planOn(ctx, conn, in.Publication, tables)
	if err != nil {
		return p, err
	}
	pub, err := cdc.LookupPublication(ctx, conn, in.Publication)
	if err != nil {
		return p, err
	}
	if pub.Exists {
		cover := "run `repstream doctor` to see what it lacks"
		if len(p.Blockers) == 0 && cdc.CheckPublication(in.Publication, pub, p.Tables, p.Keys) == nil {
			cover = "it covers the sources; nothing to do"
		}
		return p, fmt.Errorf("%w: publication %s already exists and repstream does not alter an existing publication: %s", ErrPublicationExists, in.Publication, cover)
	}
	if len(p.Blockers) > 0 {
		return p, fmt.Errorf("%w: %s", ErrPlanBlocked, strings.Join(p.Blockers, "; "))
	}
	if len(p.Prepare) > 0 {
		var what []string
		for _, s := range p.Prepare {
			what = append(what, s.SQL)
		}
		return p, fmt.Errorf("%w: with column lists Postgres would reject UPDATE and DELETE on a table whose replica identity is not DEFAULT; run first, as the table's owner: %s (or review and apply `repstream publication sql`, which includes it)",
			ErrPlanBlocked, strings.Join(what, " "))
	}
	if _, err := conn.Exec(ctx, p.DDL); err != nil {
		var pg *pgconn.PgError
		if errors.As(err, &pg) && pg.Code == "42710" {
			return p, fmt.Errorf("%w: publication %s was created meanwhile", ErrPublicationExists, in.Publication)
		}
		if errors.As(err, &pg) && pg.Code == "42501" {
			return p, fmt.Errorf("create publication %s: %w (creating it needs a superuser, or CREATE on the database and ownership of every source table: have a DBA run `repstream publication sql`)", in.Publication, err)
		}
		return p, fmt.Errorf("create publication %s: %w", in.Publication, err)
	}
	return p, nil
}

// SlotStatus is what a DBA needs to know about the slot, for `repstream slot status`.
type SlotStatus struct {
	Name              string `json:"name"`
	Exists            bool   `json:"exists"`
	Plugin            string `json:"plugin,omitempty"`
	Database          string `json:"database,omitempty"`
	Active            bool   `json:"active"`
	ActivePID         int32  `json:"active_pid,omitempty"`
	ApplicationName   string `json:"application_name,omitempty"` // of the active backend
	RestartLSN        string `json:"restart_lsn,omitempty"`
	ConfirmedFlushLSN string `json:"confirmed_flush_lsn,omitempty"`
	WALStatus         string `json:"wal_status,omitempty"`
	RetainedBytes     int64  `json:"retained_bytes"` // pg_current_wal_lsn() - restart_lsn
	LagBytes          int64  `json:"lag_bytes"`      // pg_current_wal_lsn() - confirmed_flush_lsn
	// SafeWALSize is how much more WAL may be written before the slot is
	// lost (max_slot_wal_keep_size); nil when that setting is unlimited.
	SafeWALSize *int64 `json:"safe_wal_size"`
	// Why explains what the figures mean: why WAL is retained, and what a
	// lost or unreserved slot will cost.
	Why []string `json:"why,omitempty"`
	// Failover (17+, null before) says standbys with sync_replication_slots keep a copy.
	Failover *bool `json:"failover"`
	// InvalidationReason (17+) says why the slot can no longer be used.
	InvalidationReason string     `json:"invalidation_reason,omitempty"`
	InactiveSince      *time.Time `json:"inactive_since,omitempty"` // 17+
	holder             *cdc.Backend
}

// Lost says the slot can no longer stream: the next serve starts a new epoch.
func (s SlotStatus) Lost() bool { return s.Exists && s.WALStatus == "lost" }

// heldSlack is how far restart_lsn may trail confirmed_flush_lsn without an
// explanation: it only moves at the server's running-xacts records.
const heldSlack = 16 << 20

// explain fills Why from the figures and, when restart_lsn trails the
// confirmed position by much, from the transaction that holds it back.
func (s *SlotStatus) explain(ctx context.Context, q cdc.Querier) error {
	if err := q.QueryRow(ctx, `SELECT safe_wal_size FROM pg_replication_slots WHERE slot_name = $1`, s.Name).Scan(&s.SafeWALSize); err != nil {
		return fmt.Errorf("slot %s: read safe_wal_size: %w", s.Name, err)
	}
	switch s.WALStatus {
	case "lost":
		s.Why = append(s.Why, "lost: the WAL this slot needs was removed (max_slot_wal_keep_size), so it cannot stream again. "+
			"The next `repstream serve` starts a new epoch by itself: it drops this slot, reloads every source from a fresh snapshot, and every client resets. Nothing needs to be done by hand.")
	case "unreserved":
		msg := "unreserved: the slot retains more WAL than max_slot_wal_keep_size; it will be lost at the next checkpoint unless repstream catches up"
		if s.SafeWALSize != nil {
			msg += fmt.Sprintf(" (safe_wal_size %s)", Bytes(*s.SafeWALSize))
		}
		s.Why = append(s.Why, msg)
	}
	if !s.Active && s.LagBytes > 0 {
		s.Why = append(s.Why, fmt.Sprintf("no process streams from this slot: WAL accumulates (%s so far behind the confirmed position) until `repstream serve` runs again", Bytes(s.LagBytes)))
	}
	if held := s.RetainedBytes - s.LagBytes; held > heldSlack {
		var pid *int32
		var app, state, age *string
		err := q.QueryRow(ctx, `
SELECT pid, application_name, state, (now() - xact_start)::text FROM pg_stat_activity
WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() AND xact_start IS NOT NULL
ORDER BY xact_start LIMIT 1`).Scan(&pid, &app, &state, &age)
		msg := fmt.Sprintf("restart_lsn is %s behind confirmed_flush_lsn: decoding must restart from the oldest transaction that was running when the slot last advanced", Bytes(held))
		switch {
		case err == nil && pid != nil:
			msg += fmt.Sprintf("; the oldest open transaction now is PID %d (application_name %q, %s, open for %s): end it and restart_lsn moves on", *pid, deref(app), deref(state), deref(age))
		default:
			msg += "; no long transaction is open now, so restart_lsn moves at the server's next checkpoint"
		}
		s.Why = append(s.Why, msg)
	}
	return nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func slotStatus(ctx context.Context, q cdc.Querier, name string) (SlotStatus, error) {
	st := SlotStatus{Name: name}
	s, ok, err := cdc.LookupSlot(ctx, q, name)
	if err != nil || !ok {
		return st, err
	}
	st = SlotStatus{Name: s.Name, Exists: true, Plugin: s.Plugin, Database: s.Database, Active: s.Active, ActivePID: s.ActivePID,
		RestartLSN: s.RestartLSN.String(), ConfirmedFlushLSN: s.ConfirmedFlushLSN.String(), WALStatus: s.WALStatus,
		RetainedBytes: s.RetainedBytes, LagBytes: s.LagBytes}
	x, ok, err := cdc.LookupSlotExtra(ctx, q, name)
	if err != nil {
		return st, err
	}
	if ok && x.HasFailover {
		st.Failover = &x.Failover
	}
	st.InvalidationReason, st.InactiveSince = x.InvalidationReason, x.InactiveSince
	if err := st.explain(ctx, q); err != nil {
		return st, err
	}
	if s.Active && s.ActivePID != 0 {
		b, found, err := cdc.LookupBackend(ctx, q, s.ActivePID)
		if err != nil {
			return st, err
		}
		if found {
			st.ApplicationName = b.ApplicationName
			st.holder = &b
		}
	}
	return st, nil
}

// ReadSlot reports the configured slot; Exists is false when there is none.
func ReadSlot(ctx context.Context, in Input) (SlotStatus, error) {
	if in.Slot == "" {
		return SlotStatus{}, &stream.ConfigError{Key: "slot", Msg: "missing; name the replication slot, e.g. repstream"}
	}
	conn, _, err := dial(ctx, Input{DatabaseURL: in.DatabaseURL})
	if err != nil {
		return SlotStatus{}, err
	}
	defer conn.Close(context.Background())
	return slotStatus(ctx, conn, in.Slot)
}

// WriteText prints the status as aligned "key  value" lines.
func (s SlotStatus) WriteText(w io.Writer) error {
	if !s.Exists {
		_, err := fmt.Fprintf(w, "slot %s does not exist (serve creates it on start)\n", s.Name)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	safe := "unlimited (max_slot_wal_keep_size = -1)"
	if s.SafeWALSize != nil {
		safe = fmt.Sprintf("%d bytes (%s)", *s.SafeWALSize, Bytes(*s.SafeWALSize))
	}
	active := "no"
	if s.Active {
		active = fmt.Sprintf("pid %d", s.ActivePID)
		if s.ApplicationName != "" {
			active += fmt.Sprintf(" (application_name %q)", s.ApplicationName)
		}
	}
	for _, kv := range [][2]string{
		{"slot", s.Name}, {"plugin", s.Plugin}, {"database", s.Database}, {"active", active},
		{"restart_lsn", s.RestartLSN}, {"confirmed_flush_lsn", s.ConfirmedFlushLSN}, {"wal_status", s.WALStatus},
		{"retained", fmt.Sprintf("%d bytes (%s)", s.RetainedBytes, Bytes(s.RetainedBytes))},
		{"lag", fmt.Sprintf("%d bytes (%s)", s.LagBytes, Bytes(s.LagBytes))},
		{"safe_wal_size", safe},
	} {
		fmt.Fprintf(tw, "%s\t%s\n", kv[0], kv[1])
	}
	if s.Failover != nil {
		fmt.Fprintf(tw, "failover\t%v\n", *s.Failover)
	}
	if s.InvalidationReason != "" {
		fmt.Fprintf(tw, "invalidation_reason\t%s\n", s.InvalidationReason)
	}
	if s.InactiveSince != nil {
		fmt.Fprintf(tw, "inactive_since\t%s\n", s.InactiveSince.UTC().Format(time.RFC3339))
	}
	for _, why := range s.Why {
		fmt.Fprintf(tw, "why\t%s\n", why)
	}
	return tw.Flush()
}

// WriteJSON prints the status as one JSON object.
func (s SlotStatus) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(s)
}

// DropOptions are `repstream slot drop`'s safety switches.
type DropOptions struct {
	// Yes confirms the drop; without it DropSlot explains the cost and refuses.
	Yes bool
	// Force terminates the backend holding the slot first.
	Force bool
	// Wait bounds waiting for a terminated backend to release the slot; zero means 10s.
	Wait time.Duration
}

// DropResult says what DropSlot did.
type DropResult struct {
	Slot       SlotStatus   // the slot as it was before the drop
	Terminated *cdc.Backend // the backend ended by Force, if any
}

// DropSlot drops the configured slot. Without Yes it refuses and says that
// clients resync under a new epoch; it refuses a slot held by a process
// unless Force, which terminates that backend first.
func DropSlot(ctx context.Context, in Input, o DropOptions) (DropResult, error) {
	if in.Slot == "" {
		return DropResult{}, &stream.ConfigError{Key: "slot", Msg: "missing; name the replication slot, e.g. repstream"}
	}
	if o.Wait <= 0 {
		o.Wait = 10 * time.Second
	}
	conn, _, err := dial(ctx, Input{DatabaseURL: in.DatabaseURL})
	if err != nil {
		return DropResult{}, err
	}
	defer conn.Close(context.Background())
	st, err := slotStatus(ctx, conn, in.Slot)
	res := DropResult{Slot: st}
	if err != nil {
		return res, err
	}
	if !st.Exists {
		return res, fmt.Errorf("%w: slot %s; nothing to drop", ErrNoSlot, in.Slot)
	}
	holder := ""
	if st.Active {
		holder = fmt.Sprintf("PID %d", st.ActivePID)
		if st.holder != nil {
			holder = st.holder.String()
		}
	}
	if !o.Yes {
		msg := fmt.Sprintf("dropping slot %s (confirmed up to %s, retaining %s of WAL) discards repstream's position in the WAL. The next serve starts a new epoch: it creates a new slot, reloads every source table from a fresh snapshot, and every client resyncs from scratch (its cursor is reset). Run again with --yes to drop it",
			st.Name, st.ConfirmedFlushLSN, Bytes(st.RetainedBytes))
		if st.Active {
			msg += fmt.Sprintf(" (it is in use by %s, so --force is needed too)", holder)
		}
		return res, fmt.Errorf("%w: %s.", ErrNotConfirmed, msg)
	}
	if st.Active && !o.Force {
		return res, fmt.Errorf("%w: slot %s is in use by %s; stop that process first, or pass --force to terminate its session before dropping", ErrSlotActive, st.Name, holder)
	}
	for attempt := 0; ; attempt++ {
		if st.Active && st.ActivePID != 0 {
			b := cdc.Backend{PID: st.ActivePID}
			if st.holder != nil {
				b = *st.holder
			}
			if err := cdc.TerminateBackend(ctx, conn, st.ActivePID, o.Wait); err != nil {
				return res, fmt.Errorf("slot %s: %w (terminating another role's session needs superuser or pg_signal_backend)", st.Name, err)
			}
			res.Terminated = &b
			if _, err := cdc.WaitSlotInactive(ctx, conn, st.Name, o.Wait); err != nil {
				return res, err
			}
		}
		err := cdc.DropSlot(ctx, conn, st.Name)
		if err == nil {
			return res, nil
		}
		// A client that reconnects at once (a running repstream retries) may
		// take the slot back between the terminate and the drop.
		if !errors.Is(err, cdc.ErrSlotInUse) || !o.Force || attempt >= 2 {
			return res, err
		}
		if st, err = slotStatus(ctx, conn, st.Name); err != nil {
			return res, err
		}
	}
}
