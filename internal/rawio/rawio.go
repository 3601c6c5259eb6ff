// Package rawio reads and writes non-blocking descriptors with raw system
// calls, waiting in the Go runtime's poller when there is nothing to read
// or no room to write: a child's pipes (childproc.RawPipe) and the
// processes' TCP connections (Conn, Listener, Dial).
//
// A read(2) or write(2) made through the os and net packages enters the
// runtime as a system call that may block: the runtime's monitor thread
// (sysmon) is woken if it slept, polls every 20 µs for a millisecond after,
// and takes the P of a thread whose call lasts past one of its polls,
// handing it to another thread. On a virtual machine a write to a loopback
// socket often lasts that long (the kernel delivers to the reader in the
// writer's call), so a busy process pays in monitor wake-ups and thread
// hand-offs for system calls that never block. A raw system call does not
// tell the runtime, which is right for a descriptor that is non-blocking:
// it returns EAGAIN instead of waiting, and the wait is the poller's
// (docs/RATIONALE.md, "Why do the processes read and write their sockets
// with raw system calls?").
package rawio

import (
	"context"
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// rawIO is one read(2) or write(2) (trap) of b on fd that the runtime is not
// told about, retried on EINTR; fd must be non-blocking.
func rawIO(trap, fd uintptr, b []byte) (int, syscall.Errno) {
	for {
		r, _, errno := syscall.RawSyscall(trap, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		if errno != syscall.EINTR {
			if errno != 0 {
				return 0, errno
			}
			return int(r), 0
		}
	}
}

// Read reads up to len(b) bytes from rc, waiting in the poller until there
// is something to read; io.EOF once the other end is closed.
func Read(rc syscall.RawConn, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	var n int
	var errno syscall.Errno
	err := rc.Read(func(fd uintptr) bool {
		n, errno = rawIO(syscall.SYS_READ, fd, b)
		return errno != syscall.EAGAIN
	})
	switch {
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, os.NewSyscallError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// Write writes all of b to rc, waiting in the poller while there is no
// room.
func Write(rc syscall.RawConn, b []byte) (int, error) {
	written := 0
	for written < len(b) {
		var n int
		var errno syscall.Errno
		err := rc.Write(func(fd uintptr) bool {
			n, errno = rawIO(syscall.SYS_WRITE, fd, b[written:])
			return errno != syscall.EAGAIN
		})
		switch {
		case err != nil:
			return written, err
		case errno != 0:
			return written, os.NewSyscallError("write", errno)
		}
		written += n
	}
	return written, nil
}

// conn is a TCP connection read and written with raw system calls; the
// rest (deadlines, which the poller's waits honor, addresses, Close) is
// the connection's own.
type conn struct {
	net.Conn
	rc syscall.RawConn
}

func (c *conn) Read(b []byte) (int, error)  { return Read(c.rc, b) }
func (c *conn) Write(b []byte) (int, error) { return Write(c.rc, b) }

// Conn is c read and written with raw system calls, when it is a
// connection of this process's poller (a *net.TCPConn); otherwise c.
func Conn(c net.Conn) net.Conn {
	sc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	return &conn{Conn: c, rc: rc}
}

// Listener is l whose connections are read and written with raw system
// calls.
func Listener(l net.Listener) net.Listener { return listener{l} }

type listener struct{ net.Listener }

func (l listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return Conn(c), nil
}

// Dial dials a TCP address, for grpc.WithContextDialer: the connection is
// read and written with raw system calls.
func Dial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return Conn(c), nil
}
