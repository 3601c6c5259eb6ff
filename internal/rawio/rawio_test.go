package rawio_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/hivemind/taskworker/internal/rawio"
)

// pair is two ends of a real TCP connection over loopback, each read and
// written with raw system calls.
func pair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := rawio.Listener(l).Accept()
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	client, err = rawio.Dial(context.Background(), l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// TestConn: what crosses a raw connection arrives whole and in order, even
// more than the socket buffers hold at once (the writer waits for room in
// the poller); the reader sees io.EOF once the writer closes.
func TestConn(t *testing.T) {
	client, server := pair(t)
	want := make([]byte, 16<<20)
	for i := range want {
		want[i] = byte(i * 7)
	}
	go func() {
		if n, err := client.Write(want); err != nil || n != len(want) {
			t.Errorf("write: %d, %v", n, err)
		}
		client.Close()
	}()
	got, err := io.ReadAll(server)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, not the %d written", len(got), len(want))
	}
}

// TestConnDeadlineAndClose: a read waiting in the poller ends at its
// deadline, and when the connection is closed under it.
func TestConnDeadlineAndClose(t *testing.T) {
	client, server := pair(t)
	server.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := server.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past its deadline: %v, want os.ErrDeadlineExceeded", err)
	}
	server.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() {
		_, err := client.Read(make([]byte, 1))
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	client.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read of a closed connection: %v, want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a read waiting on a closed connection did not end")
	}
	if _, err := server.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read after the peer closed: %v, want io.EOF", err)
	}
}

// TestConnOfOtherConns: a connection that is not a TCP one of this
// process's poller is left as it is.
func TestConnOfOtherConns(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if rawio.Conn(a) != a {
		t.Fatal("rawio.Conn wrapped a net.Pipe")
	}
}
