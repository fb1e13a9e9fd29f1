package api

import (
	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/stream/hub"
)

// maxJoinBytes bounds the delta frames joined into one "deltas" frame.
const maxJoinBytes = 64 << 10

// joinDeltas returns the frame to write for fs[i:] and the index of the
// frame after it: a run of single-delta frames (hub.Frame.DeltaLSN set) in
// LSN order, at most maxJoinBytes of them, joined into one "deltas" frame,
// or fs[i] alone. Joining whole frames never splits a transaction, and the
// run keeps the queue's order, which is each subscription's LSN order.
func joinDeltas(c wire.Codec, fs []hub.Frame, i int) ([]byte, int) {
	lsn := fs[i].DeltaLSN
	if lsn == 0 {
		return fs[i].Bytes, i + 1
	}
	j, size := i+1, len(fs[i].Bytes)
	for ; j < len(fs) && size+len(fs[j].Bytes) <= maxJoinBytes; j++ {
		l := fs[j].DeltaLSN
		if l == 0 || l < lsn {
			break
		}
		lsn, size = l, size+len(fs[j].Bytes)
	}
	if j == i+1 {
		return fs[i].Bytes, j
	}
	run := make([][]byte, j-i)
	for k := range run {
		run[k] = fs[i+k].Bytes
	}
	return c.Deltas(run), j
}
