package hub

import (
	"sync/atomic"

	"github.com/repstream/repstream/stream"
)

// Forward is a stream.Publisher that forwards to a target set later. It
// breaks the construction cycle between the pipeline (which takes a
// Publisher) and the API server (which takes the pipeline's store):
//
//	var pub hub.Forward
//	engine, _ := stream.NewEngine(ctx, cfg, &pub)
//	srv, _ := api.NewServer(api.Options{Log: engine.Store(), ...})
//	pub.Set(srv.Hub()) // before engine.Run
//
// Calls before Set are dropped (a hub learns its epoch and head from the
// log when it has seen no Reset). The zero value is ready to use.
type Forward struct {
	p atomic.Pointer[stream.Publisher]
}

var _ stream.Publisher = (*Forward)(nil)

// Set makes p the target.
func (f *Forward) Set(p stream.Publisher) { f.p.Store(&p) }

// Publish implements stream.Publisher.
func (f *Forward) Publish(head stream.LSN, txns []stream.Txn) {
	if p := f.p.Load(); p != nil {
		(*p).Publish(head, txns)
	}
}

// Reset implements stream.Publisher.
func (f *Forward) Reset(m stream.Meta) {
	if p := f.p.Load(); p != nil {
		(*p).Reset(m)
	}
}
