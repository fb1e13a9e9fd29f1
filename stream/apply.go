package stream

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/repstream/repstream/cdc"
)

// binding maps a rule's columns onto one version of a relation's columns.
type binding struct {
	rule *Rule
	cols []int // index in the tuple of each rule column, -1 when absent
	key  []int // index in the tuple of each key column
	// bad says why this version of the relation is not the one the session
	// derives the source by: its changes stop the source instead.
	bad *Problem
	// deferrable: the key is DEFERRABLE, so two rows may share it for a while.
	deferrable bool
}

// ApplierConfig tunes group commit; zero values mean the defaults.
type ApplierConfig struct {
	// MaxGroupChanges closes a group after this many row changes (zero: 20000).
	MaxGroupChanges int
	// MaxGroupDelay closes a group this long after it opened (zero: 50ms).
	// A group also closes as soon as no more changes are waiting.
	MaxGroupDelay time.Duration
	// CacheRows bounds the in-memory row shadow cache (zero: 100000 rows).
	CacheRows int
	// CacheBytes bounds the row shadow cache's memory too, for rows with
	// long values (zero: 32 MiB).
	CacheBytes int
	// SpillBytes is how much pending row shadow an open group holds before
	// writing it into its store transaction (zero: 16 MiB); it also spills
	// past MaxGroupChanges rows. A source transaction of any size thus
	// holds bounded memory, and still commits in one store transaction.
	SpillBytes int
	// CacheStates bounds the in-memory state cache (zero: 200000 subjects).
	CacheStates int
}

// applier folds the decoded stream into the store. It is used by one
// goroutine at a time (the engine's session).
type applier struct {
	cfg        ApplierConfig
	commitTime prometheus.Observer
	log        *slog.Logger
	w          *writer
	prior      Prior
	rules      map[string]*Rule    // by schema.name
	keys       map[string][]string // key columns by schema.name
	bound      map[*cdc.Relation]*binding
	shapes     map[uint32]*shape // by table OID; nil: bind by name, unchecked
	guard      *guard            // the sources stopped in this session
	pub        Publisher
	// onDone hands over a position that may be confirmed to the slot once
	// the store's WAL is flushed up to wal (0: nothing new to flush).
	onDone func(pos, wal LSN)
	// onIdle, if set, hears of an idle position applied but not yet stored.
	onIdle func(pos LSN)

	checkpoint LSN // last committed position

	rowCache   map[rowKey][]*string // shadow rows as the open group sees them
	cacheBytes int                  // what rowCache holds, estimated by rowSize
	stateCache map[string]State     // states as the open group sees them

	// the open group
	dirty       map[rowKey]shadowRow
	dirtyBytes  int              // what dirty holds, estimated by rowSize
	changed     map[string]State // the group's new states, by subject
	txns        []Txn
	pending     []*txnAcc // completed transactions not yet folded into states
	cur         *txnAcc   // the open source transaction
	skip        bool      // the open source transaction was applied before
	grouping    bool      // a group is open (its writes are sent when it commits)
	groupStart  time.Time
	groupRows   int
	groupTxns   uint64
	groupDeltas uint64
	groupPos    LSN       // position the group's commit records
	idleAt      time.Time // when an idle position was last stored
	stats       ApplyStats
	pre         []preKey // per event of the chunk being applied: the keys prefetch encoded
	// displaced holds rows whose key another row took within the open
	// source transaction (a DEFERRABLE key swapped), until they move on.
	displaced map[rowKey][][]*string
}

// ApplyStats counts what the applier did, for metrics.
type ApplyStats struct {
	Changes  uint64        // row changes applied
	Txns     uint64        // source transactions applied
	Deltas   uint64        // deltas produced
	Groups   uint64        // store commits
	Skipped  uint64        // transactions skipped because they were already applied
	LastLag  time.Duration // commit → apply delay of the last transaction or heartbeat
	LastSeen time.Time     // when LastLag was measured
	CommitNs uint64        // total store commit time
}

// plus adds the counters of o; the last-lag figures are o's when it has any.
func (s ApplyStats) plus(o ApplyStats) ApplyStats {
	s.Changes += o.Changes
	s.Txns += o.Txns
	s.Deltas += o.Deltas
	s.Groups += o.Groups
	s.Skipped += o.Skipped
	s.CommitNs += o.CommitNs
	if !o.LastSeen.IsZero() {
		s.LastLag, s.LastSeen = o.LastLag, o.LastSeen
	}
	return s
}

