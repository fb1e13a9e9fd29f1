// Package doctor checks a database for everything repstream needs (server
// settings, the role, the source tables, the publication, the slot and
// repstream's own schema) and says, for each problem, the exact SQL or
// setting that fixes it. It only reads: nothing it runs changes the database.
// It also holds the logic of the DBA commands (publication sql|create,
// slot status|drop), which share its catalog reads.
package doctor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/repstream/repstream/cdc"
	"github.com/repstream/repstream/stream"
)

// Status is a finding's verdict.
type Status string

// Statuses, in increasing severity. Only Fail blocks the service.
const (
	OK   Status = "ok"
	Warn Status = "warn"
	Fail Status = "fail"
)

// Check is one finding: what was checked, what was found and how to fix it.
type Check struct {
	// Name is stable for machines: "wal_level", "table.primary_key:public.reviews".
	Name    string `json:"name"`
	Status  Status `json:"status"`
	Message string `json:"message"`
	// Fix is the exact SQL or setting that resolves a warn or fail; empty for ok.
	Fix string `json:"fix"`
}

// Report is everything doctor found, in the order it checked.
type Report struct {
	// OK is true when no check failed (warnings allowed).
	OK     bool    `json:"ok"`
	Checks []Check `json:"checks"`
	// Incomplete means doctor could not run its database checks (it could not
	// connect); the reason is a failed check. ExitCode is then 1.
	Incomplete bool `json:"-"`
}

// Exit codes of `repstream doctor`.
const (
	ExitOK         = 0 // nothing blocks (warnings allowed)
	ExitIncomplete = 1 // doctor itself could not run its checks
	ExitFail       = 2 // at least one check failed
)

// ExitCode is 1 when doctor could not run, 2 when a check failed, else 0.
func (r Report) ExitCode() int {
	switch {
	case r.Incomplete:
		return ExitIncomplete
	case !r.OK:
		return ExitFail
	}
	return ExitOK
}

// Find returns the first check named name, so callers and tests need not scan.
func (r Report) Find(name string) (Check, bool) {
	for _, c := range r.Checks {
		if c.Name == name {
			return c, true
		}
	}
	return Check{}, false
}

