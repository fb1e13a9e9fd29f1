package stream

import (
	"fmt"
	"sort"
	"time"
)

// acc is what one source transaction does to one subject so far.
type acc struct {
	count int64
	sum   Micro
	hist  []int64
}

func (a *acc) add(c Contribution, sign int64, buckets int) {
	a.count += sign
	a.sum += Micro(sign) * c.Score
	if c.Bucket >= 0 {
		if len(a.hist) < buckets {
			h := make([]int64, buckets)
			copy(h, a.hist)
			a.hist = h
		}
		a.hist[c.Bucket] += sign
	}
}

func (a *acc) zero() bool {
	if a.count != 0 || a.sum != 0 {
		return false
	}
	for _, h := range a.hist {
		if h != 0 {
			return false
		}
	}
	return true
}

// txnAcc folds one source transaction: every change to one subject lands in
// one acc, so the transaction yields at most one delta per subject.
type txnAcc struct {
	lsn  LSN
	at   time.Time
	subj map[string]*acc
}

func (t *txnAcc) add(c Contribution, sign int64, buckets int) {
	a := t.subj[c.Subject]
	if a == nil {
		a = &acc{}
		t.subj[c.Subject] = a
	}
	a.add(c, sign, buckets)
}

// subjects lists the subjects whose figures changed, sorted.
func (t *txnAcc) subjects() []string {
	out := make([]string, 0, len(t.subj))
	for s, a := range t.subj {
		if !a.zero() {
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

// Fold applies one transaction's change to a state: the pure heart of the
// reputation model. prev is the state before (zero for a new subject).
func Fold(prev State, subject string, count int64, sum Micro, hist []int64, lsn LSN, at time.Time, p Prior) Delta {
	next := State{
		Subject:   subject,
		Count:     prev.Count + count,
		Sum:       prev.Sum + sum,
		Version:   prev.Version + 1,
		LSN:       lsn,
		UpdatedAt: at,
	}
	n := len(prev.Hist)
	if len(hist) > n {
		n = len(hist)
	}
	if n > 0 {
		next.Hist = make([]int64, n)
		copy(next.Hist, prev.Hist)
		for i, h := range hist {
			next.Hist[i] += h
		}
	}
	next.Mean = mean(next.Count, next.Sum)
	next.Bayes = p.Bayes(next.Count, next.Sum)
	return Delta{
		Subject: subject,
		LSN:     lsn,
		Version: next.Version,
		After:   next,
		Change: Change{
			Count: count,
			Sum:   sum,
			// Derived from prev's figures, not its stored mean and bayes, so
			// a new subject (zero state) needs no special case.
			Mean:  next.Mean - mean(prev.Count, prev.Sum),
			Bayes: next.Bayes - p.Bayes(prev.Count, prev.Sum),
		},
		Coalesced: 1,
	}
}

func mean(count int64, sum Micro) float64 {
	if count == 0 {
		return 0
	}
	return sum.Float() / float64(count)
}

// SumOverflowError stops the pipeline before a subject's sum would wrap
// around: past MaxSubjectRatings ratings at the far end of its scales, the
// sum no longer fits in 64-bit millionths.
type SumOverflowError struct {
	Subject string
	LSN     LSN
}

func (e *SumOverflowError) Error() string {
	return fmt.Sprintf("stream: the sum of %s would overflow 64-bit millionths at %s", e.Subject, e.LSN)
}