func newApplier(cfg ApplierConfig, commitTime prometheus.Observer, log *slog.Logger, w *writer, rules []*Rule, keys map[string][]string, prior Prior, pub Publisher, checkpoint LSN, onDone func(pos, wal LSN)) *applier {
	if cfg.MaxGroupChanges <= 0 {
		cfg.MaxGroupChanges = 20000
	}
	if cfg.MaxGroupDelay <= 0 {
		cfg.MaxGroupDelay = 50 * time.Millisecond
	}
	if cfg.CacheRows <= 0 {
		cfg.CacheRows = 100000
	}
	if cfg.CacheStates <= 0 {
		cfg.CacheStates = 200000
	}
	if cfg.CacheBytes <= 0 {
		cfg.CacheBytes = 32 << 20
	}
	if cfg.SpillBytes <= 0 {
		cfg.SpillBytes = 16 << 20
	}
	a := &applier{cfg: cfg, commitTime: commitTime, log: log, w: w, prior: prior, rules: map[string]*Rule{}, keys: keys,
		bound: map[*cdc.Relation]*binding{}, pub: pub, onDone: onDone, checkpoint: checkpoint,
		rowCache: map[rowKey][]*string{}, stateCache: map[string]State{}, displaced: map[rowKey][][]*string{}}
	for _, r := range rules {
		a.rules[r.Table()] = r
	}
	a.resetGroup()
	return a
}

func (a *applier) resetGroup() {
	// Cleared, not replaced: a map keeps its buckets, so the next group of
	// the same size does not grow one again.
	if a.dirty == nil {
		a.dirty, a.changed = map[rowKey]shadowRow{}, map[string]State{}
	}
	clear(a.dirty)
	a.dirtyBytes = 0
	clear(a.changed)
	a.txns = nil
	a.pending = nil
	a.groupRows, a.groupTxns, a.groupDeltas = 0, 0, 0
	a.groupPos = 0
	a.grouping = false
}

// watch makes the applier check each source's relation against the shape
// the session derives it by, and skip the sources g stops.
func (a *applier) watch(shapes []*shape, g *guard) {
	a.shapes = map[uint32]*shape{}
	for _, s := range shapes {
		a.shapes[s.info.OID] = s
	}
	a.guard = g
}

func (a *applier) bind(rel *cdc.Relation) *binding {
	if b, ok := a.bound[rel]; ok {
		return b
	}
	var b *binding
	r, ok := a.rules[rel.Namespace+"."+rel.Name]
	var bad *Problem
	deferrable := false
	if a.shapes != nil {
		// Sources are known by OID: a renamed table keeps it, a table
		// dropped and created again under the same name does not.
		s, known := a.shapes[rel.ID]
		switch {
		case known:
			r, ok, bad = s.rule, true, checkRelation(s, rel)
			deferrable = s.info.KeyDeferrable
		case ok:
			bad = &Problem{Code: "source_table_replaced", Reason: fmt.Sprintf("table %s was dropped and created again", r.Table()),
				Fix: "none needed: repstream reloads under a new epoch once the catalog agrees"}
		}
	}
	if ok {
		b = &binding{rule: r, bad: bad, deferrable: deferrable}
		for _, c := range r.Columns {
			b.cols = append(b.cols, rel.ColumnIndex(c))
		}
		for _, c := range a.keys[r.Table()] {
			b.key = append(b.key, rel.ColumnIndex(c))
		}
		for i, c := range b.cols {
			if c < 0 && b.bad == nil {
				b.bad = &Problem{Code: "source_column_missing",
					Reason: fmt.Sprintf("column %s of %s is not in the replication stream", r.Columns[i], r.Table()),
					Fix:    "add it to the publication's column list (repstream doctor prints the statement)"}
			}
		}
	}
	a.bound[rel] = b // nil: not a source table
	return b
}

