//go:build e2e

package e2e_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.yaml.in/yaml/v3"

	"github.com/repstream/repstream/cdc/localpg"
	"github.com/repstream/repstream/sql/demo"
	"github.com/repstream/repstream/stream"
)

// binary is the repstream binary, built once for all tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "repstream-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "repstream")
	out, err := exec.Command("go", "build", "-o", binary, "github.com/repstream/repstream/cmd/repstream").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build repstream: %v\n%s", err, out)
		os.Exit(1)
	}
	code := localpg.Main(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is the demo marketplace in a database of its own, and the
// configuration of a repstream service on a fixed loopback address with
// HS256 authentication.
type env struct {
	t      *testing.T
	dir    string
	dbURL  string
	addr   string // host:port the service listens on, the same across restarts
	token  string // a JWT for every subject
	config string
	pool   *pgxpool.Pool
	runs   int
	srv    *service // the latest run
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dbURL, name := localpg.NewDatabase(t)
	ctx := context.Background()
	if _, err := demo.Apply(ctx, dbURL); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, dir: t.TempDir(), dbURL: dbURL, addr: freeAddr(t)}

	// The secret as `openssl rand -hex 32 > file` writes it: hex digits and
	// a newline. The hex text itself is the HMAC key.
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	secret := hex.EncodeToString(b[:])
	secretFile := filepath.Join(e.dir, "jwt-hs256.secret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"subjects": []string{"*"},
		"exp":      time.Now().Add(time.Hour).Unix(),
	}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	e.token = tok

	// The demo's own configuration (sources, prior), pointed at this database.
	var cfg map[string]any
	if err := yaml.Unmarshal(demo.ComposeConfig, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["database_url"] = dbURL
	cfg["publication"] = name
	cfg["slot"] = name
	cfg["listen"] = e.addr
	cfg["auth"] = map[string]any{"jwt_hs256_secret_file": secretFile}
	body, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.config = filepath.Join(e.dir, "repstream.yaml")
	if err := os.WriteFile(e.config, body, 0o600); err != nil {
		t.Fatal(err)
	}

	if e.pool, err = pgxpool.New(ctx, dbURL); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.pool.Close)
	// One cleanup for every run, registered before the browser's: a
	// screenshot on failure still shows the page with its service.
	t.Cleanup(func() {
		if e.srv != nil {
			e.srv.kill()
		}
	})
	return e
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// service is one run of `repstream serve`.
type service struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // the exit, once done is closed
	log  string
}

