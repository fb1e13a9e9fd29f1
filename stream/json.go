package stream

import (
	"encoding/json"
	"math"
	"strconv"
)

// The wire form of a delta is encoded once per delta for every subscriber,
// so it is appended by hand: the same bytes encoding/json writes through
// MarshalJSON, without reflection, nested marshalers or re-compaction.

// AppendJSON appends the delta's "delta" message to b. It reports false, and
// appends nothing, if a figure is NaN or infinite (JSON has no such numbers).
func (d *Delta) AppendJSON(b []byte) ([]byte, bool) {
	if !finite(d.After.Mean, d.After.Bayes, d.Change.Mean, d.Change.Bayes) {
		return b, false
	}
	c := d.Coalesced
	if c < 1 {
		c = 1
	}
	b = append(b, `{"type":"delta","subject":`...)
	b = appendJSONString(b, d.Subject)
	b = append(b, `,"lsn":"`...)
	b = appendLSN(b, d.LSN)
	b = append(b, `","version":`...)
	b = strconv.AppendInt(b, d.Version, 10)
	b = append(b, `,"after":`...)
	b = d.After.appendJSON(b)
	b = append(b, `,"change":{"count":`...)
	b = strconv.AppendInt(b, d.Change.Count, 10)
	b = append(b, `,"sum":`...)
	b = d.Change.Sum.appendText(b)
	b = append(b, `,"mean":`...)
	b = appendJSONFloat(b, d.Change.Mean)
	b = append(b, `,"bayes":`...)
	b = appendJSONFloat(b, d.Change.Bayes)
	b = append(b, `},"coalesced":`...)
	b = strconv.AppendInt(b, int64(c), 10)
	return append(b, '}'), true
}

func (s *State) appendJSON(b []byte) []byte {
	b = append(b, `{"subject":`...)
	b = appendJSONString(b, s.Subject)
	b = append(b, `,"count":`...)
	b = strconv.AppendInt(b, s.Count, 10)
	b = append(b, `,"sum":`...)
	b = s.Sum.appendText(b)
	b = append(b, `,"mean":`...)
	b = appendJSONFloat(b, s.Mean)
	b = append(b, `,"bayes":`...)
	b = appendJSONFloat(b, s.Bayes)
	if len(s.Hist) > 0 {
		b = append(b, `,"hist":[`...)
		for i, h := range s.Hist {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, h, 10)
		}
		b = append(b, ']')
	}
	b = append(b, `,"version":`...)
	b = strconv.AppendInt(b, s.Version, 10)
	b = append(b, `,"lsn":"`...)
	b = appendLSN(b, s.LSN)
	b = append(b, `","updated_at":"`...)
	b = s.UpdatedAt.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
	return append(b, `"}`...)
}

func finite(fs ...float64) bool {
	for _, f := range fs {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return false
		}
	}
	return true
}

// appendJSONFloat formats f as encoding/json does.
func appendJSONFloat(b []byte, f float64) []byte {
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

// appendJSONString quotes s as encoding/json does; plain ASCII, the common
// case, is copied as is.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always marshals
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendLSN appends l in pg_lsn's text form, as LSN.String does.
func appendLSN(b []byte, l LSN) []byte {
	b = appendHexUpper(b, uint32(l>>32))
	b = append(b, '/')
	return appendHexUpper(b, uint32(l))
}

func appendHexUpper(b []byte, v uint32) []byte {
	const digits = "0123456789ABCDEF"
	var buf [8]byte
	i := len(buf)
	for {
		i--
		buf[i] = digits[v&0xF]
		v >>= 4
		if v == 0 {
			break
		}
	}
	return append(b, buf[i:]...)
}