// keyOf encodes the key columns of t; ok is false if any is missing.
func keyOf(t cdc.Tuple, idx []int) (string, bool) {
	if len(idx) == 1 {
		i := idx[0]
		if i < 0 || i >= len(t) || t[i].Kind != cdc.ValueText {
			return "", false
		}
		return string(t[i].Data), true
	}
	parts := make([]string, len(idx))
	for j, i := range idx {
		if i < 0 || i >= len(t) || t[i].Kind != cdc.ValueText {
			return "", false
		}
		parts[j] = string(t[i].Data)
	}
	b, _ := json.Marshal(parts)
	return string(b), true
}

// EncodeKey is keyOf for values read from a snapshot, so both agree.
func EncodeKey(vals []*string) (string, bool) {
	if len(vals) == 1 {
		if vals[0] == nil {
			return "", false
		}
		return *vals[0], true
	}
	parts := make([]string, len(vals))
	for i, v := range vals {
		if v == nil {
			return "", false
		}
		parts[i] = *v
	}
	b, _ := json.Marshal(parts)
	return string(b), true
}

// valsOf extracts the rule's columns from t; an unchanged TOAST value is
// taken from prev, the row as the shadow last saw it.
func valsOf(t cdc.Tuple, b *binding, prev []*string) []*string {
	out := make([]*string, len(b.cols))
	for j, i := range b.cols {
		if i < 0 || i >= len(t) {
			continue
		}
		switch t[i].Kind {
		case cdc.ValueText:
			s := string(t[i].Data)
			out[j] = &s
		case cdc.ValueUnchanged:
			if prev != nil && j < len(prev) {
				out[j] = prev[j]
			}
		}
	}
	return out
}

// apply processes a chunk of events. Events are in commit order; a chunk
// may end in the middle of a transaction.
func (a *applier) apply(ctx context.Context, evs []cdc.Event) error {
	if err := a.prefetch(ctx, evs); err != nil {
		return err
	}
	for i := range evs {
		if err := a.event(ctx, &evs[i], a.pre[i]); err != nil {
			return err
		}
		// A group that outgrew its bounds commits at the next transaction
		// end, not at the end of the chunk.
		if evs[i].Kind == cdc.EventCommit && a.cur == nil && a.grouping &&
			(a.groupRows >= a.cfg.MaxGroupChanges || time.Since(a.groupStart) >= a.cfg.MaxGroupDelay) {
			if err := a.commit(ctx); err != nil {
				return err
			}
		}
	}
	if err := a.foldPending(ctx); err != nil {
		return err
	}
	// Memory stays bounded whatever a transaction's size or shape: the
	// cache forgets, and a big group's pending shadow goes to its store
	// transaction, which commits with the rest of the group.
	a.trimCaches()
	if len(a.dirty) > a.cfg.MaxGroupChanges || a.dirtyBytes > a.cfg.SpillBytes {
		return a.spill(ctx)
	}
	return nil
}

// spill writes the group's pending shadow changes into its store
// transaction, opening it if need be; they commit with the group.
func (a *applier) spill(ctx context.Context) error {
	if err := a.w.begin(ctx); err != nil {
		return err
	}
	if err := a.w.writeRows(ctx, a.dirty); err != nil {
		return err
	}
	clear(a.dirty)
	a.dirtyBytes = 0
	return nil
}

// rowSize estimates the memory a shadow row holds in a map: the entry, its
// key and its values.
func rowSize(k rowKey, vals []*string) int {
	n := 96 + len(k.key) + 8*len(vals)
	for _, v := range vals {
		if v != nil {
			n += 16 + len(*v)
		}
	}
	return n
}

// open opens a group if none is; its store transaction starts only when
// something must be written before the group commits.
func (a *applier) open() {
	if !a.grouping {
		a.grouping, a.groupStart = true, time.Now()
	}
}