// start runs the service and waits until it is ready (replication caught up).
func (e *env) start() *service {
	t := e.t
	t.Helper()
	e.runs++
	s := &service{done: make(chan struct{}), log: filepath.Join(e.dir, fmt.Sprintf("serve-%d.log", e.runs))}
	f, err := os.Create(s.log)
	if err != nil {
		t.Fatal(err)
	}
	s.cmd = exec.Command(binary, "serve", "--config", e.config)
	s.cmd.Stdout, s.cmd.Stderr = f, f
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s.err = s.cmd.Wait()
		f.Close()
		close(s.done)
	}()
	e.srv = s
	run := e.runs
	t.Cleanup(func() {
		if t.Failed() {
			s.kill()
			b, _ := os.ReadFile(s.log)
			t.Logf("repstream serve (run %d) output:\n%s", run, b)
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-s.done:
			b, _ := os.ReadFile(s.log)
			t.Fatalf("repstream serve exited before it was ready (%v):\n%s", s.err, b)
		default:
		}
		if code, _ := e.get("/readyz", nil); code == http.StatusOK {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatal("repstream serve not ready within 60s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill ends the service the way a crash would (SIGKILL) and waits for it.
func (s *service) kill() {
	select {
	case <-s.done:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGKILL) //nolint:errcheck
	<-s.done
}

// get GETs path from the service with the bearer token and decodes a 200
// answer into out (if not nil).
func (e *env) get(path string, out any) (int, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+e.addr+path, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+e.token)
	c := http.Client{Timeout: 5 * time.Second}
	res, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return res.StatusCode, err
	}
	if res.StatusCode != http.StatusOK {
		return res.StatusCode, fmt.Errorf("GET %s: %s: %s", path, res.Status, body)
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			return res.StatusCode, fmt.Errorf("GET %s: %w", path, err)
		}
	}
	return res.StatusCode, nil
}

// subject is GET /v1/subjects/{subject}.
func (e *env) subject(subject string) (stream.State, error) {
	var s stream.State
	_, err := e.get("/v1/subjects/"+url.PathEscape(subject), &s)
	return s, err
}

// sellers is GET /v1/subjects?prefix=seller:&order=bayes&limit=50.
func (e *env) sellers() ([]stream.State, error) {
	var list struct {
		LSN   string         `json:"lsn"`
		Items []stream.State `json:"items"`
	}
	_, err := e.get("/v1/subjects?prefix=seller:&order=bayes&limit=50", &list)
	return list.Items, err
}

// dashboardURL is the page with the token in its fragment.
func (e *env) dashboardURL() string { return "http://" + e.addr + "/#token=" + e.token }

// browser is one tab of a headless Chromium of its own.
type browser struct {
	t   *testing.T
	ctx context.Context

	mu       sync.Mutex
	errors   []string // uncaught exceptions; guarded by mu
	messages []string // console output; guarded by mu
}

// chromium finds the browser: $REPSTREAM_CHROMIUM, else chromium on PATH.
func chromium(t *testing.T) string {
	if p := os.Getenv("REPSTREAM_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no Chromium found: install it (apt-get install -y chromium) or set REPSTREAM_CHROMIUM")
	return ""
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	b := &browser{t: t}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium(t)),
		chromedp.Headless,
		chromedp.NoSandbox, // as root
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1440, 900),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		chromedp.Flag("force-color-profile", "srgb"),
		chromedp.Flag("password-store", "basic"),
	}
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithListener(b.listen))
	t.Cleanup(func() {
		cancel()
		acancel()
	})
	// The first Run starts the browser; it lives as long as ctx.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	b.ctx = ctx
	t.Cleanup(func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if len(b.messages) > 0 && (t.Failed() || testing.Verbose()) {
			t.Logf("browser console:\n%s", strings.Join(b.messages, "\n"))
		}
		for _, e := range b.errors {
			t.Errorf("uncaught exception in the page: %s", e)
		}
	})
	return b
}

// listen records the page's console and uncaught exceptions. It runs on
// chromedp's reader goroutine and must not block.
func (b *browser) listen(ev any) {
	switch ev := ev.(type) {
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		msg := d.Text
		if d.Exception != nil && d.Exception.Description != "" {
			msg += " " + d.Exception.Description
		}
		b.mu.Lock()
		b.errors = append(b.errors, fmt.Sprintf("%s (%s:%d:%d)", msg, d.URL, d.LineNumber+1, d.ColumnNumber+1))
		b.mu.Unlock()
	case *runtime.EventConsoleAPICalled:
		var parts []string
		for _, a := range ev.Args {
			switch {
			case a.Description != "":
				parts = append(parts, a.Description)
			case len(a.Value) > 0:
				parts = append(parts, string(a.Value))
			default:
				parts = append(parts, string(a.Type))
			}
		}
		b.mu.Lock()
		b.messages = append(b.messages, fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(parts, " ")))
		b.mu.Unlock()
	}
}

func (b *browser) do(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatal(err)
	}
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](b *browser, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr))
}

