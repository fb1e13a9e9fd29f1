package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const minimal = `
database_url: postgres://file@db/shop
sources:
  - table: public.reviews
    subject: "seller:{seller_id}"
    score: rating
    scale: [1, 5]
    where: { status: published, visible: true }
`

func TestConfigPrecedence(t *testing.T) {
	path := writeFile(t, minimal+"slot: from_file\nlisten: ':9000'\nreputation: { prior_mean: 4 }\n")
	t.Setenv("DATABASE_URL", "postgres://env@db/shop")
	t.Setenv("REPSTREAM_SLOT", "from_env")
	t.Setenv("REPSTREAM_LOG__FORMAT", "json")
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs.String("slot", "", "")
	fs.String("listen", "", "")
	if err := fs.Parse([]string{"--slot", "from_flag"}); err != nil {
		t.Fatal(err)
	}
	c, err := loadConfig(path, fs)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		what      string
		got, want any
	}{
		{"slot: flag beats env beats file", c.Slot, "from_flag"},
		{"listen: file beats default (flag unset)", c.Listen, ":9000"},
		{"database_url: DATABASE_URL beats file", c.DatabaseURL, "postgres://env@db/shop"},
		{"log.format from REPSTREAM_LOG__FORMAT", c.Log.Format, "json"},
		{"prior_mean from file", c.Reputation.Mean, 4.0},
		{"prior_weight default", c.Reputation.Weight, 10.0},
		{"publication default", c.Publication, "repstream"},
		{"retention default", c.Retention, 168 * time.Hour},
		{"create_publication default", c.CreatePublication, true},
		{"where kept", c.Sources[0].Where["visible"], true},
	}
	for _, k := range checks {
		if k.got != k.want {
			t.Errorf("%s: got %v, want %v", k.what, k.got, k.want)
		}
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	cases := []struct {
		name, body, key string
	}{
		{"no database", strings.Replace(minimal, "database_url: postgres://file@db/shop", "", 1), "database_url"},
		{"no sources", "database_url: postgres://x@y/z\n", "sources"},
		{"scale backwards", strings.Replace(minimal, "[1, 5]", "[5, 1]", 1), "sources[0].scale"},
		{"scale one bound", strings.Replace(minimal, "[1, 5]", "[5]", 1), "sources[0].scale"},
		{"scale too wide for exact sums", strings.Replace(minimal, "[1, 5]", "[0, 10000]", 1), "sources[0].scale"},
		{"template without column", strings.Replace(minimal, `"seller:{seller_id}"`, `"seller"`, 1), "sources[0].subject"},
		{"template unclosed", strings.Replace(minimal, `"seller:{seller_id}"`, `"seller:{seller_id"`, 1), "sources[0].subject"},
		{"no score", strings.Replace(minimal, "score: rating", "", 1), "sources[0].score"},
		{"where not scalar", strings.Replace(minimal, "visible: true", "visible: [1, 2]", 1), "sources[0].where.visible"},
		{"table twice", minimal + `  - table: public.reviews
    subject: "x:{id}"
    score: rating
    scale: [1, 5]
`, "sources[1].table"},
		{"log format", minimal + "log: { format: xml }\n", "log.format"},
		{"log level", minimal + "log: { level: loud }\n", "log.level"},
		{"retention", minimal + "retention: -1h\n", "retention"},
		{"bus role", minimal + "bus: { role: serve }\n", "bus.role"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := loadConfig(writeFile(t, c.body), nil)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), c.key+":") {
				t.Fatalf("error %q does not name key %s", err, c.key)
			}
		})
	}
}

func TestConfigMalformedYAML(t *testing.T) {
	_, err := loadConfig(writeFile(t, "sources: [\n"), nil)
	if err == nil || !strings.Contains(err.Error(), "c.yaml") {
		t.Fatalf("error %v should name the file", err)
	}
}

// TestServeRefusesBadConfig runs the binary: a bad configuration exits
// non-zero at once with a message naming the key, and so does a source
// table that does not exist.
func TestServeRefusesBadConfig(t *testing.T) {
	p := start(t, nil, "serve", "--config", writeFile(t, strings.Replace(minimal, "[1, 5]", "[5, 1]", 1)))
	if err := <-p.done; err == nil {
		t.Fatal("serve accepted a bad scale")
	}
	if !strings.Contains(p.output(), "sources[0].scale") {
		t.Fatalf("output does not name the key:\n%s", p.output())
	}
}
