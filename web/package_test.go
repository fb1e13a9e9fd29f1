package web

import (
	"encoding/json"
	"os"
	"os/exec"
	"slices"
	"testing"
)

// TestNpmPack: web/ is an npm package an application can pin instead of
// the server's copy: `npm pack` builds it with the client, its types and
// package.json, and nothing else (not the dashboard, nor the tests), and
// package.json's entry points name files the package holds.
func TestNpmPack(t *testing.T) {
	npm, err := exec.LookPath("npm")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("npm is not installed; .ci/run installs it (apt-get install -y npm)")
		}
		t.Skip("npm is not installed")
	}
	cmd := exec.Command(npm, "pack", "--dry-run", "--json", "--ignore-scripts")
	cmd.Env = append(os.Environ(), "npm_config_cache="+t.TempDir(), "npm_config_update_notifier=false")
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("npm pack --dry-run: %v\n%s", err, stderr)
	}
	var packs []struct {
		Name    string `json:"name"`
		Version string `json:"version"`
		Files   []struct {
			Path string `json:"path"`
		} `json:"files"`
	}
	if err := json.Unmarshal(out, &packs); err != nil || len(packs) != 1 {
		t.Fatalf("npm pack --json printed %s (%v)", out, err)
	}
	p := packs[0]
	var files []string
	for _, f := range p.Files {
		files = append(files, f.Path)
	}
	slices.Sort(files)
	if want := []string{"package.json", "repstream.d.ts", "repstream.js"}; !slices.Equal(files, want) {
		t.Errorf("the package holds %v, want %v", files, want)
	}
	if p.Name == "" || p.Version == "" {
		t.Errorf("package name %q version %q", p.Name, p.Version)
	}

	b, err := os.ReadFile("package.json")
	if err != nil {
		t.Fatal(err)
	}
	var pkg struct {
		Main    string `json:"main"`
		Types   string `json:"types"`
		Type    string `json:"type"`
		Exports map[string]struct {
			Types   string `json:"types"`
			Default string `json:"default"`
		} `json:"exports"`
	}
	if err := json.Unmarshal(b, &pkg); err != nil {
		t.Fatal(err)
	}
	if pkg.Type != "module" {
		t.Errorf(`package.json "type" is %q; repstream.js is an ES module`, pkg.Type)
	}
	in := func(p string) bool { return slices.Contains(files, trimDot(p)) }
	root := pkg.Exports["."]
	for what, p := range map[string]string{"main": pkg.Main, "types": pkg.Types, `exports["."].types`: root.Types, `exports["."].default`: root.Default} {
		if !in(p) {
			t.Errorf("package.json %s is %q, not a file of the package", what, p)
		}
	}
}

func trimDot(p string) string {
	if len(p) > 2 && p[:2] == "./" {
		return p[2:]
	}
	return p
}