// WriteText prints one line per check ("ok   ...", "WARN ...", "FAIL ...")
// with each fix indented under it, then a summary line.
func (r Report) WriteText(w io.Writer) error {
	var b strings.Builder
	var n [3]int
	for _, c := range r.Checks {
		label := "ok  "
		switch c.Status {
		case Warn:
			label, n[1] = "WARN", n[1]+1
		case Fail:
			label, n[2] = "FAIL", n[2]+1
		default:
			n[0]++
		}
		fmt.Fprintf(&b, "%s %s\n", label, c.Message)
		if c.Fix != "" && c.Status != OK {
			b.WriteString("     fix: " + strings.ReplaceAll(c.Fix, "\n", "\n          ") + "\n")
		}
	}
	fmt.Fprintf(&b, "\n%d ok, %d warnings, %d failures", n[0], n[1], n[2])
	if r.Incomplete {
		b.WriteString(" (doctor could not run every check)")
	}
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON prints {"ok":bool,"checks":[{"name","status","message","fix"}]}.
func (r Report) WriteJSON(w io.Writer) error {
	if r.Checks == nil {
		r.Checks = []Check{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// DefaultRetainedWarnBytes is the retained WAL past which the slot check warns.
const DefaultRetainedWarnBytes int64 = 1 << 30

// Input is what doctor checks: the service's configuration, loaded or not.
type Input struct {
	DatabaseURL string
	// StoreURL is the database of schema repstream (store.database_url);
	// empty means DatabaseURL.
	StoreURL    string
	Publication string
	Slot        string
	// CreatePublication says serve may create a missing publication
	// (create_publication, true by default in the configuration).
	CreatePublication bool
	Sources           []stream.Source
	// Prior is the configured reputation prior; it is part of the sources
	// fingerprint, so a wrong one reports a spurious new epoch.
	Prior stream.Prior
	// RetainedWarnBytes is the retained WAL past which the slot check warns;
	// zero means DefaultRetainedWarnBytes.
	RetainedWarnBytes int64
	// ConfigErr is the error loading the configuration returned, if any; each
	// *stream.ConfigError in it becomes a failed check naming its key.
	ConfigErr error
}

// run carries the state of one doctor run between the check groups.
type run struct {
	in            Input
	rep           *Report
	conn          *pgx.Conn
	store         *pgx.Conn // the database of schema repstream; conn when it is the source
	rules         []*stream.Rule
	tables        []cdc.Table     // one per rule, with the rule's columns
	infos         []tableState    // one per rule
	role          roleInfo        // who doctor is connected as
	pub           cdc.Publication // the configured publication
	slot          cdc.Slot        // the configured slot when slotOK
	slotOK        bool            // the slot exists
	sys           *cdc.System     // from IDENTIFY_SYSTEM, when a replication connection worked
	serverVersion int
	platform      platform // the managed service, "" for plain Postgres
	standby       bool     // the server is in recovery
}

func (r *run) add(name string, st Status, msg, fix string) {
	if st == OK {
		fix = ""
	}
	r.rep.Checks = append(r.rep.Checks, Check{Name: name, Status: st, Message: msg, Fix: fix})
	if st == Fail {
		r.rep.OK = false
	}
}

// Run checks everything and returns the findings; it never returns early
// without a finding that says why. It only reads from the database.
func Run(ctx context.Context, in Input) Report {
	rep := &Report{OK: true}
	r := &run{in: in, rep: rep}
	if in.RetainedWarnBytes <= 0 {
		r.in.RetainedWarnBytes = DefaultRetainedWarnBytes
	}
	r.checkConfig()
	if r.in.DatabaseURL == "" {
		r.add("connect", Fail, "database not checked: the configuration names no database", "set database_url in the file, DATABASE_URL, or --database-url")
		return *rep
	}
	conn, err := connect(ctx, r.in.DatabaseURL)
	if err != nil {
		rep.Incomplete = true
		r.add("connect", Fail, fmt.Sprintf("cannot connect to %s: %v", cdc.SafeURL(r.in.DatabaseURL), err), connectFix(r.in.DatabaseURL, err))
		return *rep
	}
	defer conn.Close(context.Background())
	r.conn, r.store = conn, conn
	if in.StoreURL != "" && in.StoreURL != in.DatabaseURL {
		sconn, err := connect(ctx, in.StoreURL)
		if err != nil {
			rep.Incomplete = true
			r.add("connect.store", Fail, fmt.Sprintf("cannot connect to the store %s (store.database_url): %v", cdc.SafeURL(in.StoreURL), err), connectFix(in.StoreURL, err))
			return *rep
		}
		defer sconn.Close(context.Background())
		r.store = sconn
		r.add("connect.store", OK, fmt.Sprintf("connected to the store %s (store.database_url): repstream writes nothing to the source database but the slot", cdc.SafeURL(in.StoreURL)), "")
	}
	if err := r.checkServer(ctx); err != nil {
		r.abort(err)
		return *rep
	}
	steps := []func(context.Context) error{
		r.checkSettings, r.checkRole, r.checkTables, r.checkWhere, r.checkPublication, r.checkSlot, r.checkFailover, r.checkMigrations,
	}
	if r.standby {
		source, err := r.checkStandbySource(ctx)
		if err == nil && !source {
			// serve connects to the primary; here only what keeps its
			// slot across this standby's promotion matters.
			err = r.checkFailover(ctx)
		}
		if err != nil || !source {
			if err != nil {
				r.abort(err)
			}
			return *rep
		}
		// A slot created on a standby cannot be a failover slot.
		steps = []func(context.Context) error{
			r.checkSettings, r.checkRole, r.checkTables, r.checkWhere, r.checkPublication, r.checkSlot, r.checkMigrations,
		}
	}
	for _, step := range steps {
		if err := step(ctx); err != nil {
			if !errors.Is(err, errStop) {
				r.abort(err)
			}
			return *rep
		}
	}
	return *rep
}

// abort records a query that failed mid-run: doctor could not finish.
func (r *run) abort(err error) {
	r.rep.Incomplete = true
	r.add("doctor", Fail, fmt.Sprintf("doctor stopped: %v", err), r.permissionFix(err))
}

// permissionFix names the grant a permission error asks for, so the fix
// works when pasted; other errors are re-run.
func (r *run) permissionFix(err error) string {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "42501" {
		return "re-run doctor; if the error persists, it is not a setting doctor knows"
	}
	if m := deniedSchema.FindStringSubmatch(pe.Message); m != nil {
		return fmt.Sprintf("GRANT USAGE ON SCHEMA %s TO %s; -- serve reads the source tables in it too", quoteIdent(m[1]), quoteIdent(r.role.name))
	}
	return "grant role " + r.role.name + " what the error names, as its owner or a superuser"
}

var deniedSchema = regexp.MustCompile(`^permission denied for schema (\S+)$`)

// connect opens the read connection with a bounded connect time.
func connect(ctx context.Context, databaseURL string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(databaseURL)
	if err != nil {
		return nil, err
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	cfg.RuntimeParams["application_name"] = "repstream doctor"
	return pgx.ConnectConfig(ctx, cfg)
}

// configErrors flattens a joined error into its *stream.ConfigError parts
// and whatever else it holds.
func configErrors(err error) (keyed []*stream.ConfigError, other []error) {
	if err == nil {
		return nil, nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			k, o := configErrors(e)
			keyed, other = append(keyed, k...), append(other, o...)
		}
		return keyed, other
	}
	var ce *stream.ConfigError
	if errors.As(err, &ce) {
		return []*stream.ConfigError{ce}, nil
	}
	return nil, []error{err}
}

// checkConfig turns configuration errors into failures naming their keys,
// and compiles the sources into the tables the other checks need.
func (r *run) checkConfig() {
	keyed, other := configErrors(r.in.ConfigErr)
	failed := map[string]bool{}
	for _, ce := range keyed {
		failed[ce.Key] = true
		r.add("config:"+ce.Key, Fail, fmt.Sprintf("config %s: %s", ce.Key, ce.Msg), "fix the key "+ce.Key+" in the configuration file (or its REPSTREAM_* variable or flag)")
	}
	for _, e := range other {
		r.add("config", Fail, fmt.Sprintf("configuration: %v", e), "fix the configuration file so it loads")
	}
	n := len(r.rep.Checks)
	req := []struct{ key, val, msg string }{
		{"database_url", r.in.DatabaseURL, "missing; set it in the file, as DATABASE_URL or with --database-url"},
		{"publication", r.in.Publication, "missing; name the publication, e.g. repstream"},
		{"slot", r.in.Slot, "missing; name the replication slot, e.g. repstream"},
	}
	for _, q := range req {
		if q.val == "" && !failed[q.key] && r.in.ConfigErr == nil {
			r.add("config:"+q.key, Fail, fmt.Sprintf("config %s: %s", q.key, q.msg), "set "+q.key+" in the configuration file")
		}
	}
	if r.in.ConfigErr == nil || len(r.in.Sources) > 0 {
		rules, err := stream.CompileSources(r.in.Sources)
		var ce *stream.ConfigError
		switch {
		case err == nil:
			r.rules = rules
		case errors.As(err, &ce):
			if !failed[ce.Key] {
				r.add("config:"+ce.Key, Fail, fmt.Sprintf("config %s: %s", ce.Key, ce.Msg), "fix the key "+ce.Key+" in the configuration file")
			}
		default:
			r.add("config:sources", Fail, fmt.Sprintf("config sources: %v", err), "fix sources in the configuration file")
		}
	}
	for _, rule := range r.rules {
		r.tables = append(r.tables, cdc.Table{Schema: rule.Schema, Name: rule.Name, Columns: rule.Columns})
	}
	if len(r.rep.Checks) == n && r.in.ConfigErr == nil && len(keyed)+len(other) == 0 {
		r.add("config", OK, fmt.Sprintf("configuration is valid: %d source(s), publication %s, slot %s", len(r.rules), r.in.Publication, r.in.Slot), "")
	}
}
