package demo_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestComposeNodesProfile checks docker-compose.yml's "nodes" profile: a
// replicator, a standby and two serve nodes with roles the binary accepts
// (their flags are checked with every other service by
// TestComposeUsesRealSubcommandsAndFlags), a Redis their configuration
// names, and nginx running deploy/nginx/repstream.conf whose upstreams are
// the serve nodes.
func TestComposeNodesProfile(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Services map[string]struct {
			Image    string   `yaml:"image"`
			Command  any      `yaml:"command"`
			Volumes  []string `yaml:"volumes"`
			Profiles []string `yaml:"profiles"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	roles := map[string]string{"replicator": "replicate", "standby": "replicate", "serve-1": "serve", "serve-2": "serve"}
	for name, role := range roles {
		s, ok := c.Services[name]
		if !ok {
			t.Errorf("no service %s", name)
			continue
		}
		if !slices.Contains(s.Profiles, "nodes") {
			t.Errorf("%s is not in the nodes profile", name)
		}
		cmd := argv(s.Command)
		i := slices.Index(cmd, "--role")
		if i < 0 || i+1 >= len(cmd) || cmd[i+1] != role {
			t.Errorf("%s: command %v, want --role %s", name, s.Command, role)
		}
		var cfg struct {
			Slot string `yaml:"slot"`
			Bus  struct {
				RedisURL string `yaml:"redis_url"`
			} `yaml:"bus"`
		}
		for _, v := range s.Volumes {
			parts := strings.Split(v, ":")
			if len(parts) >= 2 && parts[1] == "/etc/repstream/config.yaml" {
				b, err := os.ReadFile(filepath.Join(repoRoot, parts[0]))
				if err != nil {
					t.Fatal(err)
				}
				if err := yaml.Unmarshal(b, &cfg); err != nil {
					t.Fatalf("%s: %v", parts[0], err)
				}
			}
		}
		if !strings.HasPrefix(cfg.Bus.RedisURL, "redis://redis:") {
			t.Errorf("%s: bus.redis_url %q does not name the redis service", name, cfg.Bus.RedisURL)
		}
		if cfg.Slot == "" || cfg.Slot == "repstream" {
			t.Errorf("%s: slot %q; the nodes need a slot of their own beside the single-node demo's", name, cfg.Slot)
		}
	}
	if r, ok := c.Services["redis"]; !ok || !slices.Contains(r.Profiles, "nodes") || !slices.Contains(argv(r.Command), "--save") {
		t.Errorf("redis service %+v: want it in the nodes profile, without persistence (--save \"\")", r)
	}
	ng, ok := c.Services["nginx"]
	if !ok || !strings.HasPrefix(ng.Image, "nginx") {
		t.Fatalf("no nginx service: %+v", ng)
	}
	if !slices.Contains(ng.Volumes, "./deploy/nginx/repstream.conf:/etc/nginx/conf.d/default.conf:ro") {
		t.Errorf("nginx does not mount deploy/nginx/repstream.conf: %v", ng.Volumes)
	}
	conf, err := os.ReadFile(filepath.Join(repoRoot, "deploy/nginx/repstream.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, up := range []string{"serve-1:8080", "serve-2:8080"} {
		if !strings.Contains(string(conf), "server "+up) {
			t.Errorf("deploy/nginx/repstream.conf has no upstream %s", up)
		}
	}
}

// argv is a compose command written as a list.
func argv(cmd any) []string {
	list, _ := cmd.([]any)
	var out []string
	for _, a := range list {
		s, _ := a.(string)
		out = append(out, s)
	}
	return out
}
