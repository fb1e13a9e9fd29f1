//go:build e2e

package e2e_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"go.yaml.in/yaml/v3"
)

// allowOrigins sets api.allowed_origins in the env's configuration.
func (e *env) allowOrigins(origins ...string) {
	e.t.Helper()
	b, err := os.ReadFile(e.config)
	if err != nil {
		e.t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		e.t.Fatal(err)
	}
	cfg["api"] = map[string]any{"allowed_origins": origins}
	if b, err = yaml.Marshal(cfg); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(e.config, b, 0o600); err != nil {
		e.t.Fatal(err)
	}
}

// widgetPage is an application's page on its own origin that adds a live
// widget as the README's browser section shows: it imports the client from
// repstream, connects, subscribes, and also calls the HTTP API.
const widgetPage = `<!doctype html>
<meta charset="utf-8">
<title>shop</title>
<p id="out">loading…</p>
<script type="module">
window.result = { statuses: [], errors: [], snapshot: -1, deltas: 0 };
const base = %[1]q, token = %[2]q;
try {
  const { RepstreamClient } = await import(base + '/repstream.js');
  const client = new RepstreamClient({
    url: base.replace('http', 'ws') + '/v1/stream',
    getToken: async () => token,
    onStatus: (s) => result.statuses.push(s),
    onError: (e) => result.errors.push(e.code + ': ' + e.message),
  });
  client.subscribe({
    prefix: 'seller:',
    onSnapshot: (states) => { result.snapshot = states.size; document.getElementById('out').textContent = states.size + ' sellers'; },
    onDelta: () => { result.deltas++; },
  });
  client.connect();
} catch (e) {
  result.importError = String(e);
}
try {
  const res = await fetch(base + '/v1/subjects?prefix=seller:&limit=3', { headers: { Authorization: 'Bearer ' + token } });
  result.http = res.status;
  result.items = (await res.json()).items.length;
} catch (e) {
  result.fetchError = String(e);
}
</script>
`

type widgetResult struct {
	Statuses    []string `json:"statuses"`
	Errors      []string `json:"errors"`
	Snapshot    int      `json:"snapshot"`
	HTTP        int      `json:"http"`
	Items       int      `json:"items"`
	ImportError string   `json:"importError"`
	FetchError  string   `json:"fetchError"`
}

func servePage(t *testing.T, body string) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, body)
	}))
	t.Cleanup(s.Close)
	return s
}

// TestWidgetOnAnotherOrigin: a page served from a second origin (another
// port) listed in api.allowed_origins imports /repstream.js across
// origins, goes live with a snapshot, and reads the HTTP API; a page on an
// origin not listed can do neither.
func TestWidgetOnAnotherOrigin(t *testing.T) {
	e := newEnv(t)
	base := "http://" + e.addr
	page := servePage(t, fmt.Sprintf(widgetPage, base, e.token))
	stranger := servePage(t, fmt.Sprintf(widgetPage, base, e.token))
	if page.URL == base || stranger.URL == base {
		t.Fatal("the pages must be on origins of their own")
	}
	e.allowOrigins(page.URL)
	e.start()

	b := newBrowser(t)
	b.screenshotOnFailure()
	b.do(chromedp.Navigate(page.URL + "/"))
	var r widgetResult
	waitFor(t, 30*time.Second, func() (bool, string) {
		r = mustEval[widgetResult](b, `window.result || {}`)
		live := len(r.Statuses) > 0 && r.Statuses[len(r.Statuses)-1] == "live"
		return live && r.Snapshot > 0 && r.HTTP != 0, fmt.Sprintf("%+v", r)
	}, "the widget on "+page.URL+" to go live with a snapshot and an HTTP answer")
	if r.HTTP != 200 || r.Items != 3 || r.ImportError != "" || r.FetchError != "" || len(r.Errors) > 0 {
		t.Fatalf("widget on an allowed origin: %+v", r)
	}
	if got := mustEval[string](b, `document.getElementById('out').textContent`); !strings.HasSuffix(got, " sellers") {
		t.Errorf("the page shows %q", got)
	}

	// The same page on an origin that is not listed: the browser refuses
	// the module and the API's answer.
	b2 := newBrowser(t)
	b2.do(chromedp.Navigate(stranger.URL + "/"))
	waitFor(t, 30*time.Second, func() (bool, string) {
		r = mustEval[widgetResult](b2, `window.result || {}`)
		return r.ImportError != "" && r.FetchError != "", fmt.Sprintf("%+v", r)
	}, "the page on an origin not allowed to fail to import and to fetch")
	if r.Snapshot > 0 || r.HTTP != 0 {
		t.Fatalf("a page on an origin not allowed used repstream: %+v", r)
	}
}
