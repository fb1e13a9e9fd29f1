package stream

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Source maps one existing table to subjects, so any application's schema
// works unchanged. It is the `sources` entry of the configuration.
type Source struct {
	// Table is schema-qualified ("public.reviews"); a bare name means public.
	Table string `yaml:"table" json:"table"`
	// Subject is a template over the row's columns, e.g. "seller:{seller_id}".
	Subject string `yaml:"subject" json:"subject"`
	// Score names the numeric column that carries the rating.
	Score string `yaml:"score" json:"score"`
	// Scale is [min, max]; scores outside it contribute nothing. Integer
	// bounds give a star histogram.
	Scale []float64 `yaml:"scale" json:"scale"`
	// Where keeps only rows whose columns equal these values (nil means IS NULL).
	Where map[string]any `yaml:"where" json:"where,omitempty"`
}

// Prior is the Bayesian prior that pulls subjects with few ratings toward
// the mean, so one 5-star review does not top the leaderboard.
type Prior struct {
	Mean   float64 `yaml:"prior_mean" json:"prior_mean"`
	Weight float64 `yaml:"prior_weight" json:"prior_weight"`
}

// Bayes is (weight·mean + sum)/(weight + count); with no data and no weight
// it is 0.
func (p Prior) Bayes(count int64, sum Micro) float64 {
	d := p.Weight + float64(count)
	if d == 0 {
		return 0
	}
	return (p.Weight*p.Mean + sum.Float()) / d
}

// Rule is a validated Source, ready to turn a row's values into a contribution.
type Rule struct {
	ID      int16 // position in the configuration; keys the row shadow
	Schema  string
	Name    string
	Columns []string // the columns the rule reads, sorted; vals are in this order
	parts   []tmplPart
	score   int
	where   []cond
	min     Micro
	max     Micro
	buckets int // histogram length; 0 when the scale is not integral
	lo      int64
}

type tmplPart struct {
	lit string
	col int // -1 for a literal
}

type cond struct {
	col     int
	lit     string // as configured
	val     string // as the column prints it (see ResolveWhere); lit until resolved
	null    bool
	decimal bool // a numeric column: compare without trailing fractional zeros
}

// MaxSubjectRatings is how many ratings a subject can hold at the far end of
// the scales that feed it with its sum still exact: sums are int64
// millionths, so CompileSources refuses scales too wide for it.
const MaxSubjectRatings = 1 << 32

// ConfigError names the configuration key at fault and how to fix it.
type ConfigError struct {
	Key string
	Msg string
}

func (e *ConfigError) Error() string { return e.Key + ": " + e.Msg }

// CompileSources validates sources and compiles them into rules.
func CompileSources(srcs []Source) ([]*Rule, error) {
	if len(srcs) == 0 {
		return nil, &ConfigError{"sources", "no sources configured; add at least one {table, subject, score, scale}"}
	}
	seen := map[string]bool{}
	rules := make([]*Rule, 0, len(srcs))
	for i, s := range srcs {
		key := fmt.Sprintf("sources[%d]", i)
		r, err := compile(key, s)
		if err != nil {
			return nil, err
		}
		if seen[r.Table()] {
			return nil, &ConfigError{key + ".table", fmt.Sprintf("%s is configured twice; merge the entries", r.Table())}
		}
		seen[r.Table()] = true
		r.ID = int16(i)
		rules = append(rules, r)
	}
	if err := checkSumRange(rules); err != nil {
		return nil, err
	}
	return rules, nil
}

// checkSumRange refuses scales that could overflow a subject's sum within
// MaxSubjectRatings ratings. Sources add up when their subjects can meet:
// when one template's leading text is a prefix of the other's.
func checkSumRange(rules []*Rule) error {
	const limit = Micro(math.MaxInt64 / MaxSubjectRatings)
	for i, r := range rules {
		total := Micro(0)
		var with []string
		for j, o := range rules {
			if !strings.HasPrefix(r.lead(), o.lead()) && !strings.HasPrefix(o.lead(), r.lead()) {
				continue
			}
			total += o.reach()
			if j != i {
				with = append(with, fmt.Sprintf("sources[%d]", j))
			}
		}
		if total <= limit {
			continue
		}
		key := fmt.Sprintf("sources[%d].scale", i)
		if len(with) == 0 {
			return &ConfigError{key, fmt.Sprintf("a score as far from 0 as %s is too large: a subject's sum is exact (in 64-bit millionths) for %d ratings only while scores stay within ±%s; narrow the scale, or score a column in larger units (e.g. a generated column rating / 100)",
				r.reach(), MaxSubjectRatings, limit)}
		}
		return &ConfigError{key, fmt.Sprintf("this source and %s can feed the same subjects (their subject templates start alike), and their scores as far from 0 as they go add up to %s: a subject's sum is exact (in 64-bit millionths) for %d ratings only up to ±%s; give the templates distinct prefixes (e.g. \"seller:{id}\" and \"buyer:{id}\") or narrow the scales",
			strings.Join(with, ", "), total, MaxSubjectRatings, limit)}
	}
	return nil
}

