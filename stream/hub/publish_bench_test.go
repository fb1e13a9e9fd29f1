package hub_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/hub"
)

// BenchmarkPublish fans transactions of 10 deltas (10 of 100 subjects) out
// to 10,000 connections, 100 per subject: the fan-out benchmark's shape
// without sockets. ns/delivery is the hub's cost of routing a delta to one
// connection, encoding it once per codec and queueing the shared frame.
func BenchmarkPublish(b *testing.B) {
	const conns, subjects, rows = 10000, 100, 10
	r := newRig(b, hub.Config{QueueFrames: 1 << 20, QueueBytes: 1 << 30})
	ctx := context.Background()
	cs := make([]*hub.Conn, conns)
	for i := range cs {
		c := r.h.Connect(0)
		sel := stream.Selector{Subjects: []string{fmt.Sprintf("seller:%d", i%subjects)}}
		if _, err := c.Subscribe(ctx, hub.Request{ID: 1, Sel: sel}); err != nil {
			b.Fatal(err)
		}
		c.Next(nil)
		cs[i] = c
	}
	defer func() {
		for _, c := range cs {
			r.h.Disconnect(c)
		}
	}()
	var took time.Duration
	deliveries := 0
	for i := 0; b.Loop(); i++ {
		ops := make([]hub.Op, rows)
		for k := range ops {
			ops[k] = hub.Op{Subject: fmt.Sprintf("seller:%d", (i*rows+k)%subjects), Score: 4 * stream.MicroUnit}
		}
		txn, err := r.log.Commit(r.lsn, ops)
		if err != nil {
			b.Fatal(err)
		}
		r.lsn++
		t0 := time.Now()
		r.h.Publish(r.lsn, []stream.Txn{txn})
		took += time.Since(t0)
		deliveries += rows * conns / subjects
		if i%100 == 99 {
			b.StopTimer()
			for _, c := range cs {
				c.Next(nil)
			}
			b.StartTimer()
		}
	}
	b.ReportMetric(float64(took.Nanoseconds())/float64(deliveries), "ns/delivery")
}