// prefetch loads, in one query, the shadow rows the chunk's updates and
// deletes will need.
func (a *applier) prefetch(ctx context.Context, evs []cdc.Event) error {
	var need []rowKey
	seen := map[rowKey]bool{}
	a.pre = append(a.pre[:0], make([]preKey, len(evs))...)
	for i := range evs {
		ev := &evs[i]
		if ev.Kind != cdc.EventUpdate && ev.Kind != cdc.EventDelete {
			continue
		}
		b := a.bind(ev.Rel)
		if b == nil || b.bad != nil || a.guard.isStopped(b.rule.ID) {
			continue
		}
		t := ev.Old
		if t == nil {
			t = ev.New
		}
		k, ok := keyOf(t, b.key)
		if !ok {
			continue
		}
		a.pre[i] = preKey{key: k, ok: true}
		rk := rowKey{b.rule.ID, k}
		if _, ok := a.rowCache[rk]; ok || seen[rk] {
			continue
		}
		if _, ok := a.dirty[rk]; ok {
			continue // pending in this group: the store has an older value
		}
		seen[rk] = true
		need = append(need, rk)
	}
	if len(need) == 0 {
		return nil
	}
	got, err := a.w.fetchRows(ctx, need)
	if err != nil {
		return err
	}
	a.trimCaches()
	for _, k := range need {
		a.cache(k, got[k]) // nil: no such row
	}
	return nil
}

// cache records a shadow row as the open group sees it.
func (a *applier) cache(k rowKey, vals []*string) {
	a.rowCache[k] = vals
	a.cacheBytes += rowSize(k, vals) // an overwrite counts twice: trimmed a little early
}

func (a *applier) trimCaches() {
	if len(a.rowCache) > a.cfg.CacheRows || a.cacheBytes > a.cfg.CacheBytes {
		a.rowCache, a.cacheBytes = map[rowKey][]*string{}, 0
	}
	if len(a.stateCache) > a.cfg.CacheStates {
		a.stateCache = map[string]State{}
	}
}

// lookup returns the shadow row for k, reading the store on a cache miss.
func (a *applier) lookup(ctx context.Context, k rowKey) ([]*string, error) {
	if v, ok := a.rowCache[k]; ok {
		return v, nil
	}
	if r, ok := a.dirty[k]; ok { // the cache was trimmed; the store is behind
		return r.vals, nil
	}
	got, err := a.w.fetchRows(ctx, []rowKey{k})
	if err != nil {
		return nil, err
	}
	a.cache(k, got[k])
	return got[k], nil
}

// setRow records a row's new values (nil: deleted). stored says whether the
// store holds the row before this change; the first change of a group to a
// row decides, since later ones only see the group's own pending values.
func (a *applier) setRow(k rowKey, vals []*string, stored bool) {
	a.cache(k, vals)
	if prev, ok := a.dirty[k]; ok {
		stored = prev.stored
	}
	a.dirty[k] = shadowRow{vals: vals, stored: stored}
	a.dirtyBytes += rowSize(k, vals)
}

// preKey is the key prefetch computed for an update or delete: the old
// row's key (the new row's when the key did not change), so row() need not
// encode it again.
type preKey struct {
	key string
	ok  bool
}

func (a *applier) event(ctx context.Context, ev *cdc.Event, pk preKey) error {
	switch ev.Kind {
	case cdc.EventBegin:
		a.skip = ev.LSN < a.checkpoint
		if a.skip {
			a.stats.Skipped++
		}
		a.cur = &txnAcc{lsn: ev.LSN, at: ev.Time, subj: map[string]*acc{}}
		return nil
	case cdc.EventCommit:
		if a.cur == nil {
			return fmt.Errorf("stream: commit at %s without begin", ev.LSN)
		}
		if len(a.displaced) > 0 {
			a.log.Error("rows still share a key at commit; the row shadow may be off for them", "rows", len(a.displaced))
			clear(a.displaced)
		}
		if !a.skip {
			a.cur.lsn, a.cur.at = ev.LSN, ev.Time
			a.pending = append(a.pending, a.cur)
			if ev.EndLSN > a.groupPos {
				a.groupPos = ev.EndLSN
			}
			a.groupTxns++
			a.stats.LastLag = time.Since(ev.Time)
			a.stats.LastSeen = time.Now()
		}
		a.cur, a.skip = nil, false
		return nil
	case cdc.EventPosition, cdc.EventMessage:
		if ev.Kind == cdc.EventMessage && ev.Message.Prefix == HeartbeatPrefix {
			if us, err := strconv.ParseInt(string(ev.Message.Content), 10, 64); err == nil {
				a.stats.LastLag = time.Since(time.UnixMicro(us))
				a.stats.LastSeen = time.Now()
			}
		}
		if a.cur == nil && ev.LSN > a.groupPos && (ev.Kind == cdc.EventPosition || !ev.Message.Transactional) {
			a.groupPos = ev.LSN
		}
		return nil
	case cdc.EventTruncate:
		if a.cur == nil || a.skip {
			return nil
		}
		for _, rel := range ev.Rels {
			b, err := a.source(ctx, rel)
			if err != nil {
				return err
			}
			if b == nil {
				continue
			}
			if err := a.truncate(ctx, b); err != nil {
				return err
			}
		}
		return nil
	case cdc.EventInsert, cdc.EventUpdate, cdc.EventDelete:
		if a.cur == nil {
			return fmt.Errorf("stream: row change outside a transaction")
		}
		if a.skip {
			return nil
		}
		b, err := a.source(ctx, ev.Rel)
		if b == nil || err != nil {
			return err
		}
		a.open()
		a.groupRows++
		return a.row(ctx, ev, b, pk)
	}
	return nil
}

