package main

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/repstream/repstream/cdc/localpg"
	"github.com/repstream/repstream/stream/streamtest"
)

// TestMetricsListen: with metrics.listen, /metrics is served there and no
// longer on the clients' address; an address that cannot be bound stops
// serve at once, naming the key.
func TestMetricsListen(t *testing.T) {
	dbURL, name := localpg.NewDatabase(t)
	streamtest.Exec(t, streamtest.Connect(t, dbURL), streamtest.Schema)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr := ln.Addr().String()
	ln.Close()
	p := start(t, nil, "serve", "--config", writeConfig(t, dbURL, name, "metrics:\n  listen: "+metricsAddr+"\n"))
	base := "http://" + listenAddr(t, p)
	if code, body := httpGet(t, "http://"+metricsAddr+"/metrics", ""); code != 200 || !strings.Contains(string(body), "repstream_api_ws_sessions") {
		t.Fatalf("metrics.listen /metrics: %d %.200s", code, body)
	}
	if code, _ := httpGet(t, base+"/metrics", ""); code != 404 {
		t.Fatalf("/metrics on listen with metrics.listen set: %d, want 404", code)
	}
	if code, _ := httpGet(t, base+"/healthz", ""); code != 200 {
		t.Fatalf("/healthz: %d", code)
	}
	if code, _ := httpGet(t, "http://"+metricsAddr+"/v1/status", ""); code != 404 {
		t.Fatalf("the metrics address serves the API: %d", code)
	}
	if err := p.stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}

	// Taken by another listener: serve exits naming the key.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	q := start(t, nil, "serve", "--config", writeConfig(t, dbURL, name, "metrics:\n  listen: "+busy.Addr().String()+"\n"))
	select {
	case err := <-q.done:
		if err == nil || !strings.Contains(q.output(), "metrics.listen") {
			t.Fatalf("exit %v, output does not name metrics.listen:\n%s", err, q.output())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("serve kept running with metrics.listen taken")
	}
}
