package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/repstream/repstream/cdc/localpg"
	"github.com/repstream/repstream/stream/streamtest"
)

// binary is the repstream binary built once for the tests that run it as a
// real process.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "repstream-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "repstream")
	out, err := exec.Command("go", "build", "-race", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build repstream: %v\n%s", err, out)
		os.Exit(1)
	}
	code := localpg.Main(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a repstream process under test.
type proc struct {
	t    testing.TB
	cmd  *exec.Cmd
	done chan error
	mu   sync.Mutex
	out  strings.Builder
}

// start runs the binary with args; its output goes to the test log on failure.
func start(t testing.TB, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, done: make(chan error, 1)}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Env = append(os.Environ(), env...)
	pr, pw := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s := bufio.NewScanner(pr)
		s.Buffer(make([]byte, 1<<20), 1<<20)
		for s.Scan() {
			p.mu.Lock()
			p.out.WriteString(s.Text() + "\n")
			p.mu.Unlock()
		}
	}()
	go func() {
		err := p.cmd.Wait()
		pw.Close()
		p.done <- err
	}()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill() //nolint:errcheck
			<-p.done
		}
		if t.Failed() {
			t.Logf("repstream %v output:\n%s", args, p.output())
		}
	})
	return p
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// kill9 ends the process the way a crash would.
func (p *proc) kill9() {
	p.cmd.Process.Signal(syscall.SIGKILL) //nolint:errcheck
	<-p.done
}

// stop sends SIGTERM and returns the exit error (nil for exit 0).
func (p *proc) stop(within time.Duration) error {
	p.cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck
	select {
	case err := <-p.done:
		return err
	case <-time.After(within):
		p.cmd.Process.Kill() //nolint:errcheck
		<-p.done
		return fmt.Errorf("did not exit within %s of SIGTERM", within)
	}
}

// waitOutput waits until the process printed substr.
func (p *proc) waitOutput(ctx context.Context, substr string) error {
	for !strings.Contains(p.output(), substr) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %q: %w", substr, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// writeConfig writes a configuration file for the streamtest schema.
func writeConfig(t testing.TB, dbURL, name, extra string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "repstream.yaml")
	body := fmt.Sprintf("database_url: %q\npublication: %s\nslot: %s\nlisten: 127.0.0.1:0\nheartbeat: 500ms\nauth:\n  insecure: true\n%s%s",
		dbURL, name, name, extra, streamtest.SourcesYAML)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