// source is the binding of a change to fold, nil when its table is no
// source or its source is stopped. A change to a relation that is not the
// one the session derives the source by stops the source first.
func (a *applier) source(ctx context.Context, rel *cdc.Relation) (*binding, error) {
	b := a.bind(rel)
	if b == nil || a.guard.isStopped(b.rule.ID) {
		return nil, nil
	}
	if b.bad != nil && a.guard != nil {
		if err := a.guard.stop(ctx, b.rule, *b.bad); err != nil {
			return nil, err
		}
		return nil, nil
	}
	return b, nil
}

func (a *applier) row(ctx context.Context, ev *cdc.Event, b *binding, pk preKey) error {
	r := b.rule
	var oldVals, newVals []*string
	var oldKey, newKey string
	var moved bool
	var err error
	switch ev.Kind {
	case cdc.EventInsert:
		k, ok := keyOf(ev.New, b.key)
		if !ok {
			return fmt.Errorf("stream: insert into %s without its key columns %v", r.Table(), a.keys[r.Table()])
		}
		newKey = k
		newVals = valsOf(ev.New, b, nil)
	case cdc.EventUpdate:
		nk, ok := pk.key, pk.ok && ev.Old == nil
		if !ok {
			nk, ok = keyOf(ev.New, b.key)
		}
		if !ok {
			return fmt.Errorf("stream: update of %s without its key columns %v", r.Table(), a.keys[r.Table()])
		}
		newKey, oldKey = nk, nk
		if ev.Old != nil && pk.ok {
			oldKey = pk.key // the key changed: prefetch encoded the old one
		}
		if oldVals, moved, err = a.oldRow(ctx, b, oldKey, ev); err != nil {
			return err
		}
		if oldVals == nil {
			a.log.Warn("update of a row repstream has no record of; counting it as an insert", "table", r.Table(), "key", oldKey)
		}
		newVals = valsOf(ev.New, b, oldVals)
	case cdc.EventDelete:
		k, ok := pk.key, pk.ok
		if !ok {
			return fmt.Errorf("stream: delete from %s without its key columns %v (replica identity must include the primary key)", r.Table(), a.keys[r.Table()])
		}
		oldKey = k
		if oldVals, moved, err = a.oldRow(ctx, b, oldKey, ev); err != nil {
			return err
		}
	}
	if oldVals != nil {
		if c, ok := r.Contribute(oldVals); ok {
			a.cur.add(c, -1, r.buckets)
		}
	}
	if newVals != nil {
		if c, ok := r.Contribute(newVals); ok {
			a.cur.add(c, +1, r.buckets)
		}
	}
	okey, nkey := rowKey{r.ID, oldKey}, rowKey{r.ID, newKey}
	switch {
	case ev.Kind == cdc.EventUpdate && oldKey == newKey && moved:
		a.displaced[okey] = append(a.displaced[okey], newVals) // still sharing the key
	case ev.Kind == cdc.EventUpdate && oldKey == newKey:
		a.setRow(nkey, newVals, oldVals != nil)
	default:
		if ev.Kind != cdc.EventInsert {
			a.leave(okey, moved, oldVals != nil)
		}
		if ev.Kind != cdc.EventDelete {
			return a.arrive(ctx, b, nkey, newVals)
		}
	}
	return nil
}

