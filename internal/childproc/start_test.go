//go:build linux && (amd64 || arm64)

package childproc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/hivemind/taskworker/internal/childproc/childproctest"
)

// echoChildArg makes the test binary run echoChild (see TestMain).
const echoChildArg = "__childproc-echo"

// echoChild is the smallest payload: it limits its memory and hardens
// itself (allowed to run
// unconfined when its hello says "allow"), reports its pid and what it did
// in its ready frame, then answers each frame with the same payload until its
// stdin closes; a frame "hang" it never answers, nor "log+hang", after
// which it sends a log frame first.
func echoChild() int {
	out, err := Attach(1)
	if err != nil {
		return 4
	}
	in, w := bufio.NewReader(os.Stdin), bufio.NewWriter(out)
	limit := func(byte) int { return MaxControlFrame }
	_, hello, err := ReadFrame(in, limit)
	if err != nil {
		return 1
	}
	if _, _, err := LimitMemory(64 * MiB); err != nil {
		return 4
	}
	hardening, err := Harden(string(hello) == "allow")
	switch {
	case errors.Is(err, ErrUnconfined):
		return ExitUnconfined
	case err != nil:
		return 4
	}
	if WriteFrame(w, FrameReady, fmt.Appendf(nil, "%d %s", os.Getpid(), hardening)) != nil {
		return 1
	}
	for {
		_, payload, err := ReadFrame(in, limit)
		if err != nil {
			return 0
		}
		switch string(payload) {
		case "log+hang":
			if WriteFrame(w, 'l', []byte("a line")) != nil {
				return 1
			}
			select {}
		case "hang":
			select {}
		}
		if WriteFrame(w, FrameResult, payload) != nil {
			return 1
		}
	}
}

// startEcho starts echoChild with command (the test binary and
// echoChildArg, perhaps wrapped) and hello, and kills it when the test
// ends.
func startEcho(t testing.TB, spec Spec) (p *Process, pid int, hardening string, err error) {
	t.Helper()
	var wg sync.WaitGroup
	spec.Track = func(f func()) bool { wg.Go(f); return true }
	if spec.StartTimeout == 0 {
		spec.StartTimeout = 30 * time.Second
	}
	p, ready, err := Start(context.Background(), spec)
	t.Cleanup(func() {
		if p != nil {
			p.Kill()
		}
		wg.Wait()
	})
	if err == nil {
		if _, err := fmt.Sscan(string(ready), &pid); err != nil {
			t.Fatalf("ready frame %q: %v", ready, err)
		}
		_, hardening, _ = strings.Cut(string(ready), " ")
	}
	return p, pid, hardening, err
}

func echoCommand(t testing.TB) []string {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return []string{exe, echoChildArg}
}

// echo checks that the child answers over its pipes.
func echo(t *testing.T, p *Process) {
	t.Helper()
	if err := WriteFrame(p.W, 'C', []byte("ping")); err != nil {
		t.Fatal(err)
	}
	typ, payload, err := ReadFrame(p.R, func(byte) int { return MaxControlFrame })
	if err != nil || typ != FrameResult || string(payload) != "ping" {
		t.Fatalf("echo: frame %q %q, %v: want the payload back", typ, payload, err)
	}
}

