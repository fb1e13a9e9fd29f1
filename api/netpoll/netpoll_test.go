package netpoll

import (
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// implementations runs a test against the platform's Poller and the
// portable one.
func implementations(t *testing.T, run func(t *testing.T, p *Poller)) {
	for name, mk := range map[string]func() (poller, error){
		"platform": newPlatform,
		"portable": func() (poller, error) { return newWaiters(), nil },
	} {
		t.Run(name, func(t *testing.T) {
			impl, err := mk()
			if err != nil {
				t.Fatal(err)
			}
			p := &Poller{impl: impl}
			run(t, p)
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// pair returns the two ends of a loopback TCP connection.
func pair(t *testing.T) (server, client *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return dial(t, ln)
}

// dial connects to ln and returns both ends, closed when the test ends.
func dial(t *testing.T, ln net.Listener) (server, client *net.TCPConn) {
	t.Helper()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return s.(*net.TCPConn), c.(*net.TCPConn)
}

// watch adds c to p, armed, and returns the channel its notifications
// arrive on.
func watch(t *testing.T, p *Poller, c *net.TCPConn) (*Handle, chan struct{}) {
	t.Helper()
	ready := make(chan struct{}, 10)
	h, err := p.Add(c, func() { ready <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Arm(); err != nil {
		t.Fatal(err)
	}
	return h, ready
}

func expectReady(t *testing.T, ready <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ready:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: no notification", what)
	}
}

func expectQuiet(t *testing.T, ready <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ready:
		t.Fatalf("%s: a notification", what)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestNotifiesOncePerArm(t *testing.T) {
	implementations(t, func(t *testing.T, p *Poller) {
		s, c := pair(t)
		h, ready := watch(t, p, s)
		expectQuiet(t, ready, "armed, nothing sent")
		if _, err := c.Write([]byte("ab")); err != nil {
			t.Fatal(err)
		}
		expectReady(t, ready, "armed, bytes sent")
		if _, err := c.Write([]byte("cd")); err != nil {
			t.Fatal(err)
		}
		expectQuiet(t, ready, "not armed again")

		// Arming with bytes left unread notifies at once, and nothing was
		// consumed by the poller.
		if err := h.Arm(); err != nil {
			t.Fatal(err)
		}
		expectReady(t, ready, "armed over unread bytes")
		b := make([]byte, 4)
		if _, err := io.ReadFull(s, b); err != nil || string(b) != "abcd" {
			t.Fatalf("read %q, %v; want abcd", b, err)
		}

		// A hangup is a notification, and the read after it sees EOF.
		if err := h.Arm(); err != nil {
			t.Fatal(err)
		}
		expectQuiet(t, ready, "armed after reading everything")
		c.Close()
		expectReady(t, ready, "peer closed")
		if n, err := s.Read(b); n != 0 || err != io.EOF {
			t.Fatalf("read after hangup: %d, %v; want EOF", n, err)
		}
		h.Remove()
	})
}

// TestCloseReadNotifies: shutting down the read side of an armed, idle
// connection is a notification, which is how a server ends a session whose
// reader is parked in the poller.
func TestCloseReadNotifies(t *testing.T) {
	implementations(t, func(t *testing.T, p *Poller) {
		s, _ := pair(t)
		h, ready := watch(t, p, s)
		expectQuiet(t, ready, "armed, nothing sent")
		if err := s.CloseRead(); err != nil {
			t.Fatal(err)
		}
		expectReady(t, ready, "read side shut down")
		h.Remove()
	})
}

func TestRemovedIsNotNotified(t *testing.T) {
	implementations(t, func(t *testing.T, p *Poller) {
		s, c := pair(t)
		h, ready := watch(t, p, s)
		h.Remove()
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		expectQuiet(t, ready, "removed")
		if err := h.Arm(); err == nil {
			t.Error("Arm after Remove: no error")
		}
		s.Close() // ends the portable poller's waiting goroutine
	})
}

// TestDescriptorReuse: a connection closed after Remove, and a new one that
// gets its descriptor, are told apart.
func TestDescriptorReuse(t *testing.T) {
	implementations(t, func(t *testing.T, p *Poller) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		_, c1 := dial(t, ln)
		fd1 := fdOf(t, c1)
		h1, old := watch(t, p, c1)
		h1.Remove()
		c1.Close()
		s2, c2 := dial(t, ln) // the client takes the lowest free descriptor: c1's
		if fd := fdOf(t, c2); fd != fd1 {
			t.Fatalf("the new connection has descriptor %d, not the closed one's %d", fd, fd1)
		}
		h2, ready := watch(t, p, c2)
		if _, err := s2.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		expectReady(t, ready, "new connection")
		expectQuiet(t, old, "old connection")
		h2.Remove()
	})
}

func fdOf(t *testing.T, c *net.TCPConn) uintptr {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd uintptr
	if err := rc.Control(func(f uintptr) { fd = f }); err != nil {
		t.Fatal(err)
	}
	return fd
}

func TestClosedPoller(t *testing.T) {
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	s, _ := pair(t)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := p.Add(s, func() {}); err != ErrClosed {
		t.Fatalf("Add on a closed poller: %v, want ErrClosed", err)
	}
}
