package main

import (
	"context"
	"strings"
	"testing"

	"github.com/repstream/repstream/stream"
)

func TestFormatBoard(t *testing.T) {
	entries := []stream.State{{Subject: "seller:42", Bayes: 3.99, Count: 18}, {Subject: "seller:7", Bayes: 3.95, Count: 9}, {Subject: "seller:9", Bayes: 3.9, Count: 3}}
	moves := []stream.Move{{Subject: "seller:42", From: 2, To: 1}, {Subject: "seller:7", From: 1, To: 2}, {Subject: "seller:9", To: 3}, {Subject: "seller:1", From: 3}}
	got := formatBoard(0x16B3800, stream.OrderBayes, entries, moves)
	want := "0/16B3800 top 3 by bayes: 1 seller:42 3.990 ↑ from 2 | 2 seller:7 3.950 ↓ from 1 | 3 seller:9 3.900 new"
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if got := formatBoard(0x10, stream.OrderCount, entries[:1], nil); got != "0/10 top 1 by count: 1 seller:42 18" {
		t.Fatalf("got %s", got)
	}
}

func TestTailTopOptions(t *testing.T) {
	for _, o := range []tailOptions{
		{url: "ws://127.0.0.1:1", subjects: []string{"a"}, top: 3, order: "bayes"},
		{url: "ws://127.0.0.1:1", prefix: "seller:", top: -1, order: "bayes"},
		{url: "ws://127.0.0.1:1", prefix: "seller:", top: 3, order: "updated_at"},
	} {
		err := runTail(context.Background(), &strings.Builder{}, &strings.Builder{}, o)
		if err == nil || !strings.Contains(err.Error(), "--") {
			t.Errorf("%+v: got %v; want an error naming the flag", o, err)
		}
	}
}
