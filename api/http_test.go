package api_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/repstream/repstream/api"
	"github.com/repstream/repstream/api/apitest"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/hub"
)

func get(t *testing.T, e *apitest.Env, path, token string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.Base+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var body map[string]any
	if err := json.Unmarshal(b, &body); err != nil {
		t.Fatalf("%s: not JSON: %s", path, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: content type %q", path, ct)
	}
	return resp.StatusCode, body
}

func TestHTTP(t *testing.T) {
	e := apitest.Start(t, api.Config{}, nil)
	var lsns []stream.LSN
	for i := range 5 {
		lsns = append(lsns, e.Write(hub.Op{Subject: "seller:1", Score: stream.Micro(i+1) * stream.MicroUnit}, hub.Op{Subject: "seller:2", Score: 4e6}).LSN)
	}
	all := apitest.Token(t, time.Hour, "*")
	sellers := apitest.Token(t, time.Hour, "seller:*")
	one := apitest.Token(t, time.Hour, "seller:1")
	for _, tc := range []struct {
		name, path, token string
		status            int
		code              string
		check             func(t *testing.T, body map[string]any)
	}{
		{"no token", "/v1/subjects/seller:1", "", 401, "unauthenticated", nil},
		{"bad token", "/v1/subjects/seller:1", "x.y.z", 401, "unauthenticated", nil},
		{"expired", "/v1/subjects/seller:1", apitest.Token(t, -time.Minute, "*"), 401, "unauthenticated", nil},
		{"state", "/v1/subjects/seller:1", one, 200, "", func(t *testing.T, b map[string]any) {
			if b["subject"] != "seller:1" || b["version"] != 5.0 || b["lsn"] != lsns[4].String() || b["sum"] != 15.0 {
				t.Errorf("%v", b)
			}
		}},
		{"escaped subject", "/v1/subjects/" + url.PathEscape("seller:1"), one, 200, "", nil},
		{"forbidden", "/v1/subjects/seller:2", one, 403, "forbidden", nil},
		{"unknown", "/v1/subjects/seller:99", sellers, 404, "not_found", nil},
		{"leaderboard", "/v1/subjects?prefix=seller:&order=count&limit=1", sellers, 200, "", func(t *testing.T, b map[string]any) {
			items := b["items"].([]any)
			if len(items) != 1 || b["lsn"] != lsns[4].String() {
				t.Errorf("%v", b)
			}
		}},
		{"leaderboard forbidden", "/v1/subjects?prefix=sell", sellers, 403, "forbidden", nil},
		{"leaderboard bad order", "/v1/subjects?prefix=seller:&order=name", sellers, 400, "bad_request", nil},
		{"leaderboard bad limit", "/v1/subjects?prefix=seller:&limit=0", sellers, 400, "bad_request", nil},
		{"leaderboard no prefix", "/v1/subjects", all, 400, "bad_request", nil},
		{"deltas", "/v1/subjects/seller:1/deltas?since=" + lsns[1].String() + "&limit=2", one, 200, "", func(t *testing.T, b map[string]any) {
			items := b["items"].([]any)
			if len(items) != 2 || b["more"] != true || items[0].(map[string]any)["lsn"] != lsns[2].String() {
				t.Errorf("%v", b)
			}
		}},
		{"deltas all", "/v1/subjects/seller:1/deltas", one, 200, "", func(t *testing.T, b map[string]any) {
			if len(b["items"].([]any)) != 5 || b["more"] != false {
				t.Errorf("%v", b)
			}
		}},
		{"deltas bad lsn", "/v1/subjects/seller:1/deltas?since=banana", one, 400, "bad_cursor", nil},
		{"deltas future", "/v1/subjects/seller:1/deltas?since=FF/0", one, 400, "bad_cursor", nil},
		{"deltas too old", "/v1/subjects/seller:1/deltas?since=0/1", one, 410, "bad_cursor", nil},
		{"status", "/v1/status", adminToken(t, "seller:1"), 200, "", func(t *testing.T, b map[string]any) {
			if b["slot"] != "mem" || b["epoch"] != "epoch-1" || b["connections"] != 0.0 {
				t.Errorf("%v", b)
			}
		}},
		{"status without token", "/v1/status", "", 401, "unauthenticated", nil},
		{"healthz", "/healthz", "", 200, "", nil},
		{"readyz", "/readyz", "", 200, "", nil},
		{"no route", "/v2/nothing", "", 404, "not_found", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := get(t, e, tc.path, tc.token)
			if status != tc.status {
				t.Fatalf("status %d, want %d: %v", status, tc.status, body)
			}
			if tc.code != "" && (body["code"] != tc.code || body["message"] == "") {
				t.Fatalf("body %v, want code %s", body, tc.code)
			}
			if tc.check != nil {
				tc.check(t, body)
			}
		})
	}
	resp, err := http.Get(e.Base + "/metrics")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("metrics: %v %v", err, resp)
	}
	resp.Body.Close()
}

