package stream

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/repstream/repstream/cdc"
	"github.com/repstream/repstream/sql/migrations"
)

// EngineConfig is what the pipeline needs; zero durations take defaults.
type EngineConfig struct {
	// DatabaseURL is the source database: its tables, publication and slot.
	DatabaseURL string
	// StoreURL is where repstream's schema (state, delta log, row shadow,
	// checkpoint) lives; empty means the source database. Another database
	// leaves the source read-only but for the slot.
	StoreURL    string
	Slot        string
	Publication string
	// CreatePublication allows creating the publication when it is missing.
	CreatePublication bool
	Sources           []Source
	Prior             Prior
	// Retention is how long deltas stay in the log (zero: 168h).
	Retention time.Duration
	// StatusInterval is the standby status period (zero: 1s).
	StatusInterval time.Duration
	// AsyncCommit lets store commits return before their fsync; the slot is
	// then confirmed only once the WAL is flushed past them, so the
	// guarantee holds. Off (the default), each commit waits for its fsync,
	// which also batches transactions into fewer, larger groups: measured
	// here, that costs less CPU and gives lower latency on a loaded machine.
	AsyncCommit bool
	// Heartbeat is how often a logical message is emitted so the slot
	// advances and lag is measurable on an idle database (zero: 10s; <0 off).
	Heartbeat time.Duration
	// TakeoverAfter: a standby ends the connections of a slot holder whose
	// replication connection has not answered for this long (a process
	// stopped with SIGSTOP, a frozen VM), instead of waiting for Postgres's
	// wal_sender_timeout. Zero leaves it to wal_sender_timeout.
	TakeoverAfter time.Duration
	Applier       ApplierConfig
	// SchemaCheck is how often the source tables' catalog is compared with
	// what the session derives them by (zero: 5s).
	SchemaCheck time.Duration
	Logger      *slog.Logger
}

// Engine runs the pipeline: replication → fold → store → publisher. It
// reconnects by itself and is the owner of every goroutine it starts.
type Engine struct {
	cfg   EngineConfig
	log   *slog.Logger
	rules []*Rule
	hash  string
	pub   Publisher
	pool  *pgxpool.Pool
	store *Store

	mu     sync.Mutex
	reader *cdc.Reader // guarded by mu; nil between sessions
	meta   Meta        // guarded by mu
	stats  ApplyStats  // guarded by mu: totals over the process's sessions
	base   ApplyStats  // guarded by mu: totals of the sessions that ended
	ready  atomic.Bool
	// restarts counts sessions that ended in an error and were retried.
	restarts atomic.Uint64
	problems problems
	// down is why the last connection attempt or session failed, for /readyz.
	down atomic.Pointer[string]
	// unsure is a group whose store commit reported an error: it may have
	// committed. Only the Run goroutine uses it (see publishUnsure).
	unsure *unsureGroup
	// announced is the epoch the publisher was last Reset to; announce says
	// the next session that holds the slot resets it to its own (the first
	// one, a new epoch, or one after a load whose commit reported an error
	// but happened). Only the Run goroutine touches them.
	announced string
	announce  bool
	waiting   string // guarded by mu; the slot holder a standby waits for
	// standby says the source database is a hot standby (PostgreSQL 16+
	// decodes there): no heartbeat, no publication changes, and a slot
	// created with the primary's help (see load). Set by each session.
	standby atomic.Bool
	// hiddenHolder: the standby was told once that its role cannot see
	// the slot holder's replication activity.
	hiddenHolder atomic.Bool

	metrics *engineMetrics
}

// FatalError is a problem retrying cannot fix: configuration or schema.
type FatalError struct{ Err error }

func (e *FatalError) Error() string { return e.Err.Error() }
func (e *FatalError) Unwrap() error { return e.Err }

// NewEngine validates the configuration and connects the read pool.
func NewEngine(ctx context.Context, cfg EngineConfig, pub Publisher) (*Engine, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Retention <= 0 {
		cfg.Retention = 168 * time.Hour
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = 10 * time.Second
	}
	if cfg.DatabaseURL == "" {
		return nil, &ConfigError{"database_url", "missing; set it in the file or as DATABASE_URL"}
	}
	if cfg.Slot == "" {
		return nil, &ConfigError{"slot", "missing; name the replication slot, e.g. repstream"}
	}
	if cfg.Publication == "" {
		return nil, &ConfigError{"publication", "missing; name the publication, e.g. repstream"}
	}
	rules, err := CompileSources(cfg.Sources)
	if err != nil {
		return nil, err
	}
	if cfg.StoreURL == "" {
		cfg.StoreURL = cfg.DatabaseURL
	}
	pool, err := newPool(ctx, cfg.DatabaseURL, "database_url")
	if err != nil {
		return nil, err
	}
	storePool := pool
	if cfg.StoreURL != cfg.DatabaseURL {
		if storePool, err = newPool(ctx, cfg.StoreURL, "store.database_url"); err != nil {
			pool.Close()
			return nil, err
		}
	}
	e := &Engine{cfg: cfg, log: cfg.Logger, rules: rules, hash: Fingerprint(rules, cfg.Prior), pub: pub,
		pool: pool, store: NewStore(storePool)}
	e.metrics = newEngineMetrics(e)
	return e, nil
}

