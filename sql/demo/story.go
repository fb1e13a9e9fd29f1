package demo

import (
	"context"
	"math"
	"time"

	"github.com/repstream/repstream/stream"
)

// storyState is the story's progress; Run's goroutine owns it. The story
// steers the seller's Bayesian score down a straight line from before to
// target over [start, end): whenever the score is above the line, the next
// review of the seller is a 1- or 2-star one, its own buyers' included. So
// the drop is about the same at any rate and whatever else is written.
type storyState struct {
	seller      *seller
	start, end  time.Time
	begun, over bool
	before      float64   // Bayesian score when the story began
	target      float64   // where it should end
	count, sum  float64   // the seller's published reviews: synced every second, counted in between
	synced      time.Time // when count and sum were last read
}

func (s *storyState) bayes(p stream.Prior) float64 {
	return (p.Weight*p.Mean + s.sum) / (p.Weight + s.count)
}

// goal is where the score should be at now.
func (s *storyState) goal(now time.Time) float64 {
	f := float64(now.Sub(s.start)) / float64(s.end.Sub(s.start))
	return s.before - (s.before-s.target)*min(1, max(0, f))
}

func (s *storyState) running(now time.Time) bool {
	return s.begun && !s.over && now.Before(s.end)
}

// behind reports whether the score is above the line, so a bad review is due.
func (s *storyState) behind(now time.Time, p stream.Prior) bool {
	return s.running(now) && s.bayes(p) > s.goal(now)
}

// troubled reports whether a review of sel written now should be a bad one.
func (s *storyState) troubled(sel *seller, now time.Time, p stream.Prior) bool {
	return sel == s.seller && s.behind(now, p)
}

// wake is when the line next falls below the score.
func (s *storyState) wake(p stream.Prior) (time.Time, bool) {
	if !s.begun || s.over {
		return time.Time{}, false
	}
	t := s.end
	if drop := s.before - s.target; drop > 0 {
		f := (s.before - s.bayes(p)) / drop
		if at := s.start.Add(time.Duration(f*float64(s.end.Sub(s.start))) + time.Millisecond); at.Before(t) {
			t = at
		}
	}
	if sync := s.synced.Add(time.Second); sync.Before(t) {
		t = sync
	}
	return t, true
}

// storyBad is the mean stars of the story's reviews (70% 1, 30% 2).
const storyBad = 1.3

// beginStory reads the seller's score and aims StoryDrop below it (but not
// below what 1.3-star reviews can reach).
func (w *Writer) beginStory(ctx context.Context, st *storyState, now time.Time) error {
	count, sum, err := w.published(ctx, st.seller.id)
	if err != nil {
		return err
	}
	st.count, st.sum, st.synced = count, sum, now
	st.before = st.bayes(w.cfg.Prior)
	st.target = max(st.before-w.cfg.StoryDrop, min(st.before, storyBad+0.2))
	st.begun = true
	st.start = now
	st.end = now.Add(w.cfg.StoryLength)
	w.log.Info("story: shipments from "+st.seller.name+" are running late, and buyers open disputes",
		"seller", st.seller.handle, "bayes", round3(st.before), "aim", round3(st.target), "over", w.cfg.StoryLength)
	return nil
}

func (w *Writer) syncStory(ctx context.Context, st *storyState, now time.Time) {
	st.synced = now // on an error, the running count stands in until the next try
	if count, sum, err := w.published(ctx, st.seller.id); err == nil {
		st.count, st.sum = count, sum
	}
}

func (w *Writer) endStory(ctx context.Context, st *storyState) {
	st.over = true
	w.n.storyOver.Store(true)
	if count, sum, err := w.published(ctx, st.seller.id); err == nil {
		st.count, st.sum = count, sum
	}
	w.log.Info("story: "+st.seller.name+"'s reputation took the hit", "seller", st.seller.handle,
		"bad_reviews", w.n.story.Load(), "bayes_before", round3(st.before), "bayes_after", round3(st.bayes(w.cfg.Prior)))
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

// published counts the seller's published reviews and adds up their stars.
func (w *Writer) published(ctx context.Context, sellerID int64) (count, sum float64, err error) {
	err = w.pool.QueryRow(ctx, "SELECT count(*)::float8, coalesce(sum(rating), 0)::float8 FROM reviews WHERE seller_id = $1 AND status = 'published'",
		sellerID).Scan(&count, &sum)
	return count, sum, err
}

// storyReview is a 1- or 2-star review, its text angrier as the story goes on.
func (w *Writer) storyReview(st *storyState, now time.Time) (stars int, body string) {
	stars = 1
	if w.rnd.IntN(10) < 3 {
		stars = 2
	}
	act := int(3 * float64(now.Sub(st.start)) / float64(st.end.Sub(st.start)))
	b := storyBodies[min(2, max(0, act))]
	return stars, b[w.rnd.IntN(len(b))]
}

// storyChanges makes a transaction with one of the story's reviews.
func (w *Writer) storyChanges(st *storyState, now time.Time) []change {
	s := st.seller
	p := s.products[w.rnd.IntN(len(s.products))]
	stars, body := w.storyReview(st, now)
	return []change{{kind: kindInsert, from: fromStory, sql: sqlInsertReview,
		args: []any{s.id, p.id, w.author(), stars, "published", body}, seller: s.id, stars: stars}}
}
