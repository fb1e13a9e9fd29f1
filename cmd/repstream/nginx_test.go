package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/repstream/repstream/stream/streamtest"
)

// nginxProc runs deploy/nginx/repstream.conf with Debian's nginx in front
// of the given upstream addresses, on a free address of its own.
type nginxProc struct {
	addr string
	cmd  *exec.Cmd
	done chan error
	dir  string
}

func startNginx(t *testing.T, upstreams ...string) *nginxProc {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/nginx"); serr != nil {
			t.Fatal("nginx is not installed (apt-get install nginx; .ci/run does it):", err)
		}
		bin = "/usr/sbin/nginx"
	}
	conf, err := os.ReadFile("../../deploy/nginx/repstream.conf")
	if err != nil {
		t.Fatal(err)
	}
	n := &nginxProc{addr: freeAddr(t), dir: t.TempDir(), done: make(chan error, 1)}
	site := strings.Replace(string(conf), "listen 80;", "listen "+n.addr+";", 1)
	for i, u := range upstreams {
		name := fmt.Sprintf("serve-%d:8080", i+1)
		if !strings.Contains(site, name) {
			t.Fatalf("deploy/nginx/repstream.conf names no upstream %s", name)
		}
		site = strings.Replace(site, name, u, 1)
	}
	if err := os.WriteFile(filepath.Join(n.dir, "repstream.conf"), []byte(site), 0o644); err != nil {
		t.Fatal(err)
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;"
	}
	main := fmt.Sprintf(`%s
daemon off;
master_process off;
error_log %[2]s/error.log info;
pid %[2]s/nginx.pid;
events { worker_connections 512; }
http {
    access_log %[2]s/access.log;
    client_body_temp_path %[2]s/body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
    include %[2]s/repstream.conf;
}
`, user, n.dir)
	if err := os.WriteFile(filepath.Join(n.dir, "nginx.conf"), []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-t", "-p", n.dir, "-c", filepath.Join(n.dir, "nginx.conf")).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
	n.cmd = exec.Command(bin, "-p", n.dir, "-c", filepath.Join(n.dir, "nginx.conf"))
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { n.done <- n.cmd.Wait() }()
	t.Cleanup(func() {
		n.cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck
		select {
		case <-n.done:
		case <-time.After(10 * time.Second):
			n.cmd.Process.Kill() //nolint:errcheck
			<-n.done
		}
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(n.dir, "error.log"))
			t.Logf("nginx error.log:\n%s", log)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if code, _ := httpGetNoFail("http://" + n.addr + "/healthz"); code == 200 {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatal("nginx did not answer /healthz through to repstream")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestNginxTwoServeNodes runs the shipped nginx configuration in front of
// two serve nodes. A client connected through nginx keeps following while
// each node in turn is killed with -9 and restarted: it reconnects through
// nginx to the other node and resumes exactly, nothing missed, nothing
// twice.
func TestNginxTwoServeNodes(t *testing.T) {
	c := newCluster(t)
	c.replicator()
	s1, a1 := c.node("serve", "")
	s2, a2 := c.node("serve", "")
	ng := startNginx(t, a1, a2)
	if code, body := httpGet(t, "http://"+ng.addr+"/readyz", ""); code != 200 {
		t.Fatalf("/readyz through nginx: %d %s", code, body)
	}
	w := watchNode(t, "via nginx", wsURL(ng.addr), "", 0)
	c.write()
	time.Sleep(time.Second)
	s1.kill9()
	time.Sleep(1500 * time.Millisecond)
	c.node("serve", a1)
	time.Sleep(time.Second)
	s2.kill9()
	time.Sleep(1500 * time.Millisecond)
	c.node("serve", a2)
	time.Sleep(time.Second)
	c.stopWriting()
	w.converged(t, c.conn, 60*time.Second)
	st := w.c.Stats()
	t.Logf("client through nginx: %d deltas, stats %+v", w.deltas(), st)
	if st.Connects < 2 {
		t.Errorf("the client connected %d times; killing both nodes in turn should have moved it", st.Connects)
	}
	if st.Resets != 0 {
		t.Errorf("the client reset %d times; a resume across nodes must be exact", st.Resets)
	}
}

// httpGetNoFail is a GET that reports failure as code 0.
func httpGetNoFail(url string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestNginxSkipsNodeWithoutStore cuts one serve node off from its store
// (a black-holed network, the node itself running): it can serve nobody,
// so it refuses new streams with 503 before the upgrade, nginx moves each
// such client to the other node in the same request, and every client
// connecting through nginx meanwhile gets its snapshot and follows exactly.
// (Debian's nginx cannot probe /readyz; this is how a node's readiness
// reaches it.)
func TestNginxSkipsNodeWithoutStore(t *testing.T) {
	c := newCluster(t)
	c.replicator()
	u, err := url.Parse(c.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	px := streamtest.NewProxy(t, u.Host)
	_, a1 := c.node("serve", "", "store:\n  database_url: "+px.URL(t, c.dbURL)+"\n")
	_, a2 := c.node("serve", "")
	ng := startNginx(t, a1, a2)
	c.write()
	time.Sleep(time.Second)
	px.Freeze()
	if code, _ := httpGetNoFail("http://" + a1 + "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz of the node without its store: %d, want 503", code)
	}
	// A read its clients got answered within the last second still
	// vouches for the store: the refusal comes within about 1.5 s.
	var code int
	var body string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if code, body = wsHandshake(t, a1); code == http.StatusServiceUnavailable {
			break
		}
	}
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "store") {
		t.Errorf("a WebSocket upgrade on the node without its store, 10 s after it was cut off: %d %s, want 503 naming the store", code, body)
	}
	var ws []*watcher
	for i := range 6 {
		ws = append(ws, watchNode(t, fmt.Sprintf("client %d via nginx", i), wsURL(ng.addr), "", 0))
	}
	time.Sleep(time.Second)
	c.stopWriting()
	for _, w := range ws {
		w.converged(t, c.conn, 60*time.Second)
		if st := w.c.Stats(); st.Resets != 0 {
			t.Errorf("%s: %d resets, want none (stats %+v)", w.name, st.Resets, st)
		}
	}
	px.Thaw()
}

// wsHandshake sends a WebSocket upgrade to addr's /v1/stream and returns
// the status and body of the answer.
func wsHandshake(t *testing.T, addr string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v1/stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return resp.StatusCode, "" // the stream itself: not read
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(b)
}
