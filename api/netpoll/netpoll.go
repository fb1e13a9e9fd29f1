// Package netpoll tells a server when an idle connection has bytes to read,
// so that ten thousand idle WebSockets need no goroutine parked on a read
// (each would hold a stack of its own).
//
// A connection is added once and armed for one notification at a time: the
// notification runs the connection's ready function on a new goroutine,
// which reads what came and arms the connection again. A hangup or an error
// on the socket is a notification too, so the read that follows sees it.
package netpoll

import (
	"errors"
	"syscall"
)

// ErrClosed is returned for work asked of a closed Poller.
var ErrClosed = errors.New("netpoll: poller closed")

var errRemoved = errors.New("netpoll: arm: connection removed")

// Poller watches connections for readability. Create it with New; its
// owner calls Close.
type Poller struct {
	impl poller
}

// Handle is one connection added to a Poller.
type Handle struct {
	impl handle
}

type poller interface {
	add(c syscall.RawConn, ready func()) (handle, error)
	close() error
}

type handle interface {
	arm() error
	remove()
}

// New starts a Poller: on Linux one epoll instance and one goroutine for
// all its connections; elsewhere a goroutine per armed connection, which
// waits for readability without reading.
func New() (*Poller, error) {
	p, err := newPlatform()
	if err != nil {
		return nil, err
	}
	return &Poller{impl: p}, nil
}

// Add registers c, unarmed. ready runs, on a new goroutine, once for each
// Arm that finds c readable or hung up.
func (p *Poller) Add(c syscall.Conn, ready func()) (*Handle, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	h, err := p.impl.add(rc, ready)
	if err != nil {
		return nil, err
	}
	return &Handle{impl: h}, nil
}

// Close stops the Poller; armed connections are not notified any more.
func (p *Poller) Close() error { return p.impl.close() }

// Arm asks for one notification: the next time the connection is readable
// (at once if it is already), ready runs. Arm again from ready, after
// reading what was there.
func (h *Handle) Arm() error { return h.impl.arm() }

// Remove unregisters the connection; call it before closing the connection,
// not while ready may run for it unarmed. No notification starts after
// Remove returns.
func (h *Handle) Remove() { h.impl.remove() }
