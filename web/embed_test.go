package web

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, method, target string, hdr map[string]string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func body(t *testing.T, res *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestHandlerServesIndex(t *testing.T) {
	h := Handler()
	for _, p := range []string{"/", "/index.html"} {
		res := get(t, h, http.MethodGet, p, nil)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: status %d", p, res.StatusCode)
		}
		if ct := res.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
			t.Errorf("GET %s: Content-Type %q", p, ct)
		}
		if cc := res.Header.Get("Cache-Control"); cc != "no-cache" {
			t.Errorf("GET %s: Cache-Control %q, want no-cache", p, cc)
		}
		if res.Header.Get("Content-Security-Policy") == "" {
			t.Errorf("GET %s: no Content-Security-Policy", p)
		}
		b := body(t, res)
		for _, want := range []string{`<script type="module" src="app.js">`, `data-testid="status"`, `data-testid="cursor"`, `data-testid="alerts"`, `data-testid="detail"`} {
			if !strings.Contains(b, want) {
				t.Errorf("GET %s: body lacks %s", p, want)
			}
		}
	}
}

func TestHandlerContentTypes(t *testing.T) {
	h := Handler()
	for p, want := range map[string]string{
		"/repstream.js":   "text/javascript; charset=utf-8",
		"/app.js":         "text/javascript; charset=utf-8",
		"/board.js":       "text/javascript; charset=utf-8",
		"/style.css":      "text/css; charset=utf-8",
		"/repstream.d.ts": "text/plain; charset=utf-8",
	} {
		res := get(t, h, http.MethodGet, p, nil)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: status %d", p, res.StatusCode)
		}
		if ct := res.Header.Get("Content-Type"); ct != want {
			t.Errorf("GET %s: Content-Type %q, want %q", p, ct, want)
		}
		if res.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: no nosniff", p)
		}
		if res.Header.Get("ETag") == "" {
			t.Errorf("GET %s: no ETag", p)
		}
	}
	if b := body(t, get(t, h, http.MethodGet, "/repstream.js", nil)); !strings.Contains(b, "export class RepstreamClient") {
		t.Error("repstream.js: not the client")
	}
}

func TestHandlerRevalidatesWithETag(t *testing.T) {
	h := Handler()
	etag := get(t, h, http.MethodGet, "/repstream.js", nil).Header.Get("ETag")
	res := get(t, h, http.MethodGet, "/repstream.js", map[string]string{"If-None-Match": etag})
	if res.StatusCode != http.StatusNotModified {
		t.Fatalf("If-None-Match: status %d, want 304", res.StatusCode)
	}
}

func TestHandlerRefusesTheRest(t *testing.T) {
	h := Handler()
	for _, p := range []string{"/nope.js", "/embed.go", "/test/client.test.mjs", "/../go.mod", "/EXAMPLE.md", "/package.json", "//index.html/"} {
		if res := get(t, h, http.MethodGet, p, nil); res.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404", p, res.StatusCode)
		}
	}
	res := get(t, h, http.MethodPost, "/", nil)
	if res.StatusCode != http.StatusMethodNotAllowed || res.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /: status %d, Allow %q", res.StatusCode, res.Header.Get("Allow"))
	}
	res = get(t, h, http.MethodHead, "/app.js", nil)
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/javascript; charset=utf-8" {
		t.Errorf("HEAD /app.js: status %d, Content-Type %q", res.StatusCode, res.Header.Get("Content-Type"))
	}
}

// Every file the page or its modules refer to must be embedded.
func TestEmbeddedReferencesResolve(t *testing.T) {
	refs := regexp.MustCompile(`(?:src|href)="([^":#]+)"|from '\./([^']+)'`)
	for _, name := range []string{"index.html", "app.js", "board.js", "repstream.js"} {
		b, err := fs.ReadFile(Files, name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, m := range refs.FindAllStringSubmatch(string(b), -1) {
			ref := m[1] + m[2]
			if _, err := fs.Stat(Files, ref); err != nil {
				t.Errorf("%s refers to %s, which is not embedded", name, ref)
			}
		}
	}
}