func mustEval[T any](b *browser, expr string) T {
	b.t.Helper()
	v, err := eval[T](b, expr)
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// status is the status badge's data-status.
func (b *browser) status() string {
	b.t.Helper()
	return mustEval[string](b, `document.querySelector('[data-testid="status"]').dataset.status`)
}

// waitStatus waits until the badge shows want.
func (b *browser) waitStatus(want string, within time.Duration) time.Duration {
	b.t.Helper()
	start := time.Now()
	var got string
	waitFor(b.t, within, func() (bool, string) {
		got = b.status()
		return got == want, "status " + got
	}, "the dashboard's status to become "+want)
	return time.Since(start)
}

// pageRow is one leaderboard row as the page shows it: the cells'
// data-value attributes, the exact numbers the page holds.
type pageRow struct {
	Subject string `json:"subject"`
	Bayes   string `json:"bayes"`
	Count   string `json:"count"`
	Mean    string `json:"mean"`
}

const rowsJS = `[...document.querySelectorAll('[data-testid="row"]')].map((r) => {
  const v = (id) => { const c = r.querySelector('[data-testid="' + id + '"]'); return (c && c.dataset.value) || ''; };
  return { subject: r.dataset.subject || '', bayes: v('bayes'), count: v('count'), mean: v('mean') };
})`

func (b *browser) rows() []pageRow {
	b.t.Helper()
	return mustEval[[]pageRow](b, rowsJS)
}

// waitFor polls cond until it holds or within passes; then it fails the
// test with what and cond's last note.
// clickRow clicks a subject's leaderboard row as a user would. A mouse click
// lands on coordinates, so it first waits for the rows to stop moving (re-sorts
// and the alert banner shift the layout), then clicks again if the click still
// landed while something moved, as a user would.
func (b *browser) clickRow(subject string) {
	b.t.Helper()
	sel := fmt.Sprintf(`[data-testid="row"][data-subject=%q]`, subject)
	shown := func() string {
		return mustEval[string](b, `document.querySelector('[data-testid="detail"]').dataset.subject || ''`)
	}
	for try := 1; ; try++ {
		waitFor(b.t, 10*time.Second, func() (bool, string) {
			n := mustEval[int](b, `document.getAnimations().filter(a => a.playState === 'running').length`)
			return n == 0, fmt.Sprintf("%d animations running", n)
		}, "the page to settle before clicking "+subject)
		b.do(chromedp.ScrollIntoView(chromedp.CSS(sel)), chromedp.Click(chromedp.CSS(sel)))
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) {
			if shown() == subject {
				if try > 1 {
					b.t.Logf("the click on %s's row took %d tries (the layout moved under the pointer)", subject, try)
				}
				return
			}
			time.Sleep(25 * time.Millisecond)
		}
		if try == 5 {
			b.t.Fatalf("clicked %s's row %d times; the detail shows %q", subject, try, shown())
		}
	}
}

func waitFor(t *testing.T, within time.Duration, cond func() (bool, string), what string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, note := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s; last: %s", within, what, note)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// artifactsDir is $REPSTREAM_ARTIFACTS, else artifacts/ at the repository
// root (gitignored).
func artifactsDir(t *testing.T) string {
	dir := os.Getenv("REPSTREAM_ARTIFACTS")
	if dir == "" {
		wd, err := os.Getwd() // the package directory: web/e2e
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(wd, "..", "..", "artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// screenshot saves the whole page as a PNG under artifactsDir.
func (b *browser) screenshot(name string) (string, error) {
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		return "", err
	}
	path := filepath.Join(artifactsDir(b.t), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		return "", err
	}
	return path, nil
}

// screenshotOnFailure saves the page as <test>-failed.png if the test fails.
func (b *browser) screenshotOnFailure() {
	b.t.Cleanup(func() {
		if !b.t.Failed() {
			return
		}
		name := strings.NewReplacer("/", "_", " ", "_").Replace(b.t.Name()) + "-failed.png"
		if p, err := b.screenshot(name); err != nil {
			b.t.Logf("screenshot on failure: %v", err)
		} else {
			b.t.Logf("screenshot of the failed page: %s", p)
		}
	})
}