// lead is the subject template's text before its first column: subjects of
// two rules can only be equal when one lead is a prefix of the other.
func (r *Rule) lead() string {
	if len(r.parts) > 0 && r.parts[0].col < 0 {
		return r.parts[0].lit
	}
	return ""
}

// reach is the largest |score| the rule counts.
func (r *Rule) reach() Micro {
	return max(r.max, -r.min, r.min, -r.max)
}

func compile(key string, s Source) (*Rule, error) {
	r := &Rule{}
	t := strings.TrimSpace(s.Table)
	if t == "" {
		return nil, &ConfigError{key + ".table", "missing; name the table, e.g. public.reviews"}
	}
	if schema, name, ok := strings.Cut(t, "."); ok {
		r.Schema, r.Name = unquote(schema), unquote(name)
	} else {
		r.Schema, r.Name = "public", unquote(t)
	}
	if r.Schema == "" || r.Name == "" || strings.Contains(r.Name, ".") {
		return nil, &ConfigError{key + ".table", fmt.Sprintf("%q is not schema.table", s.Table)}
	}
	cols := map[string]bool{}
	if s.Score == "" {
		return nil, &ConfigError{key + ".score", "missing; name the column holding the rating"}
	}
	cols[s.Score] = true
	tparts, tcols, err := parseTemplate(s.Subject)
	if err != nil {
		return nil, &ConfigError{key + ".subject", err.Error()}
	}
	for _, c := range tcols {
		cols[c] = true
	}
	for c := range s.Where {
		cols[c] = true
	}
	for c := range cols {
		r.Columns = append(r.Columns, c)
	}
	sort.Strings(r.Columns)
	idx := func(c string) int { return sort.SearchStrings(r.Columns, c) }
	r.score = idx(s.Score)
	for _, p := range tparts {
		if p.col >= 0 {
			p.col = idx(tcols[p.col])
		}
		r.parts = append(r.parts, p)
	}
	wkeys := make([]string, 0, len(s.Where))
	for c := range s.Where {
		wkeys = append(wkeys, c)
	}
	sort.Strings(wkeys)
	for _, c := range wkeys {
		v, null, err := whereText(s.Where[c])
		if err != nil {
			return nil, &ConfigError{key + ".where." + c, err.Error()}
		}
		r.where = append(r.where, cond{col: idx(c), lit: v, val: v, null: null})
	}
	if len(s.Scale) != 2 || !(s.Scale[0] < s.Scale[1]) {
		return nil, &ConfigError{key + ".scale", fmt.Sprintf("want [min, max] with min < max, got %v", s.Scale)}
	}
	for _, b := range s.Scale {
		if math.IsNaN(b) || math.IsInf(b, 0) || math.Abs(b) > 1e9 {
			return nil, &ConfigError{key + ".scale", fmt.Sprintf("bound %v out of range", b)}
		}
	}
	r.min, r.max = Micro(math.Round(s.Scale[0]*MicroUnit)), Micro(math.Round(s.Scale[1]*MicroUnit))
	if s.Scale[0] == math.Trunc(s.Scale[0]) && s.Scale[1] == math.Trunc(s.Scale[1]) && s.Scale[1]-s.Scale[0] <= 100 {
		r.lo = int64(s.Scale[0])
		r.buckets = int(s.Scale[1]-s.Scale[0]) + 1
	}
	return r, nil
}

func unquote(s string) string {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return strings.ReplaceAll(s[1:len(s)-1], `""`, `"`)
	}
	return strings.ToLower(s) // unquoted identifiers fold to lower case, as in SQL
}

func parseTemplate(t string) ([]tmplPart, []string, error) {
	if t == "" {
		return nil, nil, fmt.Errorf(`missing; write a template such as "seller:{seller_id}"`)
	}
	var parts []tmplPart
	var cols []string
	for rest := t; rest != ""; {
		open := strings.IndexByte(rest, '{')
		if open < 0 {
			if strings.IndexByte(rest, '}') >= 0 {
				return nil, nil, fmt.Errorf("%q has a '}' without '{'", t)
			}
			parts = append(parts, tmplPart{lit: rest, col: -1})
			break
		}
		if open > 0 {
			if strings.IndexByte(rest[:open], '}') >= 0 {
				return nil, nil, fmt.Errorf("%q has a '}' without '{'", t)
			}
			parts = append(parts, tmplPart{lit: rest[:open], col: -1})
		}
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			return nil, nil, fmt.Errorf("%q has an unclosed '{'", t)
		}
		name := strings.TrimSpace(rest[open+1 : open+end])
		if name == "" || strings.ContainsAny(name, "{ ") {
			return nil, nil, fmt.Errorf("%q: %q is not a column name", t, name)
		}
		parts = append(parts, tmplPart{col: len(cols)})
		cols = append(cols, name)
		rest = rest[open+end+1:]
	}
	if len(cols) == 0 {
		return nil, nil, fmt.Errorf("%q names no column; every row would be one subject. Use {column}", t)
	}
	return parts, cols, nil
}