// The subject in the path is unescaped once: /v1/subjects/a%2541 names
// "a%41", not "aA"; an escaped slash names a subject with a slash.
func TestHTTPSubjectPathUnescapedOnce(t *testing.T) {
	e := apitest.Start(t, api.Config{}, nil)
	e.Write(hub.Op{Subject: "a%41", Score: 1e6})
	e.Write(hub.Op{Subject: "aA", Score: 2e6}, hub.Op{Subject: "a/b", Score: 3e6}, hub.Op{Subject: "a b", Score: 4e6})
	all := apitest.Token(t, time.Hour, "*")
	for path, want := range map[string]string{
		"/v1/subjects/a%2541": "a%41",
		"/v1/subjects/a%41":   "aA",
		"/v1/subjects/aA":     "aA",
		"/v1/subjects/a%2Fb":  "a/b",
		"/v1/subjects/a%20b":  "a b",
	} {
		status, body := get(t, e, path, all)
		if status != 200 || body["subject"] != want {
			t.Errorf("GET %s: %d %v; want subject %q", path, status, body, want)
		}
		status, body = get(t, e, path+"/deltas", all)
		items, _ := body["items"].([]any)
		if status != 200 || len(items) != 1 || items[0].(map[string]any)["subject"] != want {
			t.Errorf("GET %s/deltas: %d %v; want one delta of %q", path, status, body, want)
		}
	}
	// Only the token's subjects: a%41 is not covered by a token for aA.
	if status, _ := get(t, e, "/v1/subjects/a%2541", apitest.Token(t, time.Hour, "aA")); status != 403 {
		t.Errorf("GET a%%2541 with a token for aA: %d; want 403", status)
	}
}

// pruneAfterMeta prunes the log right after the first Meta read, as
// retention may between the HTTP handler's checks and its read.
type pruneAfterMeta struct {
	*hub.MemLog
	once sync.Once
	upto stream.LSN
	arm  atomic.Bool
}

func (p *pruneAfterMeta) Meta(ctx context.Context) (stream.Meta, error) {
	m, err := p.MemLog.Meta(ctx)
	if p.arm.Load() {
		p.once.Do(func() { p.MemLog.Prune(p.upto) })
	}
	return m, err
}

// GET /v1/subjects/{s}/deltas reads its page consistently with the
// retention bound: pruned under the request it answers 410, never a page
// with a gap.
func TestHTTPDeltasPrunedUnderRequest(t *testing.T) {
	log := hub.NewMemLog("epoch-1", 0x1000)
	pl := &pruneAfterMeta{MemLog: log}
	e := apitest.StartLog(t, api.Config{}, nil, pl)
	m, _ := log.Meta(context.Background())
	e.Server.Hub().Reset(m)
	var lsns []stream.LSN
	lsn := stream.LSN(0x1000)
	for range 10 {
		tx, err := log.Commit(lsn, []hub.Op{{Subject: "seller:1", Score: 4e6}})
		if err != nil {
			t.Fatal(err)
		}
		lsns = append(lsns, tx.LSN)
		lsn += 0x10
	}
	pl.upto = lsns[5]
	pl.arm.Store(true)
	all := apitest.Token(t, time.Hour, "*")
	status, body := get(t, e, "/v1/subjects/seller:1/deltas?since="+lsns[1].String(), all)
	if status != 410 || body["code"] != "bad_cursor" {
		t.Fatalf("pruned under the request: %d %v; want 410 bad_cursor", status, body)
	}
	// Without since the page starts at the log's start, read again.
	status, body = get(t, e, "/v1/subjects/seller:1/deltas", all)
	items, _ := body["items"].([]any)
	if status != 200 || len(items) != 4 || items[0].(map[string]any)["lsn"] != lsns[6].String() {
		t.Fatalf("no since: %d %v; want the 4 deltas after %s", status, body, lsns[5])
	}
}
