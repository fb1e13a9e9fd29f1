package stream

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
)

// LSN is a Postgres log sequence number; the resume cursor of the protocol.
// Its text form is pg_lsn's upper-case "X/Y".
type LSN = pglogrepl.LSN

// ParseLSN reads a cursor in pg_lsn text form, exactly
// ^[0-9A-F]{1,8}/[0-9A-F]{1,8}$, as Postgres prints it and the JS client
// reads it: upper-case hex, no spaces, no trailing bytes, no half wider
// than 32 bits.
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("cursor %q: want pg_lsn form X/Y in hex", s)
	}
	x, okx := parseHex32(hi)
	y, oky := parseHex32(lo)
	if !okx || !oky {
		return 0, fmt.Errorf("cursor %q: want pg_lsn form X/Y, 1 to 8 hex digits each", s)
	}
	return LSN(uint64(x)<<32 | uint64(y)), nil
}

// parseHex32 reads 1 to 8 hex digits.
func parseHex32(s string) (uint32, bool) {
	if len(s) < 1 || len(s) > 8 {
		return 0, false
	}
	var v uint32
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			v = v<<4 | uint32(c-'0')
		case c >= 'A' && c <= 'F':
			v = v<<4 | uint32(c-'A'+10)
		default:
			return 0, false
		}
	}
	return v, true
}

// Micro is a score or a sum of scores in millionths, so sums stay exact
// where float64 would drift after millions of additions and removals.
type Micro int64

// MicroUnit is the number of Micro in one score point.
const MicroUnit = 1_000_000

// Float returns the value in score points.
func (m Micro) Float() float64 { return float64(m) / MicroUnit }

// String formats the value in score points without float rounding.
func (m Micro) String() string { return string(m.appendText(nil)) }

func (m Micro) appendText(b []byte) []byte {
	u := uint64(m)
	if m < 0 {
		b = append(b, '-')
		u = -u
	}
	b = strconv.AppendUint(b, u/MicroUnit, 10)
	if frac := u % MicroUnit; frac != 0 {
		var digits [6]byte
		for i := 5; i >= 0; i-- {
			digits[i] = byte('0' + frac%10)
			frac /= 10
		}
		n := 6
		for digits[n-1] == '0' {
			n--
		}
		b = append(b, '.')
		b = append(b, digits[:n]...)
	}
	return b
}

// MarshalJSON writes the value as a JSON number in score points.
func (m Micro) MarshalJSON() ([]byte, error) { return m.appendText(nil), nil }

