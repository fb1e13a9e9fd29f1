package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// RaiseNoFile lifts the soft open-files limit to the hard one: 10,000
// WebSockets need 10,000 descriptors on each side.
func RaiseNoFile() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

var errStopHung = errors.New("bench: the service did not stop within 30 s of SIGTERM")

// service is the repstream service running as a child process.
type service struct {
	env  *env
	cmd  *exec.Cmd
	done chan error
}

// startService starts the service and returns at once; waitReady waits
// until it has caught up.
func (e *env) startService() (*service, error) {
	bin := e.self
	if e.o.Service != "" {
		bin = e.o.Service
	}
	cmd := exec.Command(bin, e.serviceArgs(e.cfgPath)...)
	cmd.Stdout, cmd.Stderr = e.svcLog, e.svcLog
	cmd.Env = append(os.Environ(), e.svcExtra...)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start service: %w", err)
	}
	s := &service{env: e, cmd: cmd, done: make(chan error, 1)}
	go func() { s.done <- cmd.Wait() }()
	return s, nil
}

func (s *service) pid() int { return s.cmd.Process.Pid }

// waitReady polls /readyz until the service is replicating and caught up.
func (s *service) waitReady(ctx context.Context, within time.Duration) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		select {
		case err := <-s.done:
			s.done <- err
			return fmt.Errorf("bench: service exited: %v (see %s)", err, s.env.svcLog.Name())
		default:
		}
		resp, err := http.Get(s.env.httpURL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("bench: service not ready within %s (see %s)", within, s.env.svcLog.Name())
}

// stop ends the service with SIGTERM (a clean shutdown commits and confirms).
func (s *service) stop() error {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == -1 {
			return nil
		}
		return err
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Signal(syscall.SIGQUIT) // goroutine dump into the service log
		time.Sleep(time.Second)
		_ = s.cmd.Process.Kill()
		<-s.done
		return fmt.Errorf("%w (goroutine dump in %s)", errStopHung, s.env.svcLog.Name())
	}
}

// rssKB reads the service's resident set size.
func (s *service) rssKB() (int64, error) { return rssOf(s.pid()) }

func rssOf(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			return strconv.ParseInt(f[1], 10, 64)
		}
	}
	return 0, errors.New("bench: no VmRSS")
}

// clients is the client process (`repstream bench client`).
type clients struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

func (e *env) startClients() (*clients, error) { return e.startClientsFor(e.wsURL) }

// startClientsFor starts a client process against another server's URL.
func (e *env) startClientsFor(url string) (*clients, error) {
	cmd := exec.Command(e.self, "bench", "client", "--url", url)
	cmd.Stderr = e.cliLog
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start clients: %w", err)
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	return &clients{cmd: cmd, in: in, out: sc}, nil
}

func (c *clients) do(cmd clientCmd) (clientReply, error) {
	b, _ := json.Marshal(cmd)
	if _, err := c.in.Write(append(b, '\n')); err != nil {
		return clientReply{}, fmt.Errorf("bench: client process: %w", err)
	}
	if !c.out.Scan() {
		return clientReply{}, fmt.Errorf("bench: client process ended: %v", c.out.Err())
	}
	var r clientReply
	if err := json.Unmarshal(c.out.Bytes(), &r); err != nil {
		return r, err
	}
	if r.Err != "" {
		return r, errors.New("bench: client process: " + r.Err)
	}
	return r, nil
}

func (c *clients) stop() {
	_, _ = c.do(clientCmd{Cmd: "exit"})
	c.in.Close()
	done := make(chan struct{})
	go func() { c.cmd.Wait(); close(done) }() //nolint:errcheck
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
	}
}

// scrape reads the service's /metrics: every unlabelled sample by name.
func (e *env) scrape() (map[string]float64, error) {
	resp, err := http.Get(e.httpURL + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 2 && !strings.HasPrefix(f[0], "#") {
			if v, err := strconv.ParseFloat(f[1], 64); err == nil {
				out[f[0]] = v
			}
		}
	}
	return out, nil
}

// goMemKB is the Go heap and stack in use, in KiB: what the service's
// objects hold, without the runtime's free memory that RSS also counts.
func (e *env) goMemKB() (float64, error) {
	m, err := e.scrape()
	if err != nil {
		return 0, err
	}
	heap, ok1 := m["go_memstats_heap_inuse_bytes"]
	stack, ok2 := m["go_memstats_stack_inuse_bytes"]
	if !ok1 || !ok2 {
		return 0, errors.New("bench: the service reports no go_memstats_heap_inuse_bytes or go_memstats_stack_inuse_bytes")
	}
	return (heap + stack) / 1024, nil
}

// metric reads a histogram's _sum and _count from the service's /metrics
// (since the service started).
func (e *env) metric(name string) (sum, count float64, err error) {
	m, err := e.scrape()
	return m[name+"_sum"], m[name+"_count"], err
}
