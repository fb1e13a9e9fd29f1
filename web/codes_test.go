package web

import (
	"io/fs"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/repstream/repstream/api/wire"
)

// union reads the string literals of a TypeScript union type alias.
func union(t *testing.T, src, name string) []string {
	t.Helper()
	m := regexp.MustCompile(`(?s)export type ` + name + ` =(.*?);`).FindStringSubmatch(src)
	if m == nil {
		t.Fatalf("repstream.d.ts has no type %s", name)
	}
	var out []string
	for _, q := range regexp.MustCompile(`'([a-z_]+)'`).FindAllStringSubmatch(m[1], -1) {
		out = append(out, q[1])
	}
	slices.Sort(out)
	return out
}

// TestErrorCodesAgree: the error codes of the server's `error` message are
// the same in api/PROTOCOL.md, api/wire and repstream.d.ts, and every code
// repstream.js reports itself is declared in the d.ts.
func TestErrorCodesAgree(t *testing.T) {
	proto, err := os.ReadFile("../api/PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)the connection stays\\. Codes: (.*?)\\.\n").FindSubmatch(proto)
	if m == nil {
		t.Fatal("api/PROTOCOL.md no longer lists the error message's codes after \"the connection stays. Codes:\"")
	}
	var documented []string
	for _, q := range regexp.MustCompile("`([a-z_]+)`").FindAllSubmatch(m[1], -1) {
		documented = append(documented, string(q[1]))
	}
	slices.Sort(documented)

	dtsb, err := fs.ReadFile(Files, "repstream.d.ts")
	if err != nil {
		t.Fatal(err)
	}
	dts := string(dtsb)
	declared := union(t, dts, "ServerErrorCode")
	if !slices.Equal(declared, documented) {
		t.Errorf("ServerErrorCode in repstream.d.ts is %v; api/PROTOCOL.md lists %v", declared, documented)
	}
	for _, c := range documented {
		switch c {
		case wire.CodeBadRequest, wire.CodeUnauthenticated, wire.CodeForbidden, wire.CodeBadCursor,
			wire.CodeTooManySubscriptions, wire.CodeInternal:
		default:
			t.Errorf("api/PROTOCOL.md lists %q, which api/wire does not define", c)
		}
	}

	jsb, err := fs.ReadFile(Files, "repstream.js")
	if err != nil {
		t.Fatal(err)
	}
	js := string(jsb)
	client := union(t, dts, "ClientErrorCode")
	emitted := map[string]bool{}
	for _, q := range regexp.MustCompile(`_emitError\(\{ code: ([^,]+),`).FindAllStringSubmatch(js, -1) {
		for _, lit := range regexp.MustCompile(`'([a-z_]+)'`).FindAllStringSubmatch(q[1], -1) {
			emitted[lit[1]] = true
		}
	}
	if len(emitted) == 0 {
		t.Fatal("found no _emitError({ code: ... }) in repstream.js; update this test")
	}
	for c := range emitted {
		if !slices.Contains(client, c) {
			t.Errorf("repstream.js reports code %q, which ClientErrorCode in repstream.d.ts lacks", c)
		}
	}
	for _, c := range client {
		if !emitted[c] {
			t.Errorf("ClientErrorCode declares %q, which repstream.js never reports", c)
		}
		if !strings.Contains(js, "'"+c+"'") {
			t.Errorf("repstream.js's doc comment does not mention %q", c)
		}
	}
}

// TestExamplesCheckTheTokenFetch: the examples' getToken checks the token
// endpoint's answer and throws on failure, so the client reports it
// (onError 'token') instead of sending an error page as a token.
func TestExamplesCheckTheTokenFetch(t *testing.T) {
	getToken := regexp.MustCompile(`(?s)getToken: async \(\) => (\{.*?\n  \}|[^\n]*)`)
	for _, f := range []string{"../README.md", "EXAMPLE.md"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		found := getToken.FindAllString(string(b), -1)
		if len(found) == 0 {
			t.Errorf("%s: no getToken example found; update this test", f)
		}
		for _, g := range found {
			if strings.Contains(g, "fetch(") && !(strings.Contains(g, "res.ok") && strings.Contains(g, "throw")) {
				t.Errorf("%s: getToken uses the fetch's body without checking res.ok:\n%s", f, g)
			}
		}
	}
}
