package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/repstream/repstream/cdc/localpg"
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

// TestConfigUnknownKeys: a misspelt key is refused, naming it and the key
// it was probably meant to be, wherever it is: at the top, in a section,
// in a source, or in a REPSTREAM_ variable.
func TestConfigUnknownKeys(t *testing.T) {
	cases := []struct {
		name, body string
		env        []string
		want       string
	}{
		{"top level", minimal + "retenton: 1h\n", nil, "retenton: unknown key (did you mean retention?)"},
		{"section misspelt", minimal + "reputaton: { prior_mean: 4 }\n", nil, "reputaton: unknown key (did you mean reputation?)"},
		{"key in a section", minimal + "auth: { jwks_ur: http://x }\n", nil, "auth.jwks_ur: unknown key (did you mean auth.jwks_url?)"},
		{"nothing close", minimal + "api: { colour: blue }\n", nil, "api.colour: unknown key; the keys under api are "},
		{"below a leaf", minimal + "listen: { port: 80 }\n", nil, "listen.port: unknown key"},
		{"in a source", strings.Replace(minimal, "score: rating", "scroe: rating", 1), nil, "sources[0].scroe: unknown key (did you mean sources[0].score?)"},
		{"environment", minimal, []string{"REPSTREAM_RETENTON", "1h"}, "REPSTREAM_RETENTON: environment variable for no key (did you mean REPSTREAM_RETENTION?)"},
		{"environment section", minimal, []string{"REPSTREAM_API__ALLOWED_ORIGIN", "https://a.example"}, "REPSTREAM_API__ALLOWED_ORIGIN: environment variable for no key (did you mean REPSTREAM_API__ALLOWED_ORIGINS?)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.env != nil {
				t.Setenv(c.env[0], c.env[1])
			}
			_, err := loadConfig(writeFile(t, c.body), nil)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
		})
	}
	// Known keys, the where columns of a source (the user's names), and
	// variables that are not settings pass.
	t.Setenv("REPSTREAM_TOKEN", "x")
	t.Setenv("REPSTREAM_TEST_SEED", "1")
	t.Setenv("REPSTREAM_AUTH__REQUIRE_EXP", "false")
	if _, err := loadConfig(writeFile(t, minimal+"auth: { insecure: true, leeway: 5s }\nmetrics: { listen: ':9090' }\n"), nil); err != nil {
		t.Fatalf("valid configuration refused: %v", err)
	}
}

// TestConfigListsFromEnvironment: every list-valued key can be set from
// the environment: lists of strings comma-separated, sources as YAML.
func TestConfigListsFromEnvironment(t *testing.T) {
	t.Setenv("REPSTREAM_API__ALLOWED_ORIGINS", "http://localhost:5173, https://shop.example.com")
	t.Setenv("REPSTREAM_AUTH__JWT_PUBLIC_KEYS", "/a.pem,/b.pem")
	t.Setenv("REPSTREAM_SOURCES", `[{table: public.ratings, subject: "user:{id}", score: score, scale: [0, 10]}]`)
	t.Setenv("DATABASE_URL", "postgres://env@db/shop")
	c, err := loadConfig("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.API.AllowedOrigins, "|"); got != "http://localhost:5173|https://shop.example.com" {
		t.Errorf("api.allowed_origins = %q", c.API.AllowedOrigins)
	}
	if got := strings.Join(c.Auth.PublicKeys, "|"); got != "/a.pem|/b.pem" {
		t.Errorf("auth.jwt_public_keys = %q", c.Auth.PublicKeys)
	}
	if len(c.Sources) != 1 || c.Sources[0].Table != "public.ratings" || c.Sources[0].Scale[1] != 10 {
		t.Errorf("sources = %+v", c.Sources)
	}
	t.Setenv("REPSTREAM_SOURCES", `[{table: x`)
	if _, err := loadConfig("", nil); err == nil || !strings.Contains(err.Error(), "REPSTREAM_SOURCES") {
		t.Errorf("a malformed REPSTREAM_SOURCES: %v", err)
	}
}

// TestDoctorUnknownKey: doctor fails on a misspelt key and names it and
// the key meant, as serve does.
func TestDoctorUnknownKey(t *testing.T) {
	dbURL, _ := localpg.NewDatabase(t)
	path := writeFile(t, strings.Replace(minimal, "postgres://file@db/shop", dbURL, 1)+"retenton: 1h\n")
	for _, args := range [][]string{{"doctor", "--config", path}, {"serve", "--config", path}} {
		out, err := exec.Command(binary, args...).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("%v: %v, want a failing exit\n%s", args, err, out)
		}
		if args[0] == "doctor" && ee.ExitCode() != 2 {
			t.Errorf("doctor exit %d, want 2", ee.ExitCode())
		}
		if !strings.Contains(string(out), "retenton: unknown key (did you mean retention?)") {
			t.Errorf("%v output does not name the key and its fix:\n%s", args, out)
		}
	}
}

// TestDevConfigReadsEnvironment: `repstream dev` takes api.allowed_origins
// from REPSTREAM_API__ALLOWED_ORIGINS, --allow-origin replaces it, and a
// misspelt variable is refused there too.
func TestDevConfigReadsEnvironment(t *testing.T) {
	secret := writeFile(t, strings.Repeat("s", 64))
	o := devOptions{listen: "127.0.0.1:0", logLevel: "info"}
	t.Setenv("REPSTREAM_API__ALLOWED_ORIGINS", "http://localhost:5173,http://localhost:3000")
	c, err := devConfig("postgres://dev@127.0.0.1/marketplace", o, secret)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.API.AllowedOrigins, " "); got != "http://localhost:5173 http://localhost:3000" {
		t.Errorf("allowed origins from the environment: %q", got)
	}
	if c.Auth.HS256SecretFile != secret || c.Auth.Insecure || len(c.Sources) == 0 {
		t.Errorf("dev's own settings lost: auth %+v, %d sources", c.Auth, len(c.Sources))
	}
	o.allowOrigins = []string{"https://shop.example"}
	if c, err = devConfig("postgres://dev@127.0.0.1/marketplace", o, secret); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.API.AllowedOrigins, " "); got != "https://shop.example" {
		t.Errorf("--allow-origin: %q", got)
	}
	o.allowOrigins = []string{"shop.example"}
	if _, err := devConfig("postgres://dev@127.0.0.1/marketplace", o, secret); err == nil || !strings.Contains(err.Error(), "api.allowed_origins") {
		t.Errorf("--allow-origin without a scheme: %v", err)
	}
	o.allowOrigins = nil
	t.Setenv("REPSTREAM_API__ALLOWED_ORIGIN", "http://x")
	if _, err := devConfig("postgres://dev@127.0.0.1/marketplace", o, secret); err == nil || !strings.Contains(err.Error(), "REPSTREAM_API__ALLOWED_ORIGINS") {
		t.Errorf("misspelt variable in dev: %v", err)
	}
}
