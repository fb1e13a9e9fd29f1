package demo_test

import (
	"strings"
	"testing"

	"github.com/repstream/repstream/sql/demo"
)

func TestParseMix(t *testing.T) {
	for _, c := range []struct {
		in   string
		want demo.Mix
		err  string
	}{
		{in: "insert=70,update=15,delete=5,hide=10", want: demo.DefaultMix},
		{in: demo.DefaultMix.String(), want: demo.DefaultMix},
		{in: " Insert = 1 , hide=2 ", want: demo.Mix{Insert: 1, Hide: 2}},
		{in: "delete=1,", want: demo.Mix{Delete: 1}},
		{in: "", err: "at least one"},
		{in: "insert=0", err: "at least one"},
		{in: "insert", err: "kind=weight"},
		{in: "insert=-1", err: "0 or more"},
		{in: "insert=x", err: "whole number"},
		{in: "upsert=1", err: `unknown kind "upsert"`},
		{in: "insert=1,insert=2", err: "twice"},
	} {
		got, err := demo.ParseMix(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseMix(%q) = %v, %v; want an error with %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ParseMix(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
}
