package demo_test

// Tests that run the repstream binary: `repstream dev` end to end, and
// docker-compose.yml, which cannot run here (no Docker engine), checked
// against the binary's real subcommands and flags.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.yaml.in/yaml/v3"

	"github.com/repstream/repstream/cdc/localpg"
)

const repoRoot = "../.."

// client keeps no idle connections, which would outlive a test.
var client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}

var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

// binary builds cmd/repstream once per test run.
func binary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "repstream-bin-"); binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "repstream")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/repstream/repstream/cmd/repstream").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build ./cmd/repstream: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

func removeBinary() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}

// cleanEnv is the environment without repstream's own variables, so the
// developer's settings do not leak into the binary under test.
func cleanEnv(extra ...string) []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "REPSTREAM_") || strings.HasPrefix(kv, "DATABASE_URL=")
	})
	return append(env, extra...)
}

// compose is the part of docker-compose.yml the test reads.
type compose struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Build       any               `yaml:"build"`
		Command     any               `yaml:"command"`
		Environment map[string]string `yaml:"environment"`
		Volumes     []string          `yaml:"volumes"`
		DependsOn   map[string]any    `yaml:"depends_on"`
	} `yaml:"services"`
}

func TestComposeUsesRealSubcommandsAndFlags(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var c compose
	if err := yaml.Unmarshal(raw, &c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	bin := binary(t)

	pg, ok := c.Services["postgres"]
	if !ok {
		t.Fatal("no postgres service")
	}
	pgCmd, _ := pg.Command.(string)
	for _, want := range []string{"wal_level=logical", "max_replication_slots=", "max_wal_senders="} {
		if !strings.Contains(pgCmd, want) {
			t.Errorf("postgres command %q lacks %s", pgCmd, want)
		}
	}
	if !strings.HasPrefix(pg.Image, "postgres:16") {
		t.Errorf("postgres image %q, want postgres:16", pg.Image)
	}

	ours := 0
	subs := map[string]bool{}
	for name, s := range c.Services {
		if s.Build == nil {
			continue
		}
		ours++
		args, ok := s.Command.([]any)
		if !ok {
			t.Errorf("%s: command %v: write it as a list of the binary's arguments", name, s.Command)
			continue
		}
		var sub, flags []string
		for _, a := range args {
			a := fmt.Sprint(a)
			switch {
			case strings.HasPrefix(a, "--"):
				flags = append(flags, strings.SplitN(a, "=", 2)[0])
			case len(flags) == 0 && !strings.HasPrefix(a, "-"):
				sub = append(sub, a)
			}
		}
		if len(sub) == 0 {
			t.Errorf("%s: command %v names no subcommand", name, args)
			continue
		}
		subs[sub[0]] = true
		help, err := exec.Command(bin, append(sub, "--help")...).CombinedOutput()
		if err != nil {
			t.Errorf("%s: repstream %s --help: %v\n%s", name, strings.Join(sub, " "), err, help)
			continue
		}
		if !strings.Contains(string(help), "repstream "+strings.Join(sub, " ")) {
			t.Errorf("%s: repstream %s is not a subcommand:\n%s", name, strings.Join(sub, " "), help)
			continue
		}
		for _, f := range flags {
			if !regexp.MustCompile(`(?m)^\s+(-\w, )?` + regexp.QuoteMeta(f) + `\b`).Match(help) {
				t.Errorf("%s: repstream %s has no flag %s", name, strings.Join(sub, " "), f)
			}
		}
		if s.Environment["DATABASE_URL"] == "" {
			t.Errorf("%s: no DATABASE_URL in its environment", name)
		}
		if sub[0] == "serve" {
			i := slices.IndexFunc(args, func(a any) bool { return a == "--config" })
			if i < 0 || i+1 >= len(args) {
				t.Errorf("%s: serve without --config", name)
				continue
			}
			target := fmt.Sprint(args[i+1])
			mounted := false
			for _, v := range s.Volumes {
				parts := strings.Split(v, ":")
				if len(parts) >= 2 && parts[1] == target {
					mounted = true
					if _, err := os.Stat(filepath.Join(repoRoot, parts[0])); err != nil {
						t.Errorf("%s: mounts %s: %v", name, parts[0], err)
					}
				}
			}
			if !mounted {
				t.Errorf("%s: --config %s is not mounted from the repository", name, target)
			}
		}
	}
	for _, want := range []string{"serve", "loadgen"} {
		if !subs[want] {
			t.Errorf("no service runs repstream %s", want)
		}
	}
	if ours < 2 {
		t.Errorf("%d services built from the Dockerfile", ours)
	}

	// The Dockerfile builds with the Go of go.mod and runs the binary itself,
	// so a service's command is a subcommand and its flags.
	df, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
	if m == nil || !bytes.Contains(df, []byte("FROM golang:"+string(m[1]))) {
		t.Errorf("the Dockerfile does not build with Go %s from go.mod", m[1])
	}
	if !bytes.Contains(df, []byte(`ENTRYPOINT ["/usr/local/bin/repstream"]`)) {
		t.Error(`the Dockerfile's ENTRYPOINT is not ["/usr/local/bin/repstream"]`)
	}
}

// proc is a running repstream with its output collected.
type proc struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	out   bytes.Buffer // stdout and stderr; guarded by mu
	lines chan string  // stdout, line by line; closed at EOF
	done  chan struct{}
	err   error // Wait's; set before done closes
}

