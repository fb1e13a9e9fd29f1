package demo_test

import (
	"context"
	"os"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.yaml.in/yaml/v3"

	"github.com/repstream/repstream/cdc/localpg"
	"github.com/repstream/repstream/sql/demo"
	"github.com/repstream/repstream/stream"
)

func TestMain(m *testing.M) {
	code := localpg.Main(m)
	removeBinary()
	os.Exit(code)
}

// applied is a new database with the marketplace in it.
func applied(t *testing.T) string {
	t.Helper()
	url, _ := localpg.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := demo.Apply(ctx, url); err != nil {
		t.Fatal(err)
	}
	return url
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func count(t *testing.T, conn *pgx.Conn, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := conn.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func TestApplyCreatesAndSeedsOnce(t *testing.T) {
	url, _ := localpg.NewDatabase(t)
	ctx := context.Background()
	// Concurrent first starts (compose's writer and a developer's loadgen, say): one creates.
	var wg sync.WaitGroup
	created := make(chan bool, 3)
	for range 3 {
		wg.Go(func() {
			c, err := demo.Apply(ctx, url)
			if err != nil {
				t.Error(err)
			}
			created <- c
		})
	}
	wg.Wait()
	close(created)
	n := 0
	for c := range created {
		if c {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d of 3 concurrent Apply calls created the schema, want 1", n)
	}
	if c, err := demo.Apply(ctx, url); err != nil || c {
		t.Fatalf("Apply on an existing schema = %v, %v; want false, nil", c, err)
	}

	conn := connect(t, url)
	if n := count(t, conn, "SELECT count(*) FROM sellers"); n < 24 {
		t.Errorf("%d sellers, want a few dozen", n)
	}
	if n := count(t, conn, "SELECT count(*) FROM reviews WHERE status = 'published'"); n < 500 {
		t.Errorf("%d published reviews seeded, want hundreds", n)
	}
	for _, st := range []string{"hidden", "pending"} {
		if n := count(t, conn, "SELECT count(*) FROM reviews WHERE status = $1", st); n == 0 {
			t.Errorf("no %s reviews seeded", st)
		}
	}
	if n := count(t, conn, "SELECT count(*) FROM ratings"); n < 500 {
		t.Errorf("%d ratings seeded", n)
	}
	for _, handle := range []string{demo.DefaultStorySeller, demo.DefaultViralSeller} {
		if n := count(t, conn, "SELECT count(*) FROM products p JOIN sellers s ON s.id = p.seller_id WHERE s.handle = $1", handle); n == 0 {
			t.Errorf("seller %s has no products", handle)
		}
	}
	// An application's ordinary tables: DEFAULT replica identity, which repstream must cope with.
	if n := count(t, conn, "SELECT count(*) FROM pg_class WHERE relname IN ('reviews', 'ratings') AND relreplident = 'd'"); n != 2 {
		t.Errorf("reviews and ratings should keep the DEFAULT replica identity")
	}
	if n := count(t, conn, "SELECT count(*) FROM pg_tables WHERE tablename = 'demo_seed'"); n != 0 {
		t.Errorf("the seed's scratch table was left behind")
	}
}

// The seed is deterministic: every fresh demo starts from the same reviews.
func TestSeedIsDeterministic(t *testing.T) {
	a, b := connect(t, applied(t)), connect(t, applied(t))
	const q = `SELECT md5(string_agg(concat_ws(',', id, seller_id, product_id, author, rating, status, body), ';' ORDER BY id)) FROM reviews`
	var ha, hb string
	if err := a.QueryRow(context.Background(), q).Scan(&ha); err != nil {
		t.Fatal(err)
	}
	if err := b.QueryRow(context.Background(), q).Scan(&hb); err != nil {
		t.Fatal(err)
	}
	if ha != hb {
		t.Fatalf("two seeds differ: %s vs %s", ha, hb)
	}
}

func TestSourcesCompile(t *testing.T) {
	rules, err := stream.CompileSources(demo.Sources())
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) != 2 || rules[0].Table() != "public.reviews" || rules[1].Table() != "public.ratings" {
		t.Fatalf("rules = %v", rules)
	}
	// A published 4-star review of seller 7 rates seller:7; a hidden one rates no one.
	vals := func(m map[string]string) []*string {
		out := make([]*string, len(rules[0].Columns))
		for i, c := range rules[0].Columns {
			v := m[c]
			out[i] = &v
		}
		return out
	}
	c, ok := rules[0].Contribute(vals(map[string]string{"seller_id": "7", "rating": "4", "status": "published"}))
	if !ok || c.Subject != "seller:7" || c.Bucket != 3 {
		t.Errorf("published review: %+v, %v", c, ok)
	}
	if _, ok := rules[0].Contribute(vals(map[string]string{"seller_id": "7", "rating": "4", "status": "hidden"})); ok {
		t.Error("a hidden review contributes")
	}
	// Each call builds new values, so a caller may change its copy.
	s := demo.Sources()
	s[0].Where["status"] = "hidden"
	if demo.Sources()[0].Where["status"] != "published" {
		t.Error("Sources shares its maps between calls")
	}
}

// compose.yaml, the configuration docker-compose.yml runs with, says what
// Sources and Prior say.
func TestComposeConfigMatchesSources(t *testing.T) {
	var cfg struct {
		Sources    []stream.Source `yaml:"sources"`
		Reputation stream.Prior    `yaml:"reputation"`
		Auth       map[string]any  `yaml:"auth"`
	}
	if err := yaml.Unmarshal(demo.ComposeConfig, &cfg); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg.Sources, demo.Sources()) {
		t.Errorf("compose.yaml sources:\n%#v\nSources():\n%#v", cfg.Sources, demo.Sources())
	}
	if cfg.Reputation != demo.Prior() {
		t.Errorf("compose.yaml reputation %+v, Prior() %+v", cfg.Reputation, demo.Prior())
	}
	if len(cfg.Auth) == 0 {
		t.Error("compose.yaml says nothing about auth; the service must be told")
	}
}
