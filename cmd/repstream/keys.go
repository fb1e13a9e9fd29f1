package main

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"

	"github.com/repstream/repstream/stream"
)

// keyTree is every configuration key, read from the yaml tags of Config, so
// a key added to a config struct is known here with nothing else to edit.
type keyTree struct {
	fields map[string]*keyTree // nil for a leaf
	typ    reflect.Type        // a leaf's type
	free   bool                // a map: any key below is the user's (sources[].where)
}

var configKeys = sync.OnceValue(func() *keyTree { return treeOf(reflect.TypeFor[Config]()) })

func treeOf(t reflect.Type) *keyTree {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Map:
		return &keyTree{typ: t, free: true}
	case reflect.Struct:
	default:
		return &keyTree{typ: t}
	}
	n := &keyTree{typ: t, fields: map[string]*keyTree{}}
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		n.fields[name] = treeOf(f.Type)
	}
	return n
}

// lookup returns the node at the dotted key, or the length of the longest
// known prefix (in segments) when it is not a key.
func (n *keyTree) lookup(segs []string) (*keyTree, int) {
	for i, s := range segs {
		switch {
		case n.free:
			return n, len(segs)
		case n.fields == nil:
			return nil, i // below a leaf: "listen.port"
		}
		next, ok := n.fields[s]
		if !ok {
			return nil, i
		}
		n = next
	}
	return n, len(segs)
}

// unknownKey reports a key that names no setting, with the closest known
// one; nil if key is known. prefix is prepended to the names shown
// (sources[0]. for a source's keys).
func unknownKey(root *keyTree, key, prefix string) *stream.ConfigError {
	segs := strings.Split(key, ".")
	_, n := root.lookup(segs)
	if n == len(segs) {
		return nil
	}
	parent, _ := root.lookup(segs[:n])
	bad := prefix + strings.Join(segs[:n+1], ".")
	msg := "unknown key"
	var names []string
	if parent != nil {
		for name := range parent.fields {
			names = append(names, name)
		}
	}
	if best := closest(segs[n], names); best != "" {
		msg += " (did you mean " + prefix + strings.Join(append(slices.Clone(segs[:n]), best), ".") + "?)"
	} else if n > 0 {
		slices.Sort(names)
		msg += "; the keys under " + prefix + strings.Join(segs[:n], ".") + " are " + strings.Join(names, ", ")
	} else {
		msg += "; README.md lists every key"
	}
	return &stream.ConfigError{Key: bad, Msg: msg}
}

// closest is the name nearest to s by edit distance, if near enough to be
// a typo (at most a third of its length, and at least 2 edits allowed).
func closest(s string, names []string) string {
	best, bestD := "", max(2, len(s)/3)+1
	slices.Sort(names)
	for _, n := range names {
		if d := editDistance(s, n); d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

// editDistance is the optimal-string-alignment distance between a and b:
// insertions, deletions, substitutions and swaps of neighbours (the
// commonest typo) cost 1 each.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

// checkKeys reports every key of the loaded configuration that names no
// setting: keys is the flattened key list, sources the raw sources list.
func checkKeys(keys []string, sources any) []error {
	root := configKeys()
	var errs []error
	seen := map[string]bool{}
	for _, k := range keys {
		if e := unknownKey(root, k, ""); e != nil && !seen[e.Key] {
			seen[e.Key] = true
			errs = append(errs, e)
		}
	}
	list, _ := sources.([]any)
	src := root.fields["sources"]
	if src == nil {
		return errs
	}
	elem := treeOf(src.typ.Elem())
	for i, s := range list {
		m, ok := s.(map[string]any)
		if !ok {
			continue // the unmarshal reports it
		}
		for _, k := range sortedKeys(m) {
			if e := unknownKey(elem, k, fmt.Sprintf("sources[%d].", i)); e != nil {
				errs = append(errs, e)
			}
		}
	}
	return errs
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// nonConfigEnv are REPSTREAM_ variables that are not configuration keys:
// tail's token and the tests' settings (new ones belong under
// REPSTREAM_TEST_).
func nonConfigEnv(name string) bool {
	switch name {
	case "REPSTREAM_TOKEN", "REPSTREAM_CHROMIUM", "REPSTREAM_ARTIFACTS", "REPSTREAM_WS_MEM_N",
		"REPSTREAM_PG_VERSIONS_DIR": // where localpg finds pinned Postgres servers (tests, dev)
		return true
	}
	return strings.HasPrefix(name, "REPSTREAM_TEST_")
}

// envKey maps a REPSTREAM_ variable to its key ("REPSTREAM_API__ALLOWED_ORIGINS"
// is api.allowed_origins) and its value to the key's type: a list of
// strings is comma-separated, any other list is YAML ("[{...}, {...}]").
// ok is false for a variable that names no key; err then says so, with the
// closest variable that does (nil for the variables nonConfigEnv lists).
func envKey(name, value string) (key string, v any, ok bool, err error) {
	if nonConfigEnv(name) {
		return "", nil, false, nil
	}
	key = strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(name, "REPSTREAM_")), "__", ".")
	root := configKeys()
	if e := unknownKey(root, key, ""); e != nil {
		msg := "environment variable for no key"
		if _, after, ok := strings.Cut(e.Msg, "(did you mean "); ok {
			msg += " (did you mean " + envName(strings.TrimSuffix(after, "?)")) + "?)"
		}
		return "", nil, false, &stream.ConfigError{Key: name, Msg: msg}
	}
	node, _ := root.lookup(strings.Split(key, "."))
	if node.typ == nil || node.typ.Kind() != reflect.Slice {
		return key, value, true, nil
	}
	if node.typ.Elem().Kind() == reflect.String {
		var list []string
		for _, s := range strings.Split(value, ",") {
			if s = strings.TrimSpace(s); s != "" {
				list = append(list, s)
			}
		}
		return key, list, true, nil
	}
	var list []any
	if err := yaml.Unmarshal([]byte(value), &list); err != nil {
		return "", nil, false, &stream.ConfigError{Key: key, Msg: fmt.Sprintf("environment variable %s: not a YAML list: %v", name, err)}
	}
	return key, list, true, nil
}

// envName is the environment variable that sets key.
func envName(key string) string {
	return "REPSTREAM_" + strings.ToUpper(strings.ReplaceAll(key, ".", "__"))
}
