package demo_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// readmeCurl is a curl example of the README, against `make run`'s address.
var readmeCurl = regexp.MustCompile(`(?m)^curl -H "Authorization: Bearer \$TOKEN" '(http://127\.0\.0\.1:8080/[^']*)'$`)

// checkReadmeExamples runs the README's curl examples against a running
// `repstream dev` at base, as printed, with its token: each must answer 200
// with a cursor, and that cursor must work as `since`, as the README says.
// The browser example's files must be served where it says.
func checkReadmeExamples(t *testing.T, base, token string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	examples := readmeCurl.FindAllStringSubmatch(string(b), -1)
	if len(examples) < 3 {
		t.Fatalf("found %d curl examples in README.md; the pattern or the README changed", len(examples))
	}
	get := func(u string) (int, map[string]any) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, u, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		var m map[string]any
		json.Unmarshal(body, &m) //nolint:errcheck // a non-JSON body fails below
		return res.StatusCode, m
	}
	for _, ex := range examples {
		u := strings.Replace(ex[1], "http://127.0.0.1:8080", base, 1)
		code, body := get(u)
		if code != http.StatusOK {
			t.Errorf("README example %s: %d %v", ex[1], code, body)
			continue
		}
		lsn, _ := body["lsn"].(string)
		if lsn == "" {
			t.Errorf("README example %s: no lsn in %v", ex[1], body)
			continue
		}
		if strings.Contains(u, "/deltas") {
			pu, _ := url.Parse(u)
			q := pu.Query()
			q.Set("since", lsn)
			pu.RawQuery = q.Encode()
			if code, body := get(pu.String()); code != http.StatusOK {
				t.Errorf("README: since=<the lsn of an answer> (%s): %d %v", pu, code, body)
			}
		}
	}
	for _, f := range []string{"/repstream.js", "/repstream.d.ts"} {
		if !strings.Contains(string(b), "http://127.0.0.1:8080"+f) {
			t.Errorf("README.md does not say the client's %s is served at http://127.0.0.1:8080%s", f, f)
		}
		res, err := http.Get(base + f)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d", f, res.StatusCode)
		}
	}
}

// checkAllowOrigin: dev's --allow-origin reaches api.allowed_origins: a
// preflight from that origin is answered with its grant, and dev says so.
func checkAllowOrigin(t *testing.T, base, origin, devOutput string) {
	t.Helper()
	if !strings.Contains(devOutput, "origins:    "+origin) {
		t.Errorf("dev does not print the allowed origin %s:\n%s", origin, devOutput)
	}
	req, _ := http.NewRequest(http.MethodOptions, base+"/v1/subjects?prefix=seller:", nil)
	req.Header.Set("Origin", origin)
	req.Header.Set("Access-Control-Request-Method", "GET")
	req.Header.Set("Access-Control-Request-Headers", "authorization")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode/100 != 2 || res.Header.Get("Access-Control-Allow-Origin") != origin {
		t.Errorf("preflight from --allow-origin %s: %d, Access-Control-Allow-Origin %q", origin, res.StatusCode, res.Header.Get("Access-Control-Allow-Origin"))
	}
}