// oldRow is the row an update or delete changes. Under a DEFERRABLE key two
// rows may share a key until the statement or transaction ends; moved then
// says the row is the one displaced from the shadow. The FULL old row tells
// which it is; otherwise it is the one displaced first, as in a swap.
func (a *applier) oldRow(ctx context.Context, b *binding, key string, ev *cdc.Event) (vals []*string, moved bool, err error) {
	rk := rowKey{b.rule.ID, key}
	cur, err := a.lookup(ctx, rk)
	if err != nil {
		return nil, false, err
	}
	d := a.displaced[rk]
	if len(d) == 0 {
		return cur, false, nil
	}
	i := 0
	if ev.OldKind == 'O' {
		full := valsOf(ev.Old, b, nil)
		i = -1
		if !slices.EqualFunc(cur, full, eqVal) {
			i = slices.IndexFunc(d, func(v []*string) bool { return slices.EqualFunc(v, full, eqVal) })
		}
		if i < 0 {
			return cur, false, nil
		}
	}
	vals = d[i]
	if d = slices.Delete(d, i, i+1); len(d) == 0 {
		delete(a.displaced, rk)
	} else {
		a.displaced[rk] = d
	}
	return vals, true, nil
}

func eqVal(x, y *string) bool { return (x == nil) == (y == nil) && (x == nil || *x == *y) }

// leave takes a row away from key rk; a row displaced there takes its place.
func (a *applier) leave(rk rowKey, moved, stored bool) {
	if moved {
		return // it was not the shadow's row
	}
	if d := a.displaced[rk]; len(d) > 0 {
		a.setRow(rk, d[0], true)
		if d = d[1:]; len(d) == 0 {
			delete(a.displaced, rk)
		} else {
			a.displaced[rk] = d
		}
		return
	}
	a.setRow(rk, nil, stored)
}

// arrive puts a row at key rk. Only a DEFERRABLE key lets it find another
// row there; that row is displaced until it moves on.
func (a *applier) arrive(ctx context.Context, b *binding, rk rowKey, vals []*string) error {
	if !b.deferrable {
		a.setRow(rk, vals, false) // a new key cannot be in the shadow
		return nil
	}
	cur, err := a.lookup(ctx, rk)
	if err != nil {
		return err
	}
	if cur != nil {
		a.displaced[rk] = append(a.displaced[rk], cur)
	}
	a.setRow(rk, vals, cur != nil)
	return nil
}

// truncate retracts every row of a source: the shadow knows them all.
func (a *applier) truncate(ctx context.Context, b *binding) error {
	a.open()
	r := b.rule
	// The shadow in the store must be current before it is scanned.
	if err := a.spill(ctx); err != nil {
		return err
	}
	err := a.w.scanSource(ctx, r.ID, func(vals []*string) {
		if c, ok := r.Contribute(vals); ok {
			a.cur.add(c, -1, r.buckets)
		}
	})
	if err != nil {
		return err
	}
	for k := range a.rowCache {
		if k.source == r.ID {
			delete(a.rowCache, k)
		}
	}
	a.groupRows++
	return nil
}

// foldPending turns completed transactions into deltas, reading the states
// they touch in one query.
func (a *applier) foldPending(ctx context.Context) error {
	if len(a.pending) == 0 {
		return nil
	}
	var need []string
	seen := map[string]bool{}
	for _, t := range a.pending {
		for s := range t.subj {
			if _, ok := a.changed[s]; ok {
				continue
			}
			if _, ok := a.stateCache[s]; !ok && !seen[s] {
				seen[s] = true
				need = append(need, s)
			}
		}
	}
	if len(need) > 0 {
		got, err := a.w.fetchStates(ctx, need)
		if err != nil {
			return err
		}
		a.trimCaches()
		for _, s := range need {
			a.stateCache[s] = got[s] // zero State: new subject
		}
	}
	for _, t := range a.pending {
		txn := Txn{LSN: t.lsn, CommitAt: t.at}
		for _, s := range t.subjects() {
			ac := t.subj[s]
			prev, ok := a.changed[s]
			if !ok {
				prev, ok = a.stateCache[s]
			}
			if !ok { // the cache was trimmed mid-chunk
				got, err := a.w.fetchStates(ctx, []string{s})
				if err != nil {
					return err
				}
				prev = got[s]
			}
			if sum := prev.Sum + ac.sum; (ac.sum > 0 && sum < prev.Sum) || (ac.sum < 0 && sum > prev.Sum) {
				return &SumOverflowError{Subject: s, LSN: t.lsn}
			}
			d := Fold(prev, s, ac.count, ac.sum, ac.hist, t.lsn, t.at, a.prior)
			a.stateCache[s] = d.After
			a.changed[s] = d.After
			txn.Deltas = append(txn.Deltas, d)
		}
		if len(txn.Deltas) > 0 {
			a.txns = append(a.txns, txn)
			a.groupDeltas += uint64(len(txn.Deltas))
		}
	}
	a.pending = nil
	return nil
}

