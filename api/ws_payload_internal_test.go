package api

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// capReader records the largest buffer it was asked to fill.
type capReader struct {
	r       io.Reader
	largest int
}

func (c *capReader) Read(p []byte) (int, error) {
	c.largest = max(c.largest, len(p))
	return c.r.Read(p)
}

// readPayload grows its buffer as bytes arrive: a header announcing 60 KiB
// followed by 10 bytes costs a few KiB, not 60; a whole payload is read
// exactly.
func TestReadPayloadGrowsAsBytesArrive(t *testing.T) {
	cr := &capReader{r: bytes.NewReader(make([]byte, 10))}
	if _, err := readPayload(cr, 60<<10); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short payload: %v; want unexpected EOF", err)
	}
	if cr.largest > payloadStep {
		t.Errorf("asked for %d bytes at once with 10 sent; want at most %d", cr.largest, payloadStep)
	}
	want := bytes.Repeat([]byte("0123456789abcdef"), 6400) // 100 KiB
	got, err := readPayload(bytes.NewReader(want), int64(len(want)))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("full payload: %d bytes, %v", len(got), err)
	}
	if got, err := readPayload(bytes.NewReader(nil), 0); err != nil || len(got) != 0 {
		t.Fatalf("empty payload: %q, %v", got, err)
	}
}
