//go:build unix

package netpoll

import (
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// waiters is the portable Poller: each Arm parks a goroutine in the Go
// runtime's own poller until the connection is readable, without reading.
type waiters struct {
	mu     sync.Mutex
	closed bool
}

func newWaiters() *waiters { return &waiters{} }

func (w *waiters) add(rc syscall.RawConn, ready func()) (handle, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, ErrClosed
	}
	return &waiter{w: w, rc: rc, ready: ready}, nil
}

func (w *waiters) close() error {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	return nil
}

type waiter struct {
	w     *waiters
	rc    syscall.RawConn
	ready func()

	mu      sync.Mutex
	removed bool // guarded by mu
}

func (h *waiter) arm() error {
	h.w.mu.Lock()
	closed := h.w.closed
	h.w.mu.Unlock()
	if closed {
		return ErrClosed
	}
	h.mu.Lock()
	removed := h.removed
	h.mu.Unlock()
	if removed {
		return errRemoved
	}
	go func() {
		// RawConn.Read calls f, waits for readability while f returns
		// false, and returns once f returns true; f peeks, so this waits
		// without consuming a byte. It ends with an error once the
		// connection is closed.
		var b [1]byte
		err := h.rc.Read(func(fd uintptr) bool {
			_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK)
			return err != unix.EAGAIN && err != unix.EINTR // bytes, EOF, or an error the read will see
		})
		h.mu.Lock()
		removed := h.removed
		h.mu.Unlock()
		if err == nil && !removed {
			h.ready()
		}
	}()
	return nil
}

func (h *waiter) remove() {
	h.mu.Lock()
	h.removed = true
	h.mu.Unlock()
}