// due reports whether the open group should commit now, given whether more
// events are already waiting.
func (a *applier) due(more bool) bool {
	if a.cur != nil { // never commit in the middle of a source transaction
		return false
	}
	if !a.grouping && a.groupPos <= a.checkpoint {
		return false
	}
	return !more || a.groupRows >= a.cfg.MaxGroupChanges || time.Since(a.groupStart) >= a.cfg.MaxGroupDelay
}

// An idle position is stored (so the slot may be confirmed past it) once
// idleBytes of WAL wait, at most every idleMin, and else every idleMax: the
// store write is WAL too, which makes the next idle position.
const (
	idleBytes = 1 << 20
	idleMin   = time.Second
	idleMax   = 10 * time.Second
)

// idleDue is how long until an idle position waiting to be stored is due;
// ok is false when none waits.
func (a *applier) idleDue() (time.Duration, bool) {
	if a.grouping || a.cur != nil || a.groupPos <= a.checkpoint {
		return 0, false
	}
	every := idleMax
	if a.groupPos-a.checkpoint >= idleBytes {
		every = idleMin
	}
	return every - time.Since(a.idleAt), true
}

// commitUnknown is a group commit that reported an error: it may or may not
// have committed.
type commitUnknown struct {
	pos  LSN
	txns []Txn
	err  error
}

func (c *commitUnknown) Error() string { return c.err.Error() }
func (c *commitUnknown) Unwrap() error { return c.err }

// commit makes the group durable, then publishes it and confirms its position.
func (a *applier) commit(ctx context.Context) error {
	if err := a.foldPending(ctx); err != nil {
		return err
	}
	pos := a.groupPos
	if !a.grouping {
		// Nothing to write but an idle position. It is stored before the slot
		// is confirmed past it, at most every idleEvery, so a slot confirmed
		// beyond the stored checkpoint proves someone else advanced it.
		if pos <= a.checkpoint {
			return nil
		}
		if a.onIdle != nil {
			a.onIdle(pos)
		}
		if d, _ := a.idleDue(); d > 0 {
			return nil
		}
		a.idleAt = time.Now()
	}
	start := time.Now()
	states := make([]State, 0, len(a.changed))
	for _, st := range a.changed {
		states = append(states, st)
	}
	sort.Slice(states, func(i, j int) bool { return states[i].Subject < states[j].Subject })
	if pos < a.checkpoint {
		pos = a.checkpoint
	}
	wal, err := a.w.commitGroup(ctx, a.dirty, states, a.txns, pos)
	if err != nil {
		// The commit may have happened even so (the connection failed after
		// COMMIT was sent): the next session learns it from the store.
		return &commitUnknown{pos: pos, txns: a.txns, err: err}
	}
	// Counted once durable in the store: a group lost to an error is read
	// again and must not count twice.
	// An idle position's write is not a group: it counts in no figure.
	if a.grouping {
		a.stats.Groups++
		a.stats.Changes += uint64(a.groupRows)
		a.stats.Txns += a.groupTxns
		a.stats.Deltas += a.groupDeltas
		took := time.Since(start)
		a.stats.CommitNs += uint64(took)
		a.commitTime.Observe(took.Seconds())
	}
	a.checkpoint = pos
	txns := a.txns
	a.resetGroup()
	// Publishing before the commit is flushed is safe: should Postgres crash
	// and lose it, the same source transactions fold again into the same
	// deltas, (subject, lsn, version) and all. Only the slot must wait.
	a.pub.Publish(pos, txns)
	a.onDone(pos, wal)
	return nil
}
