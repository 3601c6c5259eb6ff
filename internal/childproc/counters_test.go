//go:build linux && (amd64 || arm64)

package childproc

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A child of a counted class is counted alive from its start to its exit,
// and a call that ends it is counted by reason: here a result over the
// output limit, which the parent refuses and the child dies of.
func TestCountsFollowAChild(t *testing.T) {
	const class = "test-counts"
	p, _, _, err := startEcho(t, Spec{Command: echoCommand(t), Hello: []byte("allow"), Class: class})
	if err != nil {
		t.Fatal(err)
	}
	if c := Classes()[class]; c.Started != 1 || c.Alive != 1 || c.Ended[ReasonOutput] != 0 {
		t.Fatalf("after the start: %+v, want 1 started and alive, none ended", c)
	}
	_, _, keep, err := p.Call(context.Background(), Exchange{Frame: 'C', Payload: []byte("too long"),
		Limits: Limits{Timeout: 30 * time.Second, MaxOutput: 2}, ExitMemory: -1})
	if keep || !errors.Is(err, ErrOutputTooLarge) || ReasonOf(err) != ReasonOutput {
		t.Fatalf("a result over the limit: keep %v, %v (reason %q)", keep, err, ReasonOf(err))
	}
	<-p.Exited()
	c := Classes()[class]
	if c.Started != 1 || c.Alive != 0 || c.Ended[ReasonOutput] != 1 || c.Ended[ReasonTime] != 0 || len(c.Ended) != len(reasons) {
		t.Fatalf("after the kill: %+v, want 1 started, none alive, 1 ended for its output", c)
	}
	if ReasonOf(errors.New("not a call's")) != "" {
		t.Fatal("an error of no call has a reason")
	}
}