// newPool connects a pool; key names the configuration key of url in errors.
func newPool(ctx context.Context, url, key string) (*pgxpool.Pool, error) {
	pcfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, &ConfigError{key, err.Error()}
	}
	pcfg.AfterConnect = RegisterTypes
	pcfg.ConnConfig.RuntimeParams["application_name"] = "repstream"
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("stream: %s: %w", key, err)
	}
	return pool, nil
}

// Store is the engine's durable store (its Log).
func (e *Engine) Store() *Store { return e.store }

// Slot looks up the replication slot on the source database.
func (e *Engine) Slot(ctx context.Context) (cdc.Slot, bool, error) {
	return cdc.LookupSlot(ctx, e.pool, e.cfg.Slot)
}

// Rules are the compiled sources.
func (e *Engine) Rules() []*Rule { return e.rules }

// Close releases the pools; call it after Run returned.
func (e *Engine) Close() {
	if sp := e.store.Pool(); sp != e.pool {
		sp.Close()
	}
	e.pool.Close()
}

// EngineStatus is the engine's view of replication, for /v1/status and metrics.
type EngineStatus struct {
	Meta    Meta
	Reader  cdc.Status
	Stats   ApplyStats
	LagTime time.Duration // commit → apply delay (see Status)
	HasMeta bool
	// Connected is the applier's own view: a session streams and had applied all it got at least once.
	Connected bool
	Restarts  uint64 // replication sessions that failed and were retried
	Sources   int
	Hash      string
	Slot      string
	Pub       string
	// WaitingFor names the process holding the slot while this node is a
	// standby; empty when it holds the slot or is not waiting.
	WaitingFor string
}

// Status reports positions and counters.
func (e *Engine) Status() EngineStatus {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := EngineStatus{Meta: e.meta, Stats: e.stats, HasMeta: e.meta.Epoch != "", Connected: e.ready.Load(),
		Restarts: e.restarts.Load(), Sources: len(e.rules), Hash: e.hash, Slot: e.cfg.Slot, Pub: e.cfg.Publication,
		WaitingFor: e.waiting}
	if e.reader != nil {
		s.Reader = e.reader.Status()
	}
	// Lag is the commit → apply delay of the last transaction or heartbeat
	// applied; while behind, it grows with the time since that one.
	if st := e.stats; !st.LastSeen.IsZero() {
		if s.Reader.CaughtUp && s.Reader.Connected {
			s.LagTime = st.LastLag
		} else {
			s.LagTime = time.Since(st.LastSeen) + st.LastLag // since that commit
		}
	}
	return s
}

// Migrate applies repstream's migrations.
func (e *Engine) Migrate() error {
	if err := migrations.Up(e.cfg.StoreURL); err != nil {
		return &FatalError{err}
	}
	return nil
}

