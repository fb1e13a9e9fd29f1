package demo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/repstream/repstream/stream"
)

// WriterConfig tunes a Writer. The zero value writes DefaultMix as fast as
// it can until its context ends, with no viral bursts and no story.
type WriterConfig struct {
	// Rate is transactions of the mix per second; zero means as fast as
	// one connection can commit. Bursts and the story come on top of it.
	Rate float64
	// Transactions ends Run after this many transactions of the mix (failed
	// ones included); zero means no limit.
	Transactions int64
	// Seed seeds every random choice: the same seed against the same
	// database writes the same mix (bursts and the story follow the clock).
	Seed uint64
	// Mix weighs the kinds of change; the zero value means DefaultMix.
	Mix Mix
	// MaxBatch is the most changes one transaction makes: half the
	// transactions make one, the rest 2 to MaxBatch. Zero means 5.
	MaxBatch int

	// ViralEvery is how often a product of ViralSeller goes viral and
	// brings a burst of ViralBurst reviews at once; zero means never.
	ViralEvery time.Duration
	// ViralSeller is a seller's handle, name or id; empty means DefaultViralSeller.
	ViralSeller string
	// ViralBurst is the reviews one burst brings; zero means 100.
	ViralBurst int

	// Story, when set, tells the story of StorySeller: StoryAfter into the
	// run its shipments start running late and buyers open disputes, and
	// over StoryLength a run of 1- and 2-star reviews drops its Bayesian
	// score (under Prior) by about StoryDrop.
	Story bool
	// StorySeller is a seller's handle, name or id; empty means DefaultStorySeller.
	StorySeller string
	// StoryAfter is when the story starts; zero means at once.
	StoryAfter time.Duration
	// StoryLength is how long the bad reviews keep coming; zero means a minute.
	StoryLength time.Duration
	// StoryDrop is the drop in Bayesian score the story aims for; zero means 0.6.
	StoryDrop float64
	// Prior is what the story's arithmetic assumes; the zero value means Prior().
	Prior stream.Prior

	// Logger hears about progress (every 10s), bursts, the story and
	// errors; nil means silence.
	Logger *slog.Logger
}

// Stats counts what a Writer has committed.
type Stats struct {
	Transactions int64 // committed transactions, bursts and story included
	Inserts      int64 // reviews and ratings inserted, bursts and story included
	Updates      int64 // reviews and ratings whose stars or score changed
	Deletes      int64 // reviews and ratings deleted
	Hides        int64 // published reviews moderation hid
	Viral        int64 // reviews viral bursts inserted
	Story        int64 // 1- and 2-star reviews the story brought
	StoryOver    bool  // the story has ended
	Errors       int64 // transactions that failed and were rolled back
}

// Writer changes the demo marketplace the way a busy one changes: new
// reviews and ratings, edits, deletions, moderation, viral bursts and a
// story. Create it with NewWriter; Run writes, Stats may be called from any
// goroutine. One Writer runs one Run at a time, on one connection at a time.
type Writer struct {
	pool *pgxpool.Pool
	cfg  WriterConfig
	log  *slog.Logger

	running atomic.Bool
	n       struct {
		tx, ins, upd, del, hide, viral, story, errs atomic.Int64
		storyOver                                   atomic.Bool
	}

	// Owned by Run's goroutine.
	rnd      *rand.Rand
	sellers  map[int64]*seller
	products []product // in order of popularity, most popular first
	users    []user
	reviews  idRange
	ratings  idRange
}

type seller struct {
	id       int64
	handle   string
	name     string
	quality  float64 // the mean stars its reviews tend to
	products []product
}

type product struct {
	id, seller int64
	title      string
}

type user struct {
	id     int64
	handle string
}

// idRange bounds a table's ids, so changes can aim at existing rows.
type idRange struct{ lo, hi int64 }

func (r idRange) pick(rnd *rand.Rand) int64 {
	if r.hi < r.lo || r.hi <= 0 {
		return 0
	}
	return r.lo + rnd.Int64N(r.hi-r.lo+1)
}