// whereText renders a YAML scalar the way Postgres prints the column value.
func whereText(v any) (string, bool, error) {
	switch x := v.(type) {
	case nil:
		return "", true, nil
	case string:
		return x, false, nil
	case bool:
		if x {
			return "t", false, nil
		}
		return "f", false, nil
	case int:
		return strconv.Itoa(x), false, nil
	case int64:
		return strconv.FormatInt(x, 10), false, nil
	case uint64:
		return strconv.FormatUint(x, 10), false, nil
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), false, nil
	default:
		return "", false, fmt.Errorf("value %v (%T) is not a scalar; use a string, number, boolean or null", v, v)
	}
}

// Table is the rule's table as schema.name.
func (r *Rule) Table() string { return r.Schema + "." + r.Name }

// QuotedTable is the table as a safely quoted SQL identifier.
func (r *Rule) QuotedTable() string { return quoteIdent(r.Schema) + "." + quoteIdent(r.Name) }

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// QuoteIdent quotes an SQL identifier.
func QuoteIdent(s string) string { return quoteIdent(s) }

// Buckets is the histogram length for this rule's scale (0: no histogram).
func (r *Rule) Buckets() int { return r.buckets }

// Contribution is what one row adds to one subject.
type Contribution struct {
	Subject string
	Score   Micro
	Bucket  int // -1 when the rule has no histogram
}

// Contribute evaluates a row's values (in r.Columns order, nil for NULL).
// ok is false when the row contributes nothing: filtered out, a NULL in the
// subject or score, or a score that is not a number inside the scale.
func (r *Rule) Contribute(vals []*string) (c Contribution, ok bool) {
	if len(vals) != len(r.Columns) {
		return c, false
	}
	for _, w := range r.where {
		v := vals[w.col]
		if w.null {
			if v != nil {
				return c, false
			}
			continue
		}
		if v == nil {
			return c, false
		}
		if got := *v; got != w.val && (!w.decimal || trimDecimal(got) != w.val) {
			return c, false
		}
	}
	sv := vals[r.score]
	if sv == nil {
		return c, false
	}
	score, err := ParseMicro(*sv)
	if err != nil || score < r.min || score > r.max {
		return c, false
	}
	var b strings.Builder
	for _, p := range r.parts {
		if p.col < 0 {
			b.WriteString(p.lit)
			continue
		}
		v := vals[p.col]
		if v == nil {
			return c, false
		}
		b.WriteString(*v)
	}
	c = Contribution{Subject: b.String(), Score: score, Bucket: -1}
	if r.buckets > 0 {
		// Round half up to the nearest star.
		star := (int64(score) + MicroUnit/2)
		if star < 0 {
			star -= MicroUnit - 1
		}
		c.Bucket = int(star/MicroUnit - r.lo)
		if c.Bucket < 0 || c.Bucket >= r.buckets {
			c.Bucket = -1
		}
	}
	return c, true
}

// valueFormat versions how source values become text and scores: state
// derived under another format cannot be continued exactly (a row shadow
// loaded through ::text casts holds keys the stream never sends), so a new
// one reloads. 2: output functions under cdc's fixed settings.
const valueFormat = 2

// Fingerprint identifies a configuration of sources: when it changes, the
// derived state no longer matches and must be reloaded under a new epoch.
func Fingerprint(rules []*Rule, p Prior) string {
	h := sha256.New()
	fmt.Fprintf(h, "values %d\n", valueFormat)
	for _, r := range rules {
		fmt.Fprintf(h, "%d|%s|%q|", r.ID, r.Table(), r.Columns)
		for _, p := range r.parts {
			fmt.Fprintf(h, "%q,%d;", p.lit, p.col)
		}
		fmt.Fprintf(h, "|%d|%v|%d|%d|%d|%d\n", r.score, r.where, r.min, r.max, r.buckets, r.lo)
	}
	fmt.Fprintf(h, "prior %v %v", p.Mean, p.Weight)
	return hex.EncodeToString(h.Sum(nil))[:16]
}
