package childproc

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/hivemind/taskworker/internal/rawio"
)

// RawPipe is a child's end of one of its pipes (stdin, or the protocol's
// stdout), made non-blocking and read and written with raw system calls
// (package rawio),
// waiting in the Go runtime's poller when there is nothing to read or no
// room to write.
//
// A child has one P (Attach) and spends most of its life waiting for its
// next call. While it waits, the runtime's monitor thread (sysmon) sees
// every P idle and sleeps on a futex until a thread enters a system call;
// each read(2) and write(2) made through the os package does, so the first
// one of every call woke the monitor, which then slept 20 µs, looked, and
// went back to its futex: two context switches of the monitor per call on
// top of the child's own wake-up, and most of a warm call's CPU in the child
// (docs/RATIONALE.md, "Why does a child read and write its pipes with raw
// system calls?"). A raw system call does not tell the runtime, which is
// right for a read or write of a non-blocking pipe: it never blocks. The
// waits themselves are the poller's (epoll_wait from the scheduler), which
// do not wake the monitor either.
//
// The worker reads and writes its ends of a WebAssembly child's pipes the
// same way (Spec.Poll): a call waiting for its answer parks its goroutine
// instead of holding a thread in a blocking read(2).
type RawPipe struct {
	f  *os.File
	rc syscall.RawConn
	fd int // for Spin; f.Fd would make it blocking again
}

// NewRawPipe makes descriptor fd non-blocking and returns it as a RawPipe.
// The RawPipe owns fd from then on.
func NewRawPipe(fd int, name string) (*RawPipe, error) {
	if err := syscall.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("%s non-blocking: %w", name, err)
	}
	// os.NewFile registers a non-blocking descriptor with the poller.
	f := os.NewFile(uintptr(fd), name)
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &RawPipe{f: f, rc: rc, fd: fd}, nil
}

// RawPipeOf is f as a RawPipe, on a duplicate of its descriptor; f is
// closed.
func RawPipeOf(f *os.File) (*RawPipe, error) {
	fd, err := dupCloexec(int(f.Fd()))
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("dup %s: %w", f.Name(), err)
	}
	p, err := NewRawPipe(fd, f.Name())
	if err != nil {
		syscall.Close(fd)
	}
	return p, err
}

// Read reads what the pipe holds, up to len(b) bytes, waiting in the
// poller until it holds something. It returns io.EOF once the other end is
// closed and the pipe is empty.
func (p *RawPipe) Read(b []byte) (int, error) { return rawio.Read(p.rc, b) }

// Write writes all of b, waiting in the poller while the pipe is full.
func (p *RawPipe) Write(b []byte) (int, error) { return rawio.Write(p.rc, b) }

// Close closes the descriptor.
func (p *RawPipe) Close() error { return p.f.Close() }

// dupCloexec duplicates fd, close-on-exec.
func dupCloexec(fd int) (int, error) { return unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3) }