func start(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(binary(t), args...), lines: make(chan string, 1000), done: make(chan struct{})}
	p.cmd.Env = env
	p.cmd.Stderr = writerFunc(func(b []byte) (int, error) { p.mu.Lock(); defer p.mu.Unlock(); return p.out.Write(b) })
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.mu.Lock()
			p.out.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
		io.Copy(io.Discard, stdout) //nolint:errcheck
		close(p.lines)
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { // a failed test must not leave the process behind
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill() //nolint:errcheck
			<-p.done
		}
	})
	return p
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// expect reads stdout until a line matches re and returns its submatches.
func (p *proc) expect(t *testing.T, re string, timeout time.Duration) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				<-p.done
				t.Fatalf("repstream exited (%v) before printing /%s/:\n%s", p.err, re, p.output())
			}
			if m := rx.FindStringSubmatch(l); m != nil {
				return m
			}
		case <-deadline:
			t.Fatalf("no line /%s/ within %s:\n%s", re, timeout, p.output())
		}
	}
}

// interrupt sends SIGINT, as Ctrl-C does, and waits for the exit.
func (p *proc) interrupt(t *testing.T, timeout time.Duration) {
	t.Helper()
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("repstream did not stop within %s of SIGINT:\n%s", timeout, p.output())
	}
	if p.err != nil {
		t.Fatalf("repstream exited with %v after SIGINT, want 0:\n%s", p.err, p.output())
	}
}

