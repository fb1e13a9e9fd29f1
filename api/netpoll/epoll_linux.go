package netpoll

import (
	"fmt"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

func newPlatform() (poller, error) { return newEpoll() }

// epoll is the Linux Poller: one epoll instance whose connections are
// registered level-triggered and one-shot, so a notification disarms its
// connection until the next Arm, and an Arm finds data that came in the
// meantime. One goroutine waits on it and starts each ready function.
type epoll struct {
	fd   int
	wake int // an eventfd that ends the wait for close

	mu      sync.Mutex
	handles map[int32]*epollHandle // guarded by mu; by file descriptor
	gen     uint32                 // guarded by mu; the last registration's number
	closed  bool                   // guarded by mu

	done chan struct{} // closed when the wait loop has returned
}

// epollHandle is one registration. gen tells it from an earlier connection
// that had the same descriptor, so an event that was already fetched for a
// closed connection is not delivered to its successor.
type epollHandle struct {
	p     *epoll
	fd    int32
	gen   uint32
	ready func()
	added bool // guarded by p.mu; in the epoll set
}

func newEpoll() (*epoll, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("netpoll: epoll_create1: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netpoll: eventfd: %w", err)
	}
	if err := unix.EpollCtl(fd, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: -1}); err != nil {
		unix.Close(wake)
		unix.Close(fd)
		return nil, fmt.Errorf("netpoll: epoll_ctl: %w", err)
	}
	p := &epoll{fd: fd, wake: wake, handles: make(map[int32]*epollHandle), done: make(chan struct{})}
	go p.wait()
	return p, nil
}

// wait delivers notifications until close.
func (p *epoll) wait() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 128)
	for {
		n, err := unix.EpollWait(p.fd, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return // only a closed or broken epoll fd gets here
		}
		p.mu.Lock()
		for _, ev := range events[:n] {
			if ev.Fd == -1 {
				p.mu.Unlock()
				return // close
			}
			if h := p.handles[ev.Fd]; h != nil && h.gen == uint32(ev.Pad) {
				go h.ready()
			}
		}
		p.mu.Unlock()
	}
}

func (p *epoll) add(rc syscall.RawConn, ready func()) (handle, error) {
	var fd int32
	if err := rc.Control(func(f uintptr) { fd = int32(f) }); err != nil {
		return nil, fmt.Errorf("netpoll: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClosed
	}
	p.gen++
	h := &epollHandle{p: p, fd: fd, gen: p.gen, ready: ready}
	p.handles[fd] = h
	return h, nil
}

func (h *epollHandle) arm() error {
	p := h.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	if p.handles[h.fd] != h {
		return errRemoved
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: h.fd, Pad: int32(h.gen)}
	op := unix.EPOLL_CTL_MOD
	if !h.added {
		op = unix.EPOLL_CTL_ADD
	}
	if err := unix.EpollCtl(p.fd, op, int(h.fd), &ev); err != nil {
		return fmt.Errorf("netpoll: epoll_ctl: %w", err)
	}
	h.added = true
	return nil
}

func (h *epollHandle) remove() {
	p := h.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.handles[h.fd] != h {
		return
	}
	delete(p.handles, h.fd)
	if h.added && !p.closed {
		// The descriptor is still open (its owner closes it after this),
		// so this cannot remove another connection's registration.
		_ = unix.EpollCtl(p.fd, unix.EPOLL_CTL_DEL, int(h.fd), nil)
	}
}

func (p *epoll) close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	var one [8]byte
	one[0] = 1 // an eventfd counter is a native-endian uint64; this is 1 on little-endian machines, and non-zero on any
	if _, err := unix.Write(p.wake, one[:]); err != nil {
		return fmt.Errorf("netpoll: wake: %w", err)
	}
	<-p.done
	unix.Close(p.wake)
	return unix.Close(p.fd)
}