// TestStartConfined starts a child and checks both layers from outside:
// its seccomp filter and, where this machine allows them, namespaces of
// its own; and that it still talks over its pipes.
func TestStartConfined(t *testing.T) {
	p, pid, hardening, err := startEcho(t, Spec{Command: echoCommand(t), Hello: []byte("refuse")})
	if err != nil {
		t.Fatal(err)
	}
	echo(t, p)
	c, err := Inspect(pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("child %d: %s; %+v", pid, hardening, c)
	if problems, err := Audit(pid, true); err != nil || len(problems) > 0 {
		t.Errorf("audit: %v, %v", problems, err)
	}
	if c.Seccomp != 2 || Unconfined(hardening) {
		t.Errorf("seccomp mode %d, hardening %q: want a filter (2)", c.Seccomp, hardening)
	}
	if err := childproctest.NamespacesWork(); err != nil {
		if p.Namespaced() || len(c.Namespaces) > 0 {
			t.Errorf("namespaces %v (Namespaced %v) where this machine has none: %v", c.Namespaces, p.Namespaced(), err)
		}
		if inUse, why := Namespaces(); inUse || why == "" {
			t.Errorf("Namespaces() = %v, %q: want false and the reason", inUse, why)
		}
		t.Skipf("no namespace layer on this machine: %v", err)
	}
	if want := []string{"user", "mnt", "net"}; !p.Namespaced() || !slices.Equal(c.Namespaces, want) {
		t.Errorf("child's own namespaces %v (Namespaced %v), want %v", c.Namespaces, p.Namespaced(), want)
	}
	if inUse, why := Namespaces(); !inUse {
		t.Errorf("Namespaces() = false, %q, after a child started in them", why)
	}
}

// TestStartRefusesUnconfined starts a child where the seccomp system call
// fails, as on a kernel without it: the child refuses to run, and Start's
// error says why and what to do; allowed to run unconfined, it runs and
// says so.
func TestStartRefusesUnconfined(t *testing.T) {
	command := childproctest.WithoutSeccomp(echoCommand(t))
	_, _, _, err := startEcho(t, Spec{Command: command, Hello: []byte("refuse")})
	if !errors.Is(err, ErrUnconfined) {
		t.Fatalf("Start: %v, want ErrUnconfined", err)
	}
	if got := GRPCCode(err); got != codes.FailedPrecondition {
		t.Errorf("code %v, want FailedPrecondition", got)
	}
	for _, want := range []string{"seccomp(SET_MODE_FILTER): function not implemented", "--allow-unconfined"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}

	p, _, hardening, err := startEcho(t, Spec{Command: command, Hello: []byte("allow")})
	if err != nil {
		t.Fatal(err)
	}
	echo(t, p)
	if !Unconfined(hardening) {
		t.Errorf("hardening %q: want it to say the child is unconfined", hardening)
	}
}

// BenchmarkStart measures a child's start, from exec to its ready frame,
// with and without namespaces of its own.
func BenchmarkStart(b *testing.B) {
	if err := childproctest.NamespacesWork(); err != nil {
		b.Logf("no namespaces here (%v): both measure a start without them", err)
	}
	for _, bc := range []struct {
		name         string
		noNamespaces bool
	}{{"namespaces", false}, {"no-namespaces", true}} {
		b.Run(bc.name, func(b *testing.B) {
			command := echoCommand(b)
			for b.Loop() {
				p, _, _, err := startEcho(b, Spec{Command: command, Hello: []byte("refuse"), noNamespaces: bc.noNamespaces})
				if err != nil {
					b.Fatal(err)
				}
				p.Kill()
				<-p.Exited()
			}
		})
	}
}

// TestStartFallsBackWithoutNamespaces starts a child where user namespaces
// are refused, as where a sysctl or a security module forbids them: it
// starts without them, still confined by its filter, Namespaces says why,
// and the next start does not ask again.
func TestStartFallsBackWithoutNamespaces(t *testing.T) {
	if err := childproctest.NamespacesWork(); err != nil {
		t.Skipf("no namespaces on this machine to be refused (%v): TestStartConfined covers it", err)
	}
	// What this test finds must not stay for the others.
	saved := namespaceLayer.state.Swap(namespacesUntried)
	t.Cleanup(func() { namespaceLayer.state.Store(saved) })

	command := childproctest.WithoutUserNamespaces(echoCommand(t))
	for i := range 2 {
		p, pid, hardening, err := startEcho(t, Spec{Command: command, Hello: []byte("refuse")})
		if err != nil {
			t.Fatal(err)
		}
		echo(t, p)
		c, err := Inspect(pid)
		if err != nil {
			t.Fatal(err)
		}
		if p.Namespaced() || len(c.Namespaces) > 0 || c.Seccomp != 2 || Unconfined(hardening) {
			t.Errorf("start %d: Namespaced %v, %+v, %q: want the filter and no namespaces", i, p.Namespaced(), c, hardening)
		}
		if p.PID() != pid {
			t.Errorf("start %d: child %d runs under %d: want no process between, as without namespaces", i, pid, p.PID())
		}
		inUse, why := Namespaces()
		if inUse || !strings.Contains(why, "operation not permitted") {
			t.Errorf("start %d: Namespaces() = %v, %q: want false and the refusal", i, inUse, why)
		}
		t.Logf("start %d: child %d, namespaces refused: %s", i, pid, why)
	}
}