// UnmarshalJSON reads a JSON number in score points.
func (m *Micro) UnmarshalJSON(b []byte) error {
	v, err := ParseMicro(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// ParseMicro parses a decimal in Postgres text form (as numeric, int or float
// columns print) into Micro, rounding the printed decimal half away from zero
// past six decimals: exactly SQL's round(score::text::numeric, 6). An
// exponent (float4 and float8 print one for tiny values) moves the decimal
// point in the text; no binary float ever rounds the value.
func ParseMicro(s string) (Micro, error) {
	orig := s
	s = strings.TrimSpace(s)
	neg := false
	if s != "" {
		switch s[0] {
		case '-':
			neg, s = true, s[1:]
		case '+':
			s = s[1:]
		}
	}
	mant, exp := s, 0
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		e, err := strconv.Atoi(s[i+1:])
		if err != nil {
			return 0, fmt.Errorf("score %q: not a number", orig)
		}
		mant, exp = s[:i], e
	}
	intPart, frac, _ := strings.Cut(mant, ".")
	if intPart == "" && frac == "" {
		return 0, fmt.Errorf("score %q: not a number", orig)
	}
	if !allDigits(intPart) || !allDigits(frac) {
		return 0, fmt.Errorf("score %q: not a number", orig)
	}
	if exp != 0 {
		digits := strings.TrimLeft(intPart, "0")
		point := len(digits) + exp
		digits += frac
		switch {
		case point > 20:
			return 0, fmt.Errorf("score %q: out of range", orig)
		case point < -7: // nothing reaches the seventh decimal
			intPart, frac = "", ""
		case point <= 0:
			intPart, frac = "", strings.Repeat("0", -point)+digits
		case point >= len(digits):
			intPart, frac = digits+strings.Repeat("0", point-len(digits)), ""
		default:
			intPart, frac = digits[:point], digits[point:]
		}
	}
	var v uint64
	for _, c := range intPart {
		v = v*10 + uint64(c-'0')
		if v > 9_000_000_000_000 {
			return 0, fmt.Errorf("score %q: out of range", orig)
		}
	}
	v *= MicroUnit
	var scale uint64 = MicroUnit / 10
	for i, c := range frac {
		if i == 6 {
			if c >= '5' {
				v++
			}
			break
		}
		v += uint64(c-'0') * scale
		scale /= 10
	}
	if neg {
		return -Micro(v), nil
	}
	return Micro(v), nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// State is one subject's reputation after the deltas up to LSN.
type State struct {
	Subject   string    `json:"subject"`
	Count     int64     `json:"count"`
	Sum       Micro     `json:"sum"`
	Mean      float64   `json:"mean"`
	Bayes     float64   `json:"bayes"`
	Hist      []int64   `json:"hist,omitempty"`
	Version   int64     `json:"version"`
	LSN       LSN       `json:"-"`
	UpdatedAt time.Time `json:"-"`
}

// stateJSON is State's wire form: LSN and time in PROTOCOL.md's text forms.
type stateJSON struct {
	Subject   string  `json:"subject"`
	Count     int64   `json:"count"`
	Sum       Micro   `json:"sum"`
	Mean      float64 `json:"mean"`
	Bayes     float64 `json:"bayes"`
	Hist      []int64 `json:"hist,omitempty"`
	Version   int64   `json:"version"`
	LSN       string  `json:"lsn"`
	UpdatedAt string  `json:"updated_at"`
}

// MarshalJSON writes the state as PROTOCOL.md describes it.
func (s State) MarshalJSON() ([]byte, error) {
	return json.Marshal(stateJSON{
		Subject: s.Subject, Count: s.Count, Sum: s.Sum, Mean: s.Mean, Bayes: s.Bayes,
		Hist: s.Hist, Version: s.Version, LSN: s.LSN.String(),
		UpdatedAt: s.UpdatedAt.UTC().Format("2006-01-02T15:04:05.000Z07:00"),
	})
}

// UnmarshalJSON reads the wire form, so Go clients share this type.
func (s *State) UnmarshalJSON(b []byte) error {
	var w stateJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	lsn, err := ParseLSN(w.LSN)
	if err != nil {
		return err
	}
	var at time.Time
	if w.UpdatedAt != "" {
		if at, err = time.Parse(time.RFC3339Nano, w.UpdatedAt); err != nil {
			return fmt.Errorf("updated_at: %w", err)
		}
	}
	*s = State{Subject: w.Subject, Count: w.Count, Sum: w.Sum, Mean: w.Mean, Bayes: w.Bayes,
		Hist: w.Hist, Version: w.Version, LSN: lsn, UpdatedAt: at}
	return nil
}

// Change is what one delta did to a subject: differences of the state's figures.
type Change struct {
	Count int64   `json:"count"`
	Sum   Micro   `json:"sum"`
	Mean  float64 `json:"mean"`
	Bayes float64 `json:"bayes"`
}

// Delta is the unit of the stream: one source transaction's effect on one subject.
// (Subject, LSN) identifies it; Version counts a subject's deltas without gaps.
type Delta struct {
	Subject   string
	LSN       LSN
	Version   int64
	After     State
	Change    Change
	Coalesced int // >1 when a throttled subscription folded that many deltas into this one
}

type deltaJSON struct {
	Type      string `json:"type"`
	Subject   string `json:"subject"`
	LSN       string `json:"lsn"`
	Version   int64  `json:"version"`
	After     State  `json:"after"`
	Change    Change `json:"change"`
	Coalesced int    `json:"coalesced"`
}

// MarshalJSON writes the delta as PROTOCOL.md's "delta" message.
func (d Delta) MarshalJSON() ([]byte, error) {
	if b, ok := d.AppendJSON(nil); ok {
		return b, nil
	}
	return d.marshalSlow()
}

// marshalSlow is MarshalJSON through encoding/json: the reference
// AppendJSON is tested against, and the error for a non-finite figure.
func (d Delta) marshalSlow() ([]byte, error) {
	c := d.Coalesced
	if c < 1 {
		c = 1
	}
	return json.Marshal(deltaJSON{Type: "delta", Subject: d.Subject, LSN: d.LSN.String(),
		Version: d.Version, After: d.After, Change: d.Change, Coalesced: c})
}

// UnmarshalJSON reads a "delta" message.
func (d *Delta) UnmarshalJSON(b []byte) error {
	var w deltaJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	lsn, err := ParseLSN(w.LSN)
	if err != nil {
		return err
	}
	*d = Delta{Subject: w.Subject, LSN: lsn, Version: w.Version, After: w.After, Change: w.Change, Coalesced: w.Coalesced}
	return nil
}

// Txn is every delta one source transaction produced, in subject order; the
// unit that must never be split across frames.
type Txn struct {
	LSN      LSN // commit LSN of the source transaction
	CommitAt time.Time
	Deltas   []Delta
}
