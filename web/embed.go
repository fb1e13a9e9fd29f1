// Package web holds the dashboard and the browser client (repstream.js),
// embedded in the binary. The files are hand-written ES modules: there is no
// build step, so `go build ./cmd/repstream` from a fresh clone serves them.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"
)

//go:embed index.html app.js board.js repstream.js repstream.d.ts style.css
var embedded embed.FS

// Files is the dashboard's static files: index.html, app.js, board.js,
// style.css, and the client repstream.js with its types repstream.d.ts.
var Files fs.FS = embedded

// contentTypes is fixed here rather than taken from the system's MIME table,
// which maps .ts to video/mp2t on some hosts and may lack .js.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".ts":   "text/plain; charset=utf-8",
	".json": "application/json",
	".svg":  "image/svg+xml",
	".png":  "image/png",
	".ico":  "image/x-icon",
}

// indexCSP keeps the page, which holds a bearer token, to its own scripts.
const indexCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; form-action 'self'"

type asset struct {
	name  string
	body  []byte
	ctype string
	etag  string
}

// Handler serves the dashboard: index.html at "/" (and "/index.html"), the
// other files by name. GET and HEAD only; anything else under it is 404.
// Responses carry a content-hash ETag and Cache-Control: no-cache, so
// browsers revalidate (cheaply, 304) and never run a stale client after an
// upgrade. Mount it at the root of the server's router, after /v1/ and the
// health endpoints.
func Handler() http.Handler { return handler() }

var handler = sync.OnceValue(func() http.Handler {
	assets := map[string]*asset{}
	err := fs.WalkDir(embedded, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := embedded.ReadFile(p)
		if err != nil {
			return err
		}
		ctype, ok := contentTypes[path.Ext(p)]
		if !ok {
			ctype = http.DetectContentType(body)
		}
		sum := sha256.Sum256(body)
		assets["/"+p] = &asset{
			name:  p,
			body:  body,
			ctype: ctype,
			etag:  `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`,
		}
		return nil
	})
	if err != nil {
		panic("web: reading embedded files: " + err.Error()) // cannot happen: the files are compiled in
	}
	assets["/"] = assets["/index.html"]
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if !strings.HasPrefix(p, "/") {
			p = "/" + p
		}
		a, ok := assets[p]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Content-Type", a.ctype)
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", a.etag)
		h.Set("X-Content-Type-Options", "nosniff")
		if a.name == "index.html" {
			h.Set("Content-Security-Policy", indexCSP)
			h.Set("Referrer-Policy", "no-referrer")
		}
		http.ServeContent(w, r, a.name, time.Time{}, bytes.NewReader(a.body))
	})
})