// NewWriter returns a Writer that writes through pool, which it does not close.
func NewWriter(pool *pgxpool.Pool, cfg WriterConfig) *Writer {
	if cfg.Mix == (Mix{}) {
		cfg.Mix = DefaultMix
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 5
	}
	if cfg.ViralSeller == "" {
		cfg.ViralSeller = DefaultViralSeller
	}
	if cfg.ViralBurst <= 0 {
		cfg.ViralBurst = 100
	}
	if cfg.StorySeller == "" {
		cfg.StorySeller = DefaultStorySeller
	}
	if cfg.StoryLength <= 0 {
		cfg.StoryLength = time.Minute
	}
	if cfg.StoryDrop <= 0 {
		cfg.StoryDrop = 0.6
	}
	if cfg.Prior == (stream.Prior{}) {
		cfg.Prior = Prior()
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Writer{pool: pool, cfg: cfg, log: log}
}

// Stats returns the counts so far.
func (w *Writer) Stats() Stats {
	return Stats{
		Transactions: w.n.tx.Load(), Inserts: w.n.ins.Load(), Updates: w.n.upd.Load(), Deletes: w.n.del.Load(),
		Hides: w.n.hide.Load(), Viral: w.n.viral.Load(), Story: w.n.story.Load(), StoryOver: w.n.storyOver.Load(),
		Errors: w.n.errs.Load(),
	}
}

// origin says why a change is made, for the counters.
type origin int

const (
	fromMix origin = iota
	fromViral
	fromStory
)

// change is one statement of a transaction.
type change struct {
	kind   kind
	rating bool // on ratings rather than reviews
	from   origin
	sql    string
	args   []any
	// A review insert's seller and stars, when it is published; else 0.
	seller int64
	stars  int
}

// Run writes until ctx ends or cfg.Transactions have run, then returns
// nil. It returns an error only when it cannot start: the marketplace is
// missing or a named seller does not exist. Failed transactions are
// counted, logged and retried after a pause.
func (w *Writer) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("demo: this Writer is already running")
	}
	defer w.running.Store(false)
	w.rnd = rand.New(rand.NewPCG(w.cfg.Seed, 0x9e3779b97f4a7c15))
	if err := w.load(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	viral, err := w.seller(w.cfg.ViralSeller, "viral seller")
	if err != nil && w.cfg.ViralEvery > 0 {
		return err
	}
	star, err := w.seller(w.cfg.StorySeller, "story seller")
	if err != nil && w.cfg.Story {
		return err
	}

	start := time.Now()
	var interval time.Duration
	if w.cfg.Rate > 0 {
		interval = time.Duration(float64(time.Second) / w.cfg.Rate)
	}
	var (
		mixed     int64 // transactions of the mix begun
		nextMix   = start
		nextViral time.Time
		burst     int // reviews of the current burst still to write
		burstOf   product
		st        = storyState{seller: star}
		failures  int
		behind    bool
		prog      = progress{at: start}
	)
	if w.cfg.ViralEvery > 0 {
		nextViral = start.Add(w.cfg.ViralEvery)
	}
	if w.cfg.Story {
		st.start = start.Add(w.cfg.StoryAfter)
		st.end = st.start.Add(w.cfg.StoryLength)
	}
	w.log.Info("demo writer started", "rate", w.cfg.Rate, "mix", w.cfg.Mix.String(), "seed", w.cfg.Seed,
		"sellers", len(w.sellers), "products", len(w.products), "users", len(w.users))
	for {
		if ctx.Err() != nil {
			return nil
		}
		if w.cfg.Transactions > 0 && mixed >= w.cfg.Transactions {
			return nil
		}
		now := time.Now()
		if !nextViral.IsZero() && !now.Before(nextViral) {
			burst += w.cfg.ViralBurst
			burstOf = viral.products[w.rnd.IntN(len(viral.products))]
			w.log.Info("viral: a product is trending", "seller", viral.name, "product", burstOf.title, "reviews", w.cfg.ViralBurst)
			nextViral = nextViral.Add(w.cfg.ViralEvery)
			if nextViral.Before(now) {
				nextViral = now.Add(w.cfg.ViralEvery)
			}
		}
		if w.cfg.Story && !st.begun && !now.Before(st.start) {
			if err := w.beginStory(ctx, &st, now); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				w.log.Warn("story: cannot begin yet", "err", err)
				st.start = now.Add(time.Second)
				continue
			}
		}
		if st.begun && !st.over {
			if !now.Before(st.end) {
				w.endStory(ctx, &st)
			} else if now.Sub(st.synced) >= time.Second {
				w.syncStory(ctx, &st, now)
			}
		}

		var changes []change
		switch {
		case burst > 0:
			changes = w.viralChanges(min(burst, 1+w.rnd.IntN(w.cfg.MaxBatch)), burstOf)
		case st.behind(now, w.cfg.Prior):
			changes = w.storyChanges(&st, now)
		case interval == 0 || !now.Before(nextMix):
			changes = w.mixChanges(&st, now)
			mixed++
			nextMix = nextMix.Add(interval)
			if now.Sub(nextMix) > time.Second { // cannot keep up: do not try to catch up in a rush
				if !behind {
					w.log.Warn("demo writer cannot keep up with the rate; writing as fast as it can", "rate", w.cfg.Rate)
					behind = true
				}
				nextMix = now
			}
		default:
			wake := nextMix
			if !nextViral.IsZero() && nextViral.Before(wake) {
				wake = nextViral
			}
			if w.cfg.Story && !st.begun && st.start.Before(wake) {
				wake = st.start
			}
			if t, ok := st.wake(w.cfg.Prior); ok && t.Before(wake) {
				wake = t
			}
			if !sleep(ctx, time.Until(wake)) {
				return nil
			}
			continue
		}

		if err := w.commit(ctx, changes); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			w.n.errs.Add(1)
			failures++
			pause := min(5*time.Second, 100*time.Millisecond<<min(failures, 6))
			w.log.Warn("demo writer: transaction failed; pausing", "err", err, "pause", pause)
			if !sleep(ctx, pause) {
				return nil
			}
			continue
		}
		failures = 0
		for _, c := range changes {
			if c.from == fromViral {
				burst--
			}
			if st.begun && c.seller == st.seller.id {
				st.count++
				st.sum += float64(c.stars)
			}
		}
		if now.Sub(prog.at) >= 10*time.Second {
			prog.report(w, now)
		}
	}
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

