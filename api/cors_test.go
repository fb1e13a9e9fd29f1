package api_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/repstream/repstream/api"
	"github.com/repstream/repstream/api/apitest"
	"github.com/repstream/repstream/web"
)

func do(t *testing.T, method, url string, h map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// TestCORS: a page on an origin in api.allowed_origins may call the HTTP
// API (its preflight is answered, not refused with 405) and read the
// answers; a page on another origin gets no CORS grant.
func TestCORS(t *testing.T) {
	const page = "http://localhost:5173"
	e := apitest.Start(t, api.Config{AllowedOrigins: []string{page}}, nil)
	tok := apitest.Token(t, time.Hour, "*")
	path := e.Base + "/v1/subjects?prefix=seller:"

	pre := do(t, http.MethodOptions, path, map[string]string{
		"Origin": page, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"})
	if pre.StatusCode/100 != 2 {
		t.Fatalf("preflight: %d, want 2xx", pre.StatusCode)
	}
	if got := pre.Header.Get("Access-Control-Allow-Origin"); got != page {
		t.Errorf("preflight Access-Control-Allow-Origin %q, want %q", got, page)
	}
	if got := pre.Header.Get("Access-Control-Allow-Headers"); !strings.EqualFold(got, "authorization") {
		t.Errorf("preflight Access-Control-Allow-Headers %q, want authorization", got)
	}
	if got := pre.Header.Get("Access-Control-Allow-Methods"); got != "GET" {
		t.Errorf("preflight Access-Control-Allow-Methods %q, want GET", got)
	}

	get := do(t, http.MethodGet, path, map[string]string{"Origin": page, "Authorization": "Bearer " + tok})
	if get.StatusCode != 200 || get.Header.Get("Access-Control-Allow-Origin") != page {
		t.Errorf("GET from %s: %d, Access-Control-Allow-Origin %q", page, get.StatusCode, get.Header.Get("Access-Control-Allow-Origin"))
	}
	// An error answer is readable too, so the page can show why.
	denied := do(t, http.MethodGet, path, map[string]string{"Origin": page})
	if denied.StatusCode != 401 || denied.Header.Get("Access-Control-Allow-Origin") != page {
		t.Errorf("401 from %s: %d, Access-Control-Allow-Origin %q", page, denied.StatusCode, denied.Header.Get("Access-Control-Allow-Origin"))
	}

	const other = "https://evil.example"
	pre = do(t, http.MethodOptions, path, map[string]string{"Origin": other, "Access-Control-Request-Method": "GET"})
	if pre.StatusCode == http.StatusMethodNotAllowed || pre.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("preflight from %s: %d, Access-Control-Allow-Origin %q", other, pre.StatusCode, pre.Header.Get("Access-Control-Allow-Origin"))
	}
	get = do(t, http.MethodGet, path, map[string]string{"Origin": other, "Authorization": "Bearer " + tok})
	if get.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("GET from %s got Access-Control-Allow-Origin %q", other, get.Header.Get("Access-Control-Allow-Origin"))
	}

	// The client module, wrapped as serve wraps it.
	js := e.Server.CORS(web.Handler())
	for _, f := range []string{"/repstream.js", "/repstream.d.ts"} {
		rec := httptestRecorder(js, f, page)
		if rec.Code != 200 || rec.Header().Get("Access-Control-Allow-Origin") != page {
			t.Errorf("%s from %s: %d, Access-Control-Allow-Origin %q", f, page, rec.Code, rec.Header().Get("Access-Control-Allow-Origin"))
		}
		if rec = httptestRecorder(js, f, other); rec.Header().Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("%s from %s: Access-Control-Allow-Origin %q", f, other, rec.Header().Get("Access-Control-Allow-Origin"))
		}
	}
}

// TestCORSAnyOrigin: "*" lets every origin read the API.
func TestCORSAnyOrigin(t *testing.T) {
	e := apitest.Start(t, api.Config{AllowedOrigins: []string{"*"}}, nil)
	get := do(t, http.MethodGet, e.Base+"/healthz", nil)
	if get.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("/healthz has CORS headers: %v", get.Header)
	}
	pre := do(t, http.MethodOptions, e.Base+"/v1/subjects/seller:1", map[string]string{
		"Origin": "https://anywhere.example", "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"})
	if pre.StatusCode/100 != 2 || pre.Header.Get("Access-Control-Allow-Origin") == "" {
		t.Errorf("preflight with *: %d %v", pre.StatusCode, pre.Header)
	}
}

func httptestRecorder(h http.Handler, path, origin string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, "http://127.0.0.1:8080"+path, nil)
	req.Header.Set("Origin", origin)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}
