package demo

import (
	"fmt"
	"strconv"
	"strings"
)

// Mix weighs the kinds of change the Writer makes. Weights are relative
// (they need not add up to 100); the zero value means DefaultMix.
type Mix struct {
	Insert int // a new review (three in four) or user rating
	Update int // an edit that changes a review's stars or a rating's score
	Delete int // a review or rating removed
	Hide   int // moderation hides a published review
}

// DefaultMix is a marketplace's week: mostly new reviews.
var DefaultMix = Mix{Insert: 70, Update: 15, Delete: 5, Hide: 10}

// ParseMix reads the --mix flag: "insert=70,update=15,delete=5,hide=10".
// Kinds left out weigh zero.
func ParseMix(s string) (Mix, error) {
	var m Mix
	seen := map[string]bool{}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		k = strings.ToLower(strings.TrimSpace(k))
		if !ok {
			return Mix{}, fmt.Errorf("mix: %q: want kind=weight, e.g. insert=70", part)
		}
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 0 {
			return Mix{}, fmt.Errorf("mix: %q: the weight must be a whole number, 0 or more", part)
		}
		if seen[k] {
			return Mix{}, fmt.Errorf("mix: %q is given twice", k)
		}
		seen[k] = true
		switch k {
		case "insert":
			m.Insert = n
		case "update":
			m.Update = n
		case "delete":
			m.Delete = n
		case "hide":
			m.Hide = n
		default:
			return Mix{}, fmt.Errorf("mix: unknown kind %q: use insert, update, delete and hide", k)
		}
	}
	if m.total() == 0 {
		return Mix{}, fmt.Errorf("mix: %q: give at least one kind a weight above 0", s)
	}
	return m, nil
}

// String is the form ParseMix reads.
func (m Mix) String() string {
	return fmt.Sprintf("insert=%d,update=%d,delete=%d,hide=%d", m.Insert, m.Update, m.Delete, m.Hide)
}

func (m Mix) total() int { return m.Insert + m.Update + m.Delete + m.Hide }

// kind is one of the Mix's kinds of change.
type kind int

const (
	kindInsert kind = iota
	kindUpdate
	kindDelete
	kindHide
)

// pick maps r in [0, total) to a kind.
func (m Mix) pick(r int) kind {
	switch {
	case r < m.Insert:
		return kindInsert
	case r < m.Insert+m.Update:
		return kindUpdate
	case r < m.Insert+m.Update+m.Delete:
		return kindDelete
	default:
		return kindHide
	}
}
