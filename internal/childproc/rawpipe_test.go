//go:build linux && (amd64 || arm64)

package childproc

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestRawPipe sends more than a pipe holds through two RawPipes, so that
// the writer waits in the poller for room and the reader for data, and
// checks that every byte arrives in order, that both descriptors are
// non-blocking, and that the reader sees io.EOF once the writer closes.
func TestRawPipe(t *testing.T) {
	r, w, err := Pipe()
	if err != nil {
		t.Fatal(err)
	}
	in, err := RawPipeOf(r)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := RawPipeOf(w)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []*RawPipe{in, out} {
		flags, err := unix.FcntlInt(uintptr(p.fd), unix.F_GETFL, 0)
		if err != nil || flags&unix.O_NONBLOCK == 0 {
			t.Errorf("descriptor %d: flags %#x, %v: want O_NONBLOCK", p.fd, flags, err)
		}
	}
	want := make([]byte, 4<<20) // 64 times a pipe's default capacity
	for i := range want {
		want[i] = byte(i * 7)
	}
	done := make(chan error, 1)
	go func() {
		n, err := out.Write(want)
		if err == nil && n != len(want) {
			err = io.ErrShortWrite
		}
		done <- errors.Join(err, out.Close())
	}()
	got, err := io.ReadAll(in) // ends at io.EOF
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, not the %d written", len(got), len(want))
	}
	if n, err := in.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("read after the writer closed: %d, %v; want 0, EOF", n, err)
	}
}

// TestRawPipeClosedWriter: writing to a pipe whose reader is gone fails
// with EPIPE (the runtime ignores SIGPIPE on descriptors other than 1 and
// 2), rather than wait for room that never comes.
func TestRawPipeClosedWriter(t *testing.T) {
	r, w, err := Pipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := RawPipeOf(w)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	r.Close()
	if _, err := out.Write([]byte("x")); !errors.Is(err, unix.EPIPE) {
		t.Errorf("write with no reader: %v, want EPIPE", err)
	}
}

// TestStartPoll starts a child whose pipes the parent reads and writes as
// RawPipes (Spec.Poll): it answers, and a parent waiting in the poller for
// an answer that never comes is released when the child is killed, as a
// call's deadline does.
func TestStartPoll(t *testing.T) {
	p, _, _, err := startEcho(t, Spec{Command: echoCommand(t), Hello: []byte("refuse"), Poll: true})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		echo(t, p)
	}
	if _, ok := p.stdout.(*RawPipe); !ok {
		t.Fatalf("stdout is a %T, want a *RawPipe", p.stdout)
	}
	time.AfterFunc(50*time.Millisecond, p.Kill)
	typ, payload, err := ReadFrame(p.R, func(byte) int { return MaxControlFrame })
	if err == nil {
		t.Fatalf("read a %q frame %q from a child sent nothing", typ, payload)
	}
	<-p.Exited()
	p.W.Write([]byte("after"))
	if err := p.W.Flush(); err == nil {
		t.Error("wrote to a dead child's closed pipe")
	}
}