type progress struct {
	at time.Time
	tx int64
}

func (p *progress) report(w *Writer, now time.Time) {
	s := w.Stats()
	rate := float64(s.Transactions-p.tx) / now.Sub(p.at).Seconds()
	w.log.Info("demo writer", "tx_per_s", math.Round(rate*10)/10, "transactions", s.Transactions, "inserts", s.Inserts,
		"updates", s.Updates, "deletes", s.Deletes, "hides", s.Hides, "errors", s.Errors)
	p.at, p.tx = now, s.Transactions
}

// load reads what the writer chooses from: sellers, products, users, how
// good each seller's reviews are, and the ids in use.
func (w *Writer) load(ctx context.Context) error {
	w.sellers = map[int64]*seller{}
	rows, _ := w.pool.Query(ctx, "SELECT id, handle, name FROM sellers ORDER BY id")
	var s seller
	_, err := pgx.ForEachRow(rows, []any{&s.id, &s.handle, &s.name}, func() error {
		c := s
		c.quality = 4
		w.sellers[c.id] = &c
		return nil
	})
	if err != nil {
		return w.missing(err)
	}
	rows, _ = w.pool.Query(ctx, "SELECT id, seller_id, title FROM products ORDER BY id")
	var p product
	w.products = nil
	_, err = pgx.ForEachRow(rows, []any{&p.id, &p.seller, &p.title}, func() error {
		if s := w.sellers[p.seller]; s != nil {
			s.products = append(s.products, p)
			w.products = append(w.products, p)
		}
		return nil
	})
	if err != nil {
		return w.missing(err)
	}
	rows, _ = w.pool.Query(ctx, "SELECT id, handle FROM users ORDER BY id")
	var u user
	w.users = nil
	_, err = pgx.ForEachRow(rows, []any{&u.id, &u.handle}, func() error {
		w.users = append(w.users, u)
		return nil
	})
	if err != nil {
		return w.missing(err)
	}
	if len(w.products) == 0 || len(w.users) < 2 {
		return errors.New("demo: the marketplace has no products or users; apply the demo schema first (repstream loadgen does unless --schema=false)")
	}
	rows, _ = w.pool.Query(ctx, "SELECT seller_id, avg(rating)::float8 FROM reviews WHERE status = 'published' GROUP BY seller_id")
	var id int64
	var q float64
	_, err = pgx.ForEachRow(rows, []any{&id, &q}, func() error {
		if s := w.sellers[id]; s != nil {
			s.quality = q
		}
		return nil
	})
	if err != nil {
		return w.missing(err)
	}
	if err := w.pool.QueryRow(ctx, "SELECT coalesce(min(id), 0), coalesce(max(id), 0) FROM reviews").Scan(&w.reviews.lo, &w.reviews.hi); err != nil {
		return w.missing(err)
	}
	if err := w.pool.QueryRow(ctx, "SELECT coalesce(min(id), 0), coalesce(max(id), 0) FROM ratings").Scan(&w.ratings.lo, &w.ratings.hi); err != nil {
		return w.missing(err)
	}
	// Popularity: a seeded shuffle, then the first products get the most traffic.
	w.rnd.Shuffle(len(w.products), func(i, j int) { w.products[i], w.products[j] = w.products[j], w.products[i] })
	return nil
}

