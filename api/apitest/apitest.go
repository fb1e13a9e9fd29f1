// Package apitest runs a real API server over an in-memory store for
// tests: an httptest listener, an HS256 secret, a writer that commits and
// publishes like the pipeline.
package apitest

import (
	"context"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/repstream/repstream/api"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/hub"
)

// Secret is the HS256 secret the test server accepts.
const Secret = "repstream-test-secret-0123456789abcdef"

// Env is a running test server.
type Env struct {
	T        testing.TB
	Server   *api.Server
	HTTP     *httptest.Server
	Log      *hub.MemLog // set by Start
	Store    stream.Log
	Registry *prometheus.Registry
	// URL is the WebSocket endpoint; Base the HTTP root.
	URL, Base string

	mu  sync.Mutex
	lsn stream.LSN
}

// Start runs a server over a fresh MemLog with cfg (auth: HS256 with
// Secret unless auth is given) and stops it when the test ends.
func Start(t testing.TB, cfg api.Config, auth *api.AuthConfig) *Env {
	t.Helper()
	log := hub.NewMemLog("epoch-1", 0x1000)
	e := StartLog(t, cfg, auth, log)
	m, _ := log.Meta(context.Background())
	e.Server.Hub().Reset(m)
	e.Log = log
	return e
}

// StartLog runs a server over any store. Its hub learns the epoch from the
// store, or from the pipeline's Reset.
func StartLog(t testing.TB, cfg api.Config, auth *api.AuthConfig, log stream.Log) *Env {
	t.Helper()
	if auth == nil {
		path := filepath.Join(t.TempDir(), "jwt")
		if err := os.WriteFile(path, []byte(Secret+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		auth = &api.AuthConfig{HS256SecretFile: path}
	}
	a, err := api.NewAuthenticator(*auth, nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	srv, err := api.NewServer(api.Options{Config: cfg, Auth: a, Log: log, Registerer: reg, Version: "test",
		Status: func(context.Context) (map[string]any, error) { return map[string]any{"slot": "mem"}, nil }})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(ctx) }()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		if err := srv.Shutdown(sctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		hs.Close()
		cancel()
		<-done
	})
	return &Env{T: t, Server: srv, HTTP: hs, Store: log, Registry: reg, lsn: 0x1000,
		Base: hs.URL, URL: "ws" + strings.TrimPrefix(hs.URL, "http") + "/v1/stream"}
}

// Token signs an HS256 token granting subjects, expiring after ttl (0: no
// exp).
func Token(t testing.TB, ttl time.Duration, subjects ...string) string {
	t.Helper()
	c := jwt.MapClaims{"sub": "test", "subjects": subjects}
	if ttl != 0 {
		c["exp"] = time.Now().Add(ttl).Unix()
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(Secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Write commits one transaction and publishes it, as the pipeline does.
func (e *Env) Write(ops ...hub.Op) stream.Txn {
	e.mu.Lock()
	defer e.mu.Unlock()
	// e.lsn is the head, an end LSN; the next commit LSN may equal it.
	lsn := e.lsn + stream.LSN(rand.IntN(3)*rand.IntN(300))
	t, err := e.Log.Commit(lsn, ops)
	if err != nil {
		e.T.Error(err)
	}
	e.lsn = lsn + 1
	e.Server.Hub().Publish(e.lsn, []stream.Txn{t})
	return t
}

// Writer writes random transactions until ctx is done; wait for it with
// the returned function.
func (e *Env) Writer(ctx context.Context, subjects int, pause time.Duration) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			e.Write(hub.RandomOps(subjects)...)
			if pause > 0 {
				time.Sleep(time.Duration(rand.Int64N(int64(pause))))
			}
		}
	}()
	return func() { <-done }
}