// Run streams until ctx ends, reconnecting with backoff after failures. It
// returns nil on a clean stop and a *FatalError when retrying cannot help.
func (e *Engine) Run(ctx context.Context) error {
	if err := e.migrateWhenReachable(ctx); err != nil || ctx.Err() != nil {
		return err
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	pctx, stopPrune := context.WithCancel(ctx)
	defer stopPrune()
	wg.Add(2)
	go func() { defer wg.Done(); e.pruneLoop(pctx) }()
	go func() { defer wg.Done(); e.repeatProblems(pctx) }()

	attempt := 0
	first := true
	for {
		started := time.Now()
		err := e.session(ctx)
		e.ready.Store(false)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errReload) {
			e.log.Warn("a stopped source is servable again: reloading under a new epoch")
			first, attempt = false, 0
			continue
		}
		e.restarts.Add(1)
		var fe *FatalError
		var ce *ConfigError
		var pe *cdc.PublicationError
		if first && (errors.As(err, &fe) || errors.As(err, &ce) || errors.As(err, &pe)) {
			// A derived state exists: a table changed under it. Stay up and
			// say so until it is fixed, rather than exit.
			if _, merr := e.store.Meta(ctx); errors.As(err, &fe) || merr != nil {
				return err
			}
		}
		first = false
		why := err.Error()
		e.down.Store(&why)
		if time.Since(started) > time.Minute {
			attempt = 0
		}
		attempt++
		wait := backoff(attempt)
		switch {
		case errors.Is(err, cdc.ErrSlotInUse):
			// A standby: wait for the slot to be released, then take it
			// at once. The slot is never dropped.
			if e.awaitSlot(ctx) {
				attempt = 0
				continue
			}
			return nil
		default:
			e.log.Error("replication session ended; reconnecting", "err", err, "retry_in", wait)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// migrateWhenReachable waits for the database with backoff (a container
// may start before its database, or during a promotion), then migrates.
// It returns nil when ctx ends first.
func (e *Engine) migrateWhenReachable(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		err := e.reachable(ctx)
		if err == nil {
			if err = e.Migrate(); err == nil {
				e.down.Store(nil)
				return nil
			}
			if e.reachable(ctx) == nil { // it answers: the migration itself failed
				return err
			}
		}
		var ce *ConfigError
		if errors.As(err, &ce) || ctx.Err() != nil {
			return err
		}
		why, msg := "database unreachable: "+err.Error(), "database unreachable; retrying"
		if errors.Is(err, errStoreStandby) {
			why, msg = err.Error(), "the store is not writable; retrying"
		}
		e.down.Store(&why)
		wait := backoff(attempt)
		e.log.Error(msg, "err", err, "attempt", attempt, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// SlotPoll is how often a standby looks whether the slot was released.
const SlotPoll = 200 * time.Millisecond

// awaitSlot waits while another process holds the slot, saying whom it
// waits for in the log and in Status. It returns false when ctx ended.
func (e *Engine) awaitSlot(ctx context.Context) bool {
	last := ""
	for {
		s, ok, err := cdc.LookupSlot(ctx, e.pool, e.cfg.Slot)
		var loader int32 // during a load the slot is inactive; its lock is not
		if err == nil && (!ok || !s.Active) {
			loader, err = slotLockHolder(ctx, e.store.Pool(), e.cfg.Slot)
		}
		switch {
		case err != nil:
			if ctx.Err() == nil {
				e.log.Warn("standby: cannot look up the replication slot; retrying", "slot", e.cfg.Slot, "err", err)
			}
		case loader != 0:
			who := fmt.Sprintf("PID %d of the store's database (loading a snapshot)", loader)
			if who != last {
				e.setWaiting(who)
				e.log.Warn("standby: another repstream is loading a snapshot for the slot; waiting to take over", "slot", e.cfg.Slot, "held_by", who)
				last = who
			}
		case !ok || !s.Active:
			if last != "" {
				e.log.Info("standby: the slot was released; taking over", "slot", e.cfg.Slot, "was_held_by", last)
			}
			return true
		default:
			who := fmt.Sprintf("PID %d", s.ActivePID)
			b, ok, err := cdc.LookupBackend(ctx, e.pool, s.ActivePID)
			if err == nil && ok {
				who = b.String()
			}
			if who != last {
				e.setWaiting(who) // before the log line, which tests and operators wait for
				e.log.Warn("standby: replication slot is held by another process; waiting to take over", "slot", e.cfg.Slot, "held_by", who)
				last = who
			}
			if e.cfg.TakeoverAfter > 0 {
				e.endSilentHolder(ctx, s.ActivePID, b.ApplicationName, who)
			}
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(SlotPoll):
		}
	}
}

// reachable pings the source database and the store. A wrong password, a
// role or database that does not exist are configuration errors: waiting
// does not fix them.
func (e *Engine) reachable(ctx context.Context) error {
	for _, db := range []struct {
		key  string
		pool *pgxpool.Pool
	}{{"database_url", e.pool}, {"store.database_url", e.store.Pool()}} {
		err := db.pool.Ping(ctx)
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			switch pe.Code {
			case "28P01", "28000", "3D000": // invalid_password, invalid_authorization_specification, invalid_catalog_name
				return &ConfigError{db.key, fmt.Sprintf("%s (SQLSTATE %s); fix the URL or the role", pe.Message, pe.Code)}
			}
		}
		if err != nil {
			return err
		}
	}
	in, err := cdc.InRecovery(ctx, e.store.Pool())
	if err != nil {
		return err
	}
	if in {
		return e.storeInRecovery()
	}
	return nil
}

// errStoreStandby marks a store whose server is in recovery.
var errStoreStandby = errors.New("the store is read-only")

// storeInRecovery is why the store cannot be used while its server is a
// standby: retried, since a standby reached during a promotion becomes
// writable, but named with the fix, since most often it is configuration.
func (e *Engine) storeInRecovery() error {
	if e.cfg.StoreURL == e.cfg.DatabaseURL {
		return fmt.Errorf("%w: database_url is a standby (in recovery), and repstream writes its state to the same database unless store.database_url is set: to read from a standby (PostgreSQL 16+), set store.database_url to a writable database on the primary; otherwise point database_url at the primary", errStoreStandby)
	}
	return fmt.Errorf("%w: store.database_url is a standby (in recovery): repstream writes its state there; point it at the primary", errStoreStandby)
}

// endSilentHolder ends every connection of the slot's holder (its
// walsender, and its store writer, so a holder that wakes up cannot commit
// what the standby applies again) when the holder has not answered
// replication for TakeoverAfter. Its process, when it runs again, finds
// its connections gone and becomes a standby.
func (e *Engine) endSilentHolder(ctx context.Context, pid int32, app, who string) {
	silent, visible, err := holderSilence(ctx, e.pool, pid)
	if err != nil {
		// Polled again shortly; a lost connection is reported by the wait itself.
		e.log.Debug("standby: cannot read the slot holder's replication activity", "held_by", who, "err", err)
		return
	}
	if !visible {
		if !e.hiddenHolder.Swap(true) {
			e.log.Warn("standby: this role cannot see whether the slot holder answers replication (pg_stat_replication hides another role's walsender): a stopped holder is taken over only once wal_sender_timeout ends it, not after bus.takeover_after; grant pg_read_all_stats (and pg_signal_backend) to this role, or connect as the holder's role",
				"held_by", who, "takeover_after", e.cfg.TakeoverAfter)
		}
		return
	}
	if silent < e.cfg.TakeoverAfter {
		return
	}
	tag, ok := strings.CutPrefix(app, "repstream ")
	if !ok {
		tag = "" // not one of ours: end the walsender only
	}
	const end = `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE pid <> pg_backend_pid() AND (pid = $1 OR ($2 <> '' AND application_name LIKE 'repstream%' AND right(application_name, length($2) + 1) = ' ' || $2))`
	var n int
	err = e.pool.QueryRow(ctx, end, pid, tag).Scan(&n)
	if sp := e.store.Pool(); err == nil && sp != e.pool && tag != "" {
		// The store in another database: its writer connects there.
		var m int
		err = sp.QueryRow(ctx, end, int32(0), tag).Scan(&m)
		n += m
	}
	if err != nil {
		e.log.Error("standby: cannot end the silent slot holder's connections (the role needs to be the holder's, or pg_signal_backend); waiting for wal_sender_timeout", "held_by", who, "err", err)
		return
	}
	e.log.Warn("standby: the slot holder stopped answering; ended its connections to take over", "held_by", who,
		"silent", silent.Round(time.Millisecond), "connections", n)
}

// holderSilence is how long walsender pid has not answered replication
// (zero when it has not yet answered or is gone). visible is false when
// this role may not see it: without pg_read_all_stats, pg_stat_replication
// shows another role's walsender with every column but its pid NULL.
func holderSilence(ctx context.Context, pool *pgxpool.Pool, pid int32) (silent time.Duration, visible bool, err error) {
	var state *string
	var secs *float64
	err = pool.QueryRow(ctx, `SELECT state, extract(epoch FROM now() - reply_time)::float8 FROM pg_stat_replication WHERE pid = $1`, pid).Scan(&state, &secs)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return 0, true, nil
	case err != nil:
		return 0, false, fmt.Errorf("pg_stat_replication: %w", err)
	case state == nil:
		return 0, false, nil
	case secs == nil:
		return 0, true, nil
	}
	return time.Duration(*secs * float64(time.Second)), true, nil
}

func (e *Engine) setWaiting(who string) {
	e.mu.Lock()
	e.waiting = who
	e.mu.Unlock()
}

// backoff is exponential with full jitter, capped at 30s.
func backoff(attempt int) time.Duration {
	ceil := math.Min(float64(30*time.Second), float64(250*time.Millisecond)*math.Pow(2, float64(attempt-1)))
	return time.Duration(mrand.Int64N(int64(ceil))) + 50*time.Millisecond
}

func (e *Engine) publication(ctx context.Context, tables []cdc.Table, keys map[string][]string) (cdc.Publication, error) {
	p, err := cdc.LookupPublication(ctx, e.pool, e.cfg.Publication)
	if err != nil {
		return p, err
	}
	if !p.Exists && e.standby.Load() {
		return p, fmt.Errorf("publication %s does not exist, and the source is a standby (read-only): create it on the primary, whose tables this standby replicates: %s",
			e.cfg.Publication, cdc.PublicationDDLFor(e.cfg.Publication, tables, keys, p.ColumnLists))
	}
	if !p.Exists && e.cfg.CreatePublication {
		if err := cdc.CreatePublication(ctx, e.pool, e.cfg.Publication, tables, keys); err != nil {
			return p, fmt.Errorf("%w (create it as a DBA: %s)", err, cdc.PublicationDDLFor(e.cfg.Publication, tables, keys, p.ColumnLists))
		}
		e.log.Info("created publication", "publication", e.cfg.Publication, "sql", cdc.PublicationDDLFor(e.cfg.Publication, tables, keys, p.ColumnLists))
		if p, err = cdc.LookupPublication(ctx, e.pool, e.cfg.Publication); err != nil {
			return p, err
		}
	}
	return p, cdc.CheckPublication(e.cfg.Publication, p, tables, keys)
}

// session is one replication connection's life: bootstrap, then stream.
func (e *Engine) session(ctx context.Context) error {
	if err := e.checkSource(ctx); err != nil {
		return err
	}
	shapes, err := e.inspect(ctx)
	if err != nil {
		return e.refused(err)
	}
	tables, keys, pubCols := layout(shapes)
	if err := e.resolveWhere(ctx); err != nil {
		return e.refused(err)
	}
	pub, err := e.publication(ctx, tables, pubCols)
	if err != nil {
		return e.refused(err)
	}
	if err := e.members(ctx, shapes); err != nil {
		return err
	}
	e.resolveSources()
	shapeFP, err := shapeFingerprint(ctx, e.pool, e.cfg.Publication, tables, keys, pub)
	if err != nil {
		return err
	}
	rconn, err := cdc.ConnectReplication(ctx, e.cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer rconn.Close(context.Background())
	sys, err := cdc.IdentifySystem(ctx, rconn)
	if err != nil {
		return err
	}
	w, err := newWriter(ctx, e.cfg.StoreURL, e.cfg.AsyncCommit)
	if err != nil {
		return err
	}
	defer w.close(context.Background())
	// Held until the session ends, load included: a second replicator waits.
	if err := w.lockSlot(ctx, e.cfg.Slot); err != nil {
		return err
	}

	// Every read the decision needs must succeed: a failed read is retried,
	// only a proven cause starts an epoch.
	meta, marks, err := e.store.metaAndMarks(ctx)
	hasMeta := err == nil
	if err != nil && !errors.Is(err, ErrNoMeta) {
		return err
	}
	slot, slotOK, err := cdc.LookupSlot(ctx, e.pool, e.cfg.Slot)
	if err != nil {
		return err
	}
	// A promoted standby (a failover slot synchronized to it) continues the
	// old timeline's history up to the switchpoint: a checkpoint at or
	// before it means the same changes, so the epoch may go on; the slot
	// checks in epochReason still catch a slot ahead of the store.
	promoted := false
	if hasMeta && meta.SystemID == sys.ID && meta.Timeline != sys.Timeline {
		if promoted, err = cdc.HistoryContinues(ctx, rconn, meta.Timeline, sys.Timeline, meta.Checkpoint); err != nil {
			return err
		}
		if promoted {
			e.log.Warn("the server was promoted: its timeline continues the state's history past the checkpoint; resuming the epoch",
				"timeline", sys.Timeline, "was", meta.Timeline, "checkpoint", meta.Checkpoint)
			meta.Timeline = sys.Timeline
		}
	}
	// An invalidated slot cannot stream: on a standby a recovery conflict
	// invalidates it with wal_status not always 'lost' (16).
	invalidated := ""
	if slotOK {
		x, ok, err := cdc.LookupSlotExtra(ctx, e.pool, e.cfg.Slot)
		if err != nil {
			return err
		}
		if ok && (x.Conflicting || x.InvalidationReason != "" || slot.WALStatus == "lost") {
			slot.WALStatus, invalidated = "lost", invalidation(x)
		}
	}
	reason := e.epochReason(meta, marks, hasMeta, sys, slot, slotOK, e.hash+"/"+shapeDigest(shapes), shapeFP)
	if reason != "" && slotOK && slot.WALStatus == "lost" {
		reason += invalidated
	}
	if reason == "" && promoted {
		if err := e.store.setTimeline(ctx, sys.Timeline); err != nil {
			return err
		}
	}
	if reason != "" {
		if hasMeta {
			e.log.Error("STARTING A NEW EPOCH: rebuilding all derived state from a fresh snapshot; clients will reset", "reason", reason, "old_epoch", meta.Epoch)
		} else {
			e.log.Info("initial load", "reason", reason)
		}
		e.unsure = nil // the new epoch resets every client anyway
		old := meta
		if meta, err = e.reload(ctx, rconn, w, sys, tables, keys, pub, e.hash+"/"+shapeDigest(shapes), shapeFP, reason, hasMeta, slotOK); err != nil {
			return err
		}
		e.metrics.newEpoch.Inc()
		if hasMeta && old.SystemID == sys.ID {
			e.dropOldSlot(ctx, old.Slot)
		}
		e.announce = true
	} else {
		// The reader's first status report confirms the stored checkpoint:
		// it must be on disk, even if an async commit wrote it.
		if err := w.flush(ctx); err != nil {
			return err
		}
		if marks.ShapeHash == nil {
			// A store an older version wrote: it confirmed idle positions
			// without storing them, so the slot may be ahead by idle WAL.
			if slot.ConfirmedFlushLSN > meta.Checkpoint {
				meta.Checkpoint = slot.ConfirmedFlushLSN
			}
			if err := w.setShape(ctx, shapeFP, meta.Checkpoint); err != nil {
				return err
			}
		}
		e.resolveLoadProblems(tables)
		if e.announced != meta.Epoch {
			e.announce = true
		}
	}
	e.mu.Lock()
	e.meta = meta
	e.mu.Unlock()
	return e.stream(ctx, rconn, w, meta, keys, shapes)
}

// checkSource notes whether the source is a standby, which PostgreSQL 16
// and later can decode, with the store on a writable server.
func (e *Engine) checkSource(ctx context.Context) error {
	var in bool
	var version int
	if err := e.pool.QueryRow(ctx, `SELECT pg_is_in_recovery(), current_setting('server_version_num')::int`).Scan(&in, &version); err != nil {
		return fmt.Errorf("stream: database_url: %w", err)
	}
	was := e.standby.Swap(in)
	switch {
	case in && version < cdc.V16:
		return fmt.Errorf("database_url is a standby running PostgreSQL %d: logical decoding on a standby needs PostgreSQL 16 or later; point database_url at the primary", version/10000)
	case in && !was:
		e.log.Warn("the source is a standby: repstream decodes its WAL there and writes its state to store.database_url; no heartbeat (it needs the primary), and the publication must be created on the primary",
			"store", cdc.SafeURL(e.cfg.StoreURL))
	case !in && was:
		e.log.Warn("the source is no longer a standby (promoted): heartbeat on again")
	}
	return nil
}

// refused reports a source the catalog refuses while it lasts, and returns err.
func (e *Engine) refused(err error) error {
	if p, ok := e.startProblem(err); ok {
		e.Report(p)
	}
	return err
}

// load takes a consistent snapshot: the slot is created with an exported
// snapshot, the tables are read as of it, and the state commits with the
// slot's consistent point as checkpoint.
// hash is the sources fingerprint and the shapes' digest the state is
// built with, shapeFP its shapeFingerprint.
func (e *Engine) load(ctx context.Context, rconn *pgconn.PgConn, w *writer, sys cdc.System, tables []cdc.Table, keys map[string][]string, pub cdc.Publication, slotExists bool, hash, shapeFP string) (Meta, error) {
	if slotExists {
		e.log.Warn("dropping the existing slot: its position has no matching state, and only a new slot exports a consistent snapshot", "slot", e.cfg.Slot)
		if err := cdc.DropSlot(ctx, e.pool, e.cfg.Slot); err != nil {
			return Meta{}, err
		}
	}
	created, err := e.createSlot(ctx, rconn)
	if err != nil {
		return Meta{}, err
	}
	start := time.Now()
	sconn, err := cdc.ConnectSnapshot(ctx, e.cfg.DatabaseURL)
	if err != nil {
		return Meta{}, fmt.Errorf("stream: %w", err)
	}
	defer sconn.Close(context.Background())
	// Row-level security would hide rows from the snapshot but not from the
	// stream: with row_security off, the read fails instead.
	if _, err := sconn.Exec(ctx, `SET row_security = off`); err != nil {
		return Meta{}, fmt.Errorf("stream: prepare snapshot: %w", err)
	}
	snap, err := cdc.BeginSnapshot(ctx, sconn, created.SnapshotName)
	if err != nil {
		return Meta{}, err
	}
	defer snap.Close(context.Background()) //nolint:errcheck
	if err := w.begin(ctx); err != nil {
		return Meta{}, err
	}
	meta := Meta{Epoch: newEpoch(), Slot: e.cfg.Slot, SystemID: sys.ID, Timeline: sys.Timeline,
		Checkpoint: created.ConsistentPoint, LogFrom: created.ConsistentPoint - 1, LoadedAt: time.Now().UTC()}
	if err := w.reset(ctx, meta, hash, shapeFP); err != nil {
		w.rollback(ctx)
		return Meta{}, err
	}
	states := map[string]*acc{}
	var rows int64
	for i, r := range e.rules {
		t := tables[i]
		pt := pub.Tables[t.String()]
		// Stream the snapshot straight into COPY: rows are never all in memory.
		type item struct {
			key  string
			vals []*string
		}
		items := make(chan item, 1024)
		scanErr := make(chan error, 1)
		sctx, cancel := context.WithCancel(ctx)
		go func() {
			defer close(items)
			scanErr <- snap.Scan(sctx, t, keys[t.String()], pt.RowFilter, func(key, vals []*string) error {
				k, ok := EncodeKey(key)
				if !ok {
					return fmt.Errorf("stream: %s has a row with a NULL key", t)
				}
				cp := make([]*string, len(vals))
				copy(cp, vals)
				select {
				case items <- item{k, cp}:
					return nil
				case <-sctx.Done():
					return sctx.Err()
				}
			})
		}()
		n, err := w.copyRows(ctx, func() ([]any, error) {
			it, ok := <-items
			if !ok {
				return nil, nil
			}
			if c, ok := r.Contribute(it.vals); ok {
				a := states[c.Subject]
				if a == nil {
					a = &acc{}
					states[c.Subject] = a
				}
				a.add(c, 1, r.buckets)
			}
			return []any{r.ID, it.key, it.vals}, nil
		})
		cancel()
		for range items { // drain so the scanner can finish
		}
		if serr := <-scanErr; serr != nil && err == nil && !errors.Is(serr, context.Canceled) {
			err = serr
		}
		if err != nil {
			w.rollback(ctx)
			return Meta{}, err
		}
		rows += n
	}
	list := make([]State, 0, len(states))
	for s, a := range states {
		if a.zero() {
			continue
		}
		// As a cursor the load is at ConsistentPoint-1: a transaction committing
		// exactly at the consistent point is streamed, not loaded.
		d := Fold(State{}, s, a.count, a.sum, a.hist, created.ConsistentPoint-1, meta.LoadedAt, e.cfg.Prior)
		list = append(list, d.After)
	}
	if err := w.writeStates(ctx, list); err != nil {
		w.rollback(ctx)
		return Meta{}, err
	}
	// The load commits synchronously: replication starts right after it.
	if _, err := w.tx.Exec(ctx, `SET LOCAL synchronous_commit = on`); err != nil {
		w.rollback(ctx)
		return Meta{}, fmt.Errorf("stream: load: %w", err)
	}
	if _, err := w.commit(ctx); err != nil {
		return Meta{}, err
	}
	e.log.Info("snapshot loaded", "epoch", meta.Epoch, "rows", rows, "subjects", len(list),
		"consistent_point", created.ConsistentPoint.String(), "took", time.Since(start).Round(time.Millisecond))
	return meta, nil
}

// createSlot creates the slot. On a standby the server waits for the
// primary's next running-transactions record; the store, on the primary,
// asks for one every standbySnapshotEvery meanwhile, so it does not take
// 15 s or, on an idle primary, forever.
func (e *Engine) createSlot(ctx context.Context, rconn *pgconn.PgConn) (cdc.CreatedSlot, error) {
	if !e.standby.Load() {
		return cdc.CreateSlot(ctx, rconn, e.cfg.Slot)
	}
	hctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(standbySnapshotEvery)
		defer t.Stop()
		for {
			err := cdc.LogStandbySnapshot(hctx, e.store.Pool())
			if err != nil && hctx.Err() == nil {
				e.log.Warn("creating the slot on the standby waits for the primary's next running-transactions record; the store's database could not ask for one (it must be on the primary, and the role needs EXECUTE on pg_log_standby_snapshot, a superuser's by default)",
					"err", err)
				return
			}
			select {
			case <-hctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	created, err := cdc.CreateSlot(ctx, rconn, e.cfg.Slot)
	stop()
	<-done
	return created, err
}

// standbySnapshotEvery is how often the primary is asked for a
// running-transactions record while a slot is created on its standby.
const standbySnapshotEvery = 500 * time.Millisecond

// dropOldSlot drops the slot a previous configuration used, which repstream
// created and nothing else reads: left alone it would pin WAL forever.
func (e *Engine) dropOldSlot(ctx context.Context, old string) {
	if old == e.cfg.Slot {
		return
	}
	s, ok, err := cdc.LookupSlot(ctx, e.pool, old)
	if err != nil || !ok {
		return
	}
	if s.Active {
		e.log.Warn("the previous slot is still in use by another process; drop it when it is no longer needed",
			"slot", old, "pid", s.ActivePID, "sql", fmt.Sprintf("SELECT pg_drop_replication_slot('%s');", old))
		return
	}
	if err := cdc.DropSlot(ctx, e.pool, old); err != nil {
		e.log.Warn("could not drop the previous slot; it pins WAL until dropped", "slot", old, "err", err)
		return
	}
	e.log.Warn("dropped the slot the previous configuration used", "slot", old)
}

func newEpoch() string {
	var b [8]byte
	rand.Read(b[:]) //nolint:errcheck // crypto/rand never fails on Linux
	return hex.EncodeToString(b[:])
}

// stream runs the reader and the applier until either fails.
func (e *Engine) stream(ctx context.Context, rconn *pgconn.PgConn, w *writer, meta Meta, keys map[string][]string, shapes []*shape) error {
	reader := cdc.NewReader(rconn, cdc.ReaderConfig{Slot: e.cfg.Slot, Publication: e.cfg.Publication,
		StatusInterval: e.cfg.StatusInterval, Logger: e.log, Started: func() {
			// Announced only once the slot is held: a standby waiting for
			// it must not tell the serving nodes anything.
			e.setWaiting("")
			// Nothing received is nothing to apply: an idle source with
			// no heartbeat (a standby, heartbeat off) sends no event.
			e.ready.Store(true)
			if e.announce {
				e.announce = false
				e.pub.Reset(meta)
				e.announced = meta.Epoch
			}
			e.publishUnsure(meta)
		}})
	e.mu.Lock()
	e.reader = reader
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.reader = nil
		e.mu.Unlock()
	}()
	parent := ctx
	ctx, end := context.WithCancelCause(ctx)
	cancel := func() { end(nil) }
	defer cancel()
	// The reader outlives a shutdown request until the last group is
	// durable and confirmed, so its final status update carries it.
	rctx, rcancel := context.WithCancel(context.Background())
	defer rcancel()
	// A deep queue lets decoding run ahead while a group commits; the
	// reader bounds its memory by bytes (QueueBytes), the channel its count.
	events := make(chan cdc.Event, queueEvents)
	readErr := make(chan error, 1)
	readDone := make(chan struct{})
	var readRes error
	go func() {
		defer close(readDone)
		readRes = reader.Run(rctx, meta.Checkpoint, events)
		readErr <- readRes
	}()
	var wg sync.WaitGroup
	if e.cfg.Heartbeat > 0 && !e.standby.Load() {
		wg.Add(1)
		go func() { defer wg.Done(); e.heartbeatLoop(ctx) }()
	}
	defer wg.Wait()

	dur := &durable{confirm: func(lsn LSN) {
		reader.Confirm(lsn)
		e.mu.Lock()
		if lsn > e.meta.Checkpoint {
			e.meta.Checkpoint = lsn
		}
		e.mu.Unlock()
	}, wake: make(chan struct{}, 1)}
	wg.Add(1)
	go func() { defer wg.Done(); e.flushLoop(ctx, dur) }()
	ap := newApplier(e.cfg.Applier, e.metrics.commit, e.log, w, e.rules, keys, e.cfg.Prior, e.pub, meta.Checkpoint, dur.add)
	ap.onIdle = reader.Consumed
	ap.watch(shapes, &guard{e: e})
	wg.Add(1)
	go func() { defer wg.Done(); e.watchSchema(ctx, ap.guard, shapes, end) }()
	err := e.applyLoop(ctx, ap, events, reader.Release, readErr)
	var cu *commitUnknown
	if errors.As(err, &cu) {
		e.unsure = &unsureGroup{epoch: meta.Epoch, pos: cu.pos, txns: cu.txns}
	}
	if errors.Is(context.Cause(ctx), errReload) {
		err = errReload
	}
	if so := (*SumOverflowError)(nil); errors.As(err, &so) {
		e.Report(Problem{Code: "sum_overflow", Reason: so.Error() + "; nothing from that transaction on is derived",
			Fix: fmt.Sprintf("the subject holds more than %d ratings' worth of its scale's far end: narrow the scales that feed it, or score a column in larger units (a new configuration reloads)", int64(MaxSubjectRatings))})
	}
	e.mu.Lock()
	e.base = e.base.plus(ap.stats)
	e.stats = e.base
	e.mu.Unlock()
	if parent.Err() != nil && dur.waiting() {
		e.flushForShutdown(w, dur)
	}
	cancel()
	rcancel()
	<-readDone // applyLoop may have taken the reader's error already
	if err == nil {
		err = readRes
	}
	w.rollback(context.Background())
	return err
}

// flushForShutdown makes the last groups durable and confirms them before
// the reader sends its final status: a clean stop leaves the slot exactly
// at the checkpoint. A synchronous commit flushes all WAL before it.
func (e *Engine) flushForShutdown(w *writer, d *durable) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// A transaction left open holds part of a source transaction (a spill
	// or a TRUNCATE): it is rolled back, never committed with the flush.
	if err := w.flush(ctx); err != nil {
		e.log.Warn("could not flush the store on the way out; the slot confirms less, and the rest is applied again next time", "err", err)
		return
	}
	var flush LSN
	if err := w.conn.QueryRow(ctx, `SELECT pg_current_wal_flush_lsn()`).Scan(&flush); err == nil {
		d.flushed(flush)
	}
}

// queueEvents is the capacity of the channel between reader and applier:
// each slot costs an Event struct, row data or not.
const queueEvents = 16384

// applyLoop applies events in chunks, handing each chunk's footprint back
// to the reader (release) once applied.
func (e *Engine) applyLoop(ctx context.Context, ap *applier, events <-chan cdc.Event, release func(int64), readErr <-chan error) error {
	const chunk = 2048
	buf := make([]cdc.Event, 0, chunk)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		buf = buf[:0]
		// Wait for the first event, or for the open group's deadline.
		wait := time.Hour
		if ap.grouping && ap.cur == nil {
			wait = ap.cfg.MaxGroupDelay - time.Since(ap.groupStart)
		} else if d, ok := ap.idleDue(); ok {
			wait = d // an idle position waits to be stored
		}
		timer.Reset(max(wait, 0))
		select {
		case ev := <-events:
			buf = append(buf, ev)
		case err := <-readErr:
			// The reader stopped. Commit the complete transactions, unless one
			// is half-read: its row changes are already in the open group, so
			// the whole group is dropped and re-read from the checkpoint.
			if ap.cur == nil {
				if cerr := ap.commit(ctx); cerr != nil {
					return errors.Join(err, cerr)
				}
			}
			if err == nil {
				err = errors.New("stream: reader stopped")
			}
			return readerStopped{err}
		case <-timer.C:
		case <-ctx.Done():
			if ap.cur == nil {
				if err := ap.commit(context.Background()); err != nil {
					return err
				}
			}
			return ctx.Err()
		}
	drain:
		for len(buf) < chunk {
			select {
			case ev := <-events:
				buf = append(buf, ev)
			default:
				break drain
			}
		}
		err := ap.apply(ctx, buf)
		var held int64
		for i := range buf {
			held += buf[i].Footprint
			buf[i] = cdc.Event{} // the chunk's tuples are garbage now
		}
		release(held)
		if err != nil {
			return err
		}
		more := len(events) > 0
		if ap.due(more) {
			if err := ap.commit(ctx); err != nil {
				return err
			}
		}
		e.mu.Lock()
		e.stats = e.base.plus(ap.stats)
		e.mu.Unlock()
		if !more && ap.cur == nil && !ap.grouping {
			e.ready.Store(true)
		}
	}
}

type readerStopped struct{ err error }

func (r readerStopped) Error() string { return r.err.Error() }
func (r readerStopped) Unwrap() error { return r.err }

// durable holds positions until the store's commits behind them are
// flushed: only then may the slot be confirmed past them.
type durable struct {
	confirm func(LSN)
	wake    chan struct{}
	mu      sync.Mutex
	pending []pendingPos // guarded by mu; in commit order
}

type pendingPos struct{ pos, wal LSN }

// add queues pos, durable once the server has flushed its WAL up to wal
// (0: nothing of its own to flush, only what was queued before it).
func (d *durable) add(pos, wal LSN) {
	d.mu.Lock()
	if len(d.pending) == 0 && wal == 0 {
		d.mu.Unlock()
		d.confirm(pos)
		return
	}
	d.pending = append(d.pending, pendingPos{pos, wal})
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// flushed confirms every queued position whose commit is now durable.
func (d *durable) flushed(flush LSN) {
	d.mu.Lock()
	var last LSN
	n := 0
	for _, p := range d.pending {
		if p.wal > flush {
			break
		}
		last = p.pos
		n++
	}
	d.pending = d.pending[n:]
	d.mu.Unlock()
	if n > 0 {
		d.confirm(last)
	}
}

func (d *durable) waiting() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.pending) > 0
}

// flushLoop polls the server's WAL flush position while positions wait.
func (e *Engine) flushLoop(ctx context.Context, d *durable) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.wake:
		case <-t.C:
		}
		if !d.waiting() {
			continue
		}
		var flush LSN
		// The store's commits wait for the store server's flush.
		if err := e.store.Pool().QueryRow(ctx, `SELECT pg_current_wal_flush_lsn()`).Scan(&flush); err != nil {
			continue // the session is ending, or will
		}
		d.flushed(flush)
	}
}

// HeartbeatPrefix is the prefix of repstream's heartbeat logical messages.
const HeartbeatPrefix = "repstream.heartbeat"

// heartbeatLoop emits a logical message now and then: the slot then
// advances and lag is measurable even when nothing else is written.
func (e *Engine) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(e.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_, err := e.pool.Exec(ctx, `SELECT pg_logical_emit_message(false, $1, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint::text)`, HeartbeatPrefix)
			if err != nil && ctx.Err() == nil {
				e.log.Warn("heartbeat failed", "err", err)
			}
		}
	}
}

func (e *Engine) pruneLoop(ctx context.Context) {
	every := min(e.cfg.Retention/10, time.Minute)
	t := time.NewTicker(max(every, time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n, err := e.store.Prune(ctx, time.Now().Add(-e.cfg.Retention))
			if err != nil && ctx.Err() == nil {
				e.log.Warn("pruning the delta log failed", "err", err)
			} else if n > 0 {
				e.log.Info("pruned delta log", "deltas", n, "retention", e.cfg.Retention)
			}
		}
	}
}