func (w *Writer) missing(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "42P01" { // undefined_table
		return fmt.Errorf("demo: %w; apply the demo schema first (repstream loadgen does unless --schema=false)", err)
	}
	return fmt.Errorf("demo: load the marketplace: %w", err)
}

// seller finds a seller by id, handle or name (case does not matter).
func (w *Writer) seller(ref, role string) (*seller, error) {
	ref = strings.TrimSpace(ref)
	if id, err := strconv.ParseInt(ref, 10, 64); err == nil {
		if s := w.sellers[id]; s != nil && len(s.products) > 0 {
			return s, nil
		}
	}
	for _, s := range w.sellers {
		if (strings.EqualFold(s.handle, ref) || strings.EqualFold(s.name, ref)) && len(s.products) > 0 {
			return s, nil
		}
	}
	return nil, fmt.Errorf("demo: %s %q: no such seller with products; use an id or a handle such as %s or %s", role, ref, DefaultStorySeller, DefaultViralSeller)
}

// popular picks a product, the popular ones more often.
func (w *Writer) popular() product {
	u := w.rnd.Float64()
	return w.products[int(u*u*float64(len(w.products)))]
}

// stars draws a review's stars around quality.
func (w *Writer) stars(quality float64) int {
	x := math.Round(quality + 1.3*(w.rnd.Float64()+w.rnd.Float64()-1))
	return int(max(1, min(5, x)))
}

func (w *Writer) body(stars int) string {
	b := reviewBodies[stars-1]
	return b[w.rnd.IntN(len(b))]
}

func (w *Writer) author() string { return w.users[w.rnd.IntN(len(w.users))].handle }

const (
	sqlInsertReview = `INSERT INTO reviews (seller_id, product_id, author, rating, status, body) VALUES ($1, $2, $3, $4, $5, $6)`
	sqlInsertRating = `INSERT INTO ratings (user_id, rater_id, score, comment) VALUES ($1, $2, $3, $4)`
	// The row at or after a random id, wrapping around to the first.
	sqlUpdateReview = `WITH t AS ((SELECT id FROM reviews WHERE id >= $1 ORDER BY id LIMIT 1) UNION ALL (SELECT id FROM reviews ORDER BY id LIMIT 1) LIMIT 1)
UPDATE reviews r SET rating = 1 + (r.rating - 1 + $2) % 5, body = $3, updated_at = now() FROM t WHERE r.id = t.id`
	sqlUpdateRating = `WITH t AS ((SELECT id FROM ratings WHERE id >= $1 ORDER BY id LIMIT 1) UNION ALL (SELECT id FROM ratings ORDER BY id LIMIT 1) LIMIT 1)
UPDATE ratings r SET score = (r.score + $2) % 11, updated_at = now() FROM t WHERE r.id = t.id`
	sqlDeleteReview = `WITH t AS ((SELECT id FROM reviews WHERE id >= $1 ORDER BY id LIMIT 1) UNION ALL (SELECT id FROM reviews ORDER BY id LIMIT 1) LIMIT 1)
DELETE FROM reviews r USING t WHERE r.id = t.id`
	sqlDeleteRating = `WITH t AS ((SELECT id FROM ratings WHERE id >= $1 ORDER BY id LIMIT 1) UNION ALL (SELECT id FROM ratings ORDER BY id LIMIT 1) LIMIT 1)
DELETE FROM ratings r USING t WHERE r.id = t.id`
	sqlHideReview = `WITH t AS ((SELECT id FROM reviews WHERE id >= $1 AND status = 'published' ORDER BY id LIMIT 1) UNION ALL (SELECT id FROM reviews WHERE status = 'published' ORDER BY id LIMIT 1) LIMIT 1)
UPDATE reviews r SET status = 'hidden', updated_at = now() FROM t WHERE r.id = t.id`
)