// waitReady polls GET base/readyz until it answers 200.
func waitReady(t *testing.T, p *proc, base string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := client.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-p.done:
			t.Fatalf("repstream exited (%v) before it was ready:\n%s", p.err, p.output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/readyz not 200 within %s (last: %v):\n%s", base, timeout, err, p.output())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// The compose configuration really runs the service on the demo marketplace.
func TestComposeConfigServesTheDemo(t *testing.T) {
	noLeaks(t)
	url := applied(t)
	addr := freeAddr(t)
	p := start(t, cleanEnv("DATABASE_URL="+url), "serve", "--config", "compose.yaml", "--listen", addr)
	waitReady(t, p, "http://"+addr, 90*time.Second)
	p.interrupt(t, 30*time.Second)
}

// `repstream dev` runs the whole demo and Ctrl-C leaves nothing behind.
func TestDevRunsAndStopsCleanly(t *testing.T) {
	noLeaks(t)
	const pageOrigin = "http://localhost:5173"
	p := start(t, cleanEnv(), "dev", "--listen", "127.0.0.1:0", "--rate", "50", "--viral-every", "2s", "--log-level", "warn", "--allow-origin", pageOrigin)
	dataDir := p.expect(t, `^\s*data dir:\s+(\S+)$`, 2*time.Minute)[1]
	t.Cleanup(func() { // should the test fail half-way
		if _, err := os.Stat(dataDir); err == nil {
			pgctl("-D", dataDir, "-m", "immediate", "stop") //nolint:errcheck
		}
	})
	if _, err := os.Stat(filepath.Join(dataDir, "PG_VERSION")); err != nil {
		t.Fatalf("printed data dir: %v", err)
	}
	m := p.expect(t, `^\s*dashboard:\s+(http://127\.0\.0\.1:\d+)/#token=(\S+)$`, 2*time.Minute)
	base, token := m[1], m[2]
	curl := p.expect(t, `^\s*curl:\s+(.*)$`, 5*time.Second)[1]
	want := fmt.Sprintf(`curl -H 'Authorization: Bearer %s' '%s/v1/subjects?prefix=seller:&order=bayes&limit=10'`, token, base)
	if curl != want {
		t.Errorf("curl line:\n got %s\nwant %s", curl, want)
	}
	secretFile := p.expect(t, `^\s*secret:\s+(\S+)`, 5*time.Second)[1]
	p.expect(t, `^\s*origins:`, 5*time.Second)
	waitReady(t, p, base, 2*time.Minute)
	checkReadmeExamples(t, base, token)
	checkAllowOrigin(t, base, pageOrigin, p.output())

	// The token is signed with the secret in the printed file.
	secret, err := os.ReadFile(secretFile)
	if err != nil {
		t.Fatal(err)
	}
	claims := jwt.MapClaims{}
	if _, err := jwt.ParseWithClaims(token, claims, func(*jwt.Token) (any, error) { return secret, nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired()); err != nil {
		t.Fatalf("token: %v", err)
	}
	exp, _ := claims.GetExpirationTime()
	if sub, _ := claims.GetSubject(); sub != "dev" || fmt.Sprint(claims["subjects"]) != "[*]" ||
		exp == nil || time.Until(exp.Time) < 23*time.Hour || time.Until(exp.Time) > 25*time.Hour {
		t.Errorf("token claims %v", claims)
	}

	// The writer writes and the service follows: the checkpoint moves.
	first := checkpoint(t, base, token)
	deadline := time.Now().Add(30 * time.Second)
	for checkpoint(t, base, token) == first {
		if time.Now().After(deadline) {
			t.Fatalf("checkpoint stuck at %s for 30s:\n%s", first, p.output())
		}
		time.Sleep(200 * time.Millisecond)
	}

	p.interrupt(t, time.Minute)
	if !strings.Contains(p.output(), "stopped; removed "+dataDir) {
		t.Errorf("dev did not say it removed the data dir:\n%s", p.output())
	}
	devDir := filepath.Dir(filepath.Dir(dataDir))
	for _, d := range []string{dataDir, devDir} {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is still there (%v)", d, err)
		}
	}
	// pg_ctl status exits 3 when no server runs and 4 when the directory is gone.
	out, err := pgctl("status", "-D", dataDir)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || (ee.ExitCode() != 3 && ee.ExitCode() != 4) {
		t.Errorf("pg_ctl status -D %s: %v:\n%s", dataDir, err, out)
	}
	if pids := processesWith(dataDir); len(pids) > 0 {
		t.Errorf("processes %v still run with %s", pids, dataDir)
	}
}

func checkpoint(t *testing.T, base, token string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+"/v1/status", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`"checkpoint_lsn":\s*"([^"]*)"`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("/v1/status has no checkpoint_lsn: %s", b)
	}
	return string(m[1])
}

// processesWith lists the processes whose command line mentions s.
func processesWith(s string) []string {
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var pids []string
	for _, f := range cmdlines {
		b, err := os.ReadFile(f)
		if err == nil && bytes.Contains(b, []byte(s)) {
			pids = append(pids, filepath.Base(filepath.Dir(f)))
		}
	}
	return pids
}

// pgctl runs pg_ctl, as the postgres user when we are root (pg_ctl refuses root).
func pgctl(args ...string) ([]byte, error) {
	bin, err := localpg.BinDir()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(bin, "pg_ctl"), args...)
	cmd.Dir = os.TempDir()
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, err
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	}
	return cmd.CombinedOutput()
}
