package demo_test

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/repstream/repstream/cdc/localpg"
	"github.com/repstream/repstream/sql/demo"
)

// noLeaks checks, after every other cleanup, that the test left no goroutine.
func noLeaks(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
}

func newPool(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// run runs w to the end (or for at most d) and fails the test on an error.
func run(t *testing.T, w *demo.Writer, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := w.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

// tally is the marketplace's rows by table and status.
type tally struct{ published, hidden, pending, ratings int64 }

func (a tally) rows() int64 { return a.published + a.hidden + a.pending + a.ratings }

func tallyOf(t *testing.T, conn *pgx.Conn) tally {
	t.Helper()
	return tally{
		published: count(t, conn, "SELECT count(*) FROM reviews WHERE status = 'published'"),
		hidden:    count(t, conn, "SELECT count(*) FROM reviews WHERE status = 'hidden'"),
		pending:   count(t, conn, "SELECT count(*) FROM reviews WHERE status = 'pending'"),
		ratings:   count(t, conn, "SELECT count(*) FROM ratings"),
	}
}

func TestWriterWritesTheMix(t *testing.T) {
	noLeaks(t)
	url := applied(t)
	conn := connect(t, url)
	before := tallyOf(t, conn)
	w := demo.NewWriter(newPool(t, url), demo.WriterConfig{Seed: 1, Transactions: 1500})
	run(t, w, 2*time.Minute)
	s := w.Stats()
	after := tallyOf(t, conn)
	t.Logf("stats %+v\nbefore %+v\nafter  %+v", s, before, after)

	if s.Transactions != 1500 || s.Errors != 0 {
		t.Fatalf("%d transactions, %d errors; want 1500, 0", s.Transactions, s.Errors)
	}
	changes := s.Inserts + s.Updates + s.Deletes + s.Hides
	if changes < 1500*2 || changes > 1500*4 {
		t.Errorf("%d changes in 1500 transactions of 1 to 5: batches are off", changes)
	}
	for _, k := range []struct {
		name string
		got  int64
		want float64
	}{
		{"insert", s.Inserts, 0.70}, {"update", s.Updates, 0.15}, {"delete", s.Deletes, 0.05}, {"hide", s.Hides, 0.10},
	} {
		if share := float64(k.got) / float64(changes); math.Abs(share-k.want) > 0.03 {
			t.Errorf("%s: %.3f of the changes, want %.2f", k.name, share, k.want)
		}
	}
	if got, want := after.rows(), before.rows()+s.Inserts-s.Deletes; got != want {
		t.Errorf("%d rows after, want %d = %d before + %d inserted - %d deleted", got, want, before.rows(), s.Inserts, s.Deletes)
	}
	// Moderation hid s.Hides reviews; some hidden ones may have been deleted since.
	if d := after.hidden - before.hidden; d > s.Hides || d < s.Hides-s.Deletes {
		t.Errorf("hidden reviews grew by %d; moderation hid %d and %d rows were deleted", d, s.Hides, s.Deletes)
	}
	if after.pending <= before.pending {
		t.Errorf("no new review waits for moderation (pending %d → %d)", before.pending, after.pending)
	}
	if after.ratings <= before.ratings {
		t.Errorf("no new ratings (%d → %d)", before.ratings, after.ratings)
	}
	// Edits change the stars of existing reviews, inside the scale.
	if n := count(t, conn, "SELECT count(*) FROM reviews WHERE updated_at > created_at AND body LIKE 'Edit:%'"); n == 0 {
		t.Error("no edited review")
	}
}

func TestWriterFollowsAnotherMix(t *testing.T) {
	noLeaks(t)
	url := applied(t)
	conn := connect(t, url)
	before := tallyOf(t, conn)
	mix, err := demo.ParseMix("hide=3,delete=1")
	if err != nil {
		t.Fatal(err)
	}
	w := demo.NewWriter(newPool(t, url), demo.WriterConfig{Seed: 2, Transactions: 200, Mix: mix, MaxBatch: 1})
	run(t, w, time.Minute)
	s := w.Stats()
	after := tallyOf(t, conn)
	if s.Inserts != 0 || s.Updates != 0 || s.Hides+s.Deletes != 200 {
		t.Fatalf("stats %+v: want only hides and deletes, one per transaction", s)
	}
	if s.Hides < 120 || s.Hides > 180 {
		t.Errorf("%d hides of 200 changes, want about 150", s.Hides)
	}
	if got := before.rows() - after.rows(); got != s.Deletes {
		t.Errorf("%d rows gone, %d deletes", got, s.Deletes)
	}
	if got := before.published - after.published; got < s.Hides || got > s.Hides+s.Deletes {
		t.Errorf("%d fewer published reviews; %d hidden, %d deleted", got, s.Hides, s.Deletes)
	}
}

// The same seed against the same database writes the same changes.
func TestWriterSameSeedSameWrites(t *testing.T) {
	noLeaks(t)
	const q = `SELECT md5(coalesce(string_agg(concat_ws(',', id, seller_id, product_id, author, rating, status, body), ';' ORDER BY id), '')) ||
	                  md5(coalesce((SELECT string_agg(concat_ws(',', id, user_id, rater_id, score, comment), ';' ORDER BY id) FROM ratings), '')) FROM reviews`
	var sums []string
	var stats []demo.Stats
	for range 2 {
		url := applied(t)
		w := demo.NewWriter(newPool(t, url), demo.WriterConfig{Seed: 7, Transactions: 300})
		run(t, w, time.Minute)
		var sum string
		if err := connect(t, url).QueryRow(context.Background(), q).Scan(&sum); err != nil {
			t.Fatal(err)
		}
		sums, stats = append(sums, sum), append(stats, w.Stats())
	}
	if sums[0] != sums[1] || stats[0] != stats[1] {
		t.Fatalf("seed 7 wrote different things:\n%s %+v\n%s %+v", sums[0], stats[0], sums[1], stats[1])
	}
}

// sellerScore is a seller's published reviews: count, mean and Bayesian score under demo.Prior.
func sellerScore(t *testing.T, conn *pgx.Conn, handle string) (n int64, mean, bayes float64) {
	t.Helper()
	var sum float64
	err := conn.QueryRow(context.Background(), `SELECT count(*), coalesce(sum(rating), 0)::float8 FROM reviews r JOIN sellers s ON s.id = r.seller_id
		WHERE s.handle = $1 AND r.status = 'published'`, handle).Scan(&n, &sum)
	if err != nil {
		t.Fatal(err)
	}
	p := demo.Prior()
	return n, sum / float64(n), (p.Weight*p.Mean + sum) / (p.Weight + float64(n))
}

func TestWriterStoryDragsSellerDown(t *testing.T) {
	noLeaks(t)
	url := applied(t)
	conn := connect(t, url)
	n0, mean0, bayes0 := sellerScore(t, conn, demo.DefaultStorySeller)
	// Background inserts only: an edit, hide or delete could land on a story
	// review and make the count below come up short.
	inserts, err := demo.ParseMix("insert=1")
	if err != nil {
		t.Fatal(err)
	}
	w := demo.NewWriter(newPool(t, url), demo.WriterConfig{
		Seed: 3, Rate: 100, Story: true, StoryLength: 3 * time.Second, Mix: inserts,
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	for !w.Stats().StoryOver {
		select {
		case err := <-done:
			t.Fatalf("Run returned before the story ended: %v (stats %+v)", err, w.Stats())
		case <-time.After(50 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s := w.Stats()
	n1, mean1, bayes1 := sellerScore(t, conn, demo.DefaultStorySeller)
	t.Logf("%s: %d reviews, mean %.3f, bayes %.3f → %d reviews, mean %.3f, bayes %.3f; stats %+v",
		demo.DefaultStorySeller, n0, mean0, bayes0, n1, mean1, bayes1, s)
	if s.Story == 0 {
		t.Fatal("the story brought no reviews")
	}
	if mean1 >= mean0 {
		t.Errorf("mean stars %.3f → %.3f: the story did not drag the seller down", mean0, mean1)
	}
	if drop := bayes0 - bayes1; drop < 0.4 {
		t.Errorf("Bayesian score dropped by %.3f (%.3f → %.3f), want about 0.6 and well over 0.15", drop, bayes0, bayes1)
	}
	low := count(t, conn, `SELECT count(*) FROM reviews r JOIN sellers s ON s.id = r.seller_id
		WHERE s.handle = $1 AND r.rating <= 2 AND r.body <> '' AND r.created_at > now() - interval '1 minute'`, demo.DefaultStorySeller)
	if low < s.Story {
		t.Errorf("%d recent 1- and 2-star reviews of the story seller, the story wrote %d", low, s.Story)
	}
}

func TestWriterViralBursts(t *testing.T) {
	noLeaks(t)
	url := applied(t)
	conn := connect(t, url)
	const q = `SELECT count(*) FROM reviews r JOIN sellers s ON s.id = r.seller_id WHERE s.handle = $1`
	before := count(t, conn, q, demo.DefaultViralSeller)
	w := demo.NewWriter(newPool(t, url), demo.WriterConfig{
		Seed: 4, Rate: 20, ViralEvery: 300 * time.Millisecond, ViralBurst: 40,
	})
	run(t, w, 1500*time.Millisecond)
	s := w.Stats()
	after := count(t, conn, q, demo.DefaultViralSeller)
	if s.Viral < 40 {
		t.Errorf("%d burst reviews in 1.5s; want at least one burst of 40", s.Viral)
	}
	if after-before < s.Viral-s.Deletes { // the mix's deletes may hit the seller too
		t.Errorf("the viral seller got %d reviews, the bursts wrote %d (and %d rows were deleted)", after-before, s.Viral, s.Deletes)
	}
}

func TestWriterStopsOnCancel(t *testing.T) {
	noLeaks(t)
	url := applied(t)
	w := demo.NewWriter(newPool(t, url), demo.WriterConfig{Seed: 5}) // as fast as it can, no end
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	time.Sleep(500 * time.Millisecond)
	if err := w.Run(ctx); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("a second Run while running: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop within 5s of cancel")
	}
	if s := w.Stats(); s.Transactions == 0 || s.Errors != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestWriterExplainsWhatIsMissing(t *testing.T) {
	noLeaks(t)
	empty, _ := localpg.NewDatabase(t)
	err := demo.NewWriter(newPool(t, empty), demo.WriterConfig{}).Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "apply the demo schema") {
		t.Errorf("on an empty database: %v", err)
	}
	url := applied(t)
	err = demo.NewWriter(newPool(t, url), demo.WriterConfig{Story: true, StorySeller: "no-such-seller"}).Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), `"no-such-seller"`) {
		t.Errorf("with an unknown story seller: %v", err)
	}
	err = demo.NewWriter(newPool(t, url), demo.WriterConfig{ViralEvery: time.Second, ViralSeller: "Bramble & Bee", Transactions: 1}).Run(context.Background())
	if err != nil {
		t.Errorf("a seller by name: %v", err)
	}
}
