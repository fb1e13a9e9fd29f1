package stream

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
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
	pub        Publisher
	// onDone hands over a position that may be confirmed to the slot once
	// the store's WAL is flushed up to wal (0: nothing new to flush).
	onDone func(pos, wal LSN)

	checkpoint LSN // last committed position

	rowCache   map[rowKey][]*string // shadow rows as the open group sees them
	stateCache map[string]State     // states as the open group sees them

	// the open group
	dirty       map[rowKey]shadowRow
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
	groupPos    LSN // position the group's commit records
	stats       ApplyStats
	pre         []preKey // per event of the chunk being applied: the keys prefetch encoded
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
	a := &applier{cfg: cfg, commitTime: commitTime, log: log, w: w, prior: prior, rules: map[string]*Rule{}, keys: keys,
		bound: map[*cdc.Relation]*binding{}, pub: pub, onDone: onDone, checkpoint: checkpoint,
		rowCache: map[rowKey][]*string{}, stateCache: map[string]State{}}
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
	clear(a.changed)
	a.txns = nil
	a.pending = nil
	a.groupRows, a.groupTxns, a.groupDeltas = 0, 0, 0
	a.groupPos = 0
	a.grouping = false
}

func (a *applier) bind(rel *cdc.Relation) *binding {
	if b, ok := a.bound[rel]; ok {
		return b
	}
	var b *binding
	if r, ok := a.rules[rel.Namespace+"."+rel.Name]; ok {
		b = &binding{rule: r}
		for _, c := range r.Columns {
			b.cols = append(b.cols, rel.ColumnIndex(c))
		}
		for _, c := range a.keys[r.Table()] {
			b.key = append(b.key, rel.ColumnIndex(c))
		}
		for i, c := range b.cols {
			if c < 0 {
				a.log.Error("a column the source needs is not in the replication stream; it counts as NULL",
					"table", r.Table(), "column", r.Columns[i])
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
	if len(a.dirty) > 20000 { // a huge transaction: spill the shadow into the open group
		if err := a.w.begin(ctx); err != nil {
			return err
		}
		if err := a.w.writeRows(ctx, a.dirty); err != nil {
			return err
		}
		clear(a.dirty)
	}
	return nil
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
		if b == nil {
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
		a.rowCache[k] = got[k] // nil: no such row
	}
	return nil
}

func (a *applier) trimCaches() {
	if len(a.rowCache) > a.cfg.CacheRows {
		a.rowCache = map[rowKey][]*string{}
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
	a.rowCache[k] = got[k]
	return got[k], nil
}

// setRow records a row's new values (nil: deleted). stored says whether the
// store holds the row before this change; the first change of a group to a
// row decides, since later ones only see the group's own pending values.
func (a *applier) setRow(k rowKey, vals []*string, stored bool) {
	a.rowCache[k] = vals
	if prev, ok := a.dirty[k]; ok {
		stored = prev.stored
	}
	a.dirty[k] = shadowRow{vals: vals, stored: stored}
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
			b := a.bind(rel)
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
		b := a.bind(ev.Rel)
		if b == nil {
			return nil
		}
		a.open()
		a.groupRows++
		return a.row(ctx, ev, b, pk)
	}
	return nil
}

func (a *applier) row(ctx context.Context, ev *cdc.Event, b *binding, pk preKey) error {
	r := b.rule
	var oldVals, newVals []*string
	var oldKey, newKey string
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
		if oldVals, err = a.lookup(ctx, rowKey{r.ID, oldKey}); err != nil {
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
		if oldVals, err = a.lookup(ctx, rowKey{r.ID, oldKey}); err != nil {
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
	// A key the source did not have before (an INSERT, or the target of a
	// key change) cannot be in the shadow either.
	switch {
	case ev.Kind == cdc.EventDelete:
		a.setRow(rowKey{r.ID, oldKey}, nil, oldVals != nil)
	case ev.Kind == cdc.EventUpdate && oldKey != newKey:
		a.setRow(rowKey{r.ID, oldKey}, nil, oldVals != nil)
		a.setRow(rowKey{r.ID, newKey}, newVals, false)
	case ev.Kind == cdc.EventUpdate:
		a.setRow(rowKey{r.ID, newKey}, newVals, oldVals != nil)
	default:
		a.setRow(rowKey{r.ID, newKey}, newVals, false)
	}
	return nil
}

// truncate retracts every row of a source: the shadow knows them all.
func (a *applier) truncate(ctx context.Context, b *binding) error {
	a.open()
	r := b.rule
	// The shadow in the store must be current before it is scanned.
	if err := a.w.begin(ctx); err != nil {
		return err
	}
	if err := a.w.writeRows(ctx, a.dirty); err != nil {
		return err
	}
	clear(a.dirty)
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

// commit makes the group durable, then publishes it and confirms its position.
func (a *applier) commit(ctx context.Context) error {
	if err := a.foldPending(ctx); err != nil {
		return err
	}
	pos := a.groupPos
	if !a.grouping {
		// Nothing to write (idle position): confirm without a store write.
		if pos > a.checkpoint {
			a.checkpoint = pos
			a.onDone(pos, 0)
		}
		return nil
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
		return err
	}
	// Counted once durable in the store: a group lost to an error is read
	// again and must not count twice.
	a.stats.Groups++
	a.stats.Changes += uint64(a.groupRows)
	a.stats.Txns += a.groupTxns
	a.stats.Deltas += a.groupDeltas
	took := time.Since(start)
	a.stats.CommitNs += uint64(took)
	a.commitTime.Observe(took.Seconds())
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
