package main

import (
	"context"
	"io"
	"strings"
	"testing"
)

// tail reads --since exactly, as the server does.
func TestTailSinceParsedExactly(t *testing.T) {
	for _, since := range []string{"0/16B3748junk", " 0/1", "100000000/5"} {
		err := runTail(context.Background(), io.Discard, io.Discard, tailOptions{url: "ws://127.0.0.1:1/v1/stream", prefix: "seller:", since: since})
		if err == nil || !strings.Contains(err.Error(), "--since") {
			t.Errorf("--since %q: %v; want an error about --since", since, err)
		}
	}
}