// mixChanges makes one transaction of the mix.
func (w *Writer) mixChanges(st *storyState, now time.Time) []change {
	n := 1
	if w.cfg.MaxBatch > 1 && w.rnd.IntN(2) == 1 {
		n = 2 + w.rnd.IntN(w.cfg.MaxBatch-1)
	}
	total := w.cfg.Mix.total()
	out := make([]change, 0, n)
	for range n {
		k := w.cfg.Mix.pick(w.rnd.IntN(total))
		onRatings := k != kindHide && w.rnd.IntN(4) == 0
		c := change{kind: k, rating: onRatings}
		switch {
		case k == kindInsert && onRatings:
			i := w.rnd.IntN(len(w.users))
			j := (i + 1 + w.rnd.IntN(len(w.users)-1)) % len(w.users)
			rated := w.users[i].id
			standing := 5 + float64(rated*29%9)/2 // as in the seed
			score := int(max(0, min(10, math.Round(standing+2*(w.rnd.Float64()+w.rnd.Float64()-1)))))
			var comment *string
			if w.rnd.IntN(3) == 0 {
				comment = &ratingComments[w.rnd.IntN(len(ratingComments))]
			}
			c.sql, c.args = sqlInsertRating, []any{rated, w.users[j].id, score, comment}
		case k == kindInsert:
			p := w.popular()
			s := w.sellers[p.seller]
			stars, body := 0, ""
			if st.troubled(s, now, w.cfg.Prior) { // the story seller's own buyers tell the story too
				stars, body = w.storyReview(st, now)
				c.from = fromStory
			} else {
				stars = w.stars(s.quality)
				body = w.body(stars)
			}
			status := "published"
			if w.rnd.IntN(20) == 0 {
				status, body = "pending", body+" See photos: https://example.com/p/"+strconv.Itoa(w.rnd.IntN(1e6))
			}
			c.sql, c.args = sqlInsertReview, []any{s.id, p.id, w.author(), stars, status, body}
			if status == "published" {
				c.seller, c.stars = s.id, stars
			}
		case k == kindUpdate && onRatings:
			c.sql, c.args = sqlUpdateRating, []any{w.ratings.pick(w.rnd), 1 + w.rnd.IntN(10)}
		case k == kindUpdate:
			c.sql, c.args = sqlUpdateReview, []any{w.reviews.pick(w.rnd), 1 + w.rnd.IntN(4), editBodies[w.rnd.IntN(len(editBodies))]}
		case k == kindDelete && onRatings:
			c.sql, c.args = sqlDeleteRating, []any{w.ratings.pick(w.rnd)}
		case k == kindDelete:
			c.sql, c.args = sqlDeleteReview, []any{w.reviews.pick(w.rnd)}
		default:
			c.sql, c.args = sqlHideReview, []any{w.reviews.pick(w.rnd)}
		}
		out = append(out, c)
	}
	return out
}

// viralChanges makes a transaction of n burst reviews of p.
func (w *Writer) viralChanges(n int, p product) []change {
	out := make([]change, 0, n)
	for range n {
		stars := 5
		switch r := w.rnd.Float64(); {
		case r < 0.05:
			stars = 1
		case r < 0.10:
			stars = 3
		case r < 0.28:
			stars = 4
		}
		body := viralBodies[w.rnd.IntN(len(viralBodies))]
		if stars < 4 {
			body = w.body(stars)
		}
		out = append(out, change{kind: kindInsert, from: fromViral, sql: sqlInsertReview,
			args: []any{p.seller, p.id, w.author(), stars, "published", body}, seller: p.seller, stars: stars})
	}
	return out
}

// commit runs changes in one transaction and counts them once it commits.
func (w *Writer) commit(ctx context.Context, changes []change) error {
	var ins, upd, del, hide, viral, story int64
	var reviewMax, ratingMax int64
	b := &pgx.Batch{}
	for _, c := range changes {
		if c.kind == kindInsert {
			b.Queue(c.sql+" RETURNING id", c.args...).QueryRow(func(row pgx.Row) error {
				var id int64
				if err := row.Scan(&id); err != nil {
					return err
				}
				ins++
				if c.rating {
					ratingMax = max(ratingMax, id)
				} else {
					reviewMax = max(reviewMax, id)
				}
				switch c.from {
				case fromViral:
					viral++
				case fromStory:
					story++
				}
				return nil
			})
			continue
		}
		b.Queue(c.sql, c.args...).Exec(func(tag pgconn.CommandTag) error {
			switch c.kind {
			case kindUpdate:
				upd += tag.RowsAffected()
			case kindDelete:
				del += tag.RowsAffected()
			case kindHide:
				hide += tag.RowsAffected()
			}
			return nil
		})
	}
	err := pgx.BeginFunc(ctx, w.pool, func(tx pgx.Tx) error {
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return err
	}
	w.reviews.hi = max(w.reviews.hi, reviewMax)
	w.ratings.hi = max(w.ratings.hi, ratingMax)
	if w.reviews.lo == 0 {
		w.reviews.lo = 1
	}
	if w.ratings.lo == 0 {
		w.ratings.lo = 1
	}
	w.n.ins.Add(ins)
	w.n.upd.Add(upd)
	w.n.del.Add(del)
	w.n.hide.Add(hide)
	w.n.viral.Add(viral)
	w.n.story.Add(story)
	w.n.tx.Add(1)
	return nil
}
