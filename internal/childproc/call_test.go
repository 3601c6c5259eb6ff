//go:build linux && (amd64 || arm64)

package childproc

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestCallBatch sends calls to a child in one write and checks that each
// gets its own answer, in order, and that when one overruns its time limit
// the child is killed and the calls behind it are reported as never
// started, safe to run elsewhere. When the child may hold answers back
// (hold), a call that overran having sent nothing may instead have been
// answered, and one behind it be at fault: it and those behind it are to
// run again alone; one that sent a frame, or the batch's last, is at
// fault.
func TestCallBatch(t *testing.T) {
	type outcome struct {
		result   string
		sentinel error // of a *CallError
		notSent  bool
		alone    bool
	}
	const hold = 5 * time.Millisecond
	cases := []struct {
		name     string
		hold     time.Duration
		payloads []string
		want     []outcome
		keep     bool
	}{
		{"all answered", 0, []string{"a", "b", "c"},
			[]outcome{{result: "a"}, {result: "b"}, {result: "c"}}, true},
		{"the second overruns", 0, []string{"a", "hang", "c", "d"},
			[]outcome{{result: "a"}, {sentinel: ErrTimeout}, {notSent: true}, {notSent: true}}, false},
		{"the first overruns", 0, []string{"hang", "b"},
			[]outcome{{sentinel: ErrTimeout}, {notSent: true}}, false},
		{"all answered, answers held", hold, []string{"a", "b", "c"},
			[]outcome{{result: "a"}, {result: "b"}, {result: "c"}}, true},
		{"answers held, the second overruns", hold, []string{"a", "hang", "c", "d"},
			[]outcome{{result: "a"}, {notSent: true, alone: true}, {notSent: true, alone: true}, {notSent: true, alone: true}}, false},
		{"answers held, the last overruns", hold, []string{"a", "b", "hang"},
			[]outcome{{result: "a"}, {result: "b"}, {sentinel: ErrTimeout}}, false},
		{"answers held, one that sent a log line overruns", hold, []string{"a", "log+hang", "c"},
			[]outcome{{result: "a"}, {sentinel: ErrTimeout}, {notSent: true, alone: true}}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, _, _, err := startEcho(t, Spec{Command: echoCommand(t), Hello: []byte("allow"), Poll: true})
			if err != nil {
				t.Fatal(err)
			}
			var got []outcome
			calls := make([]Queued, len(c.payloads))
			for i, payload := range c.payloads {
				calls[i] = Queued{
					Ctx: context.Background(),
					Exchange: Exchange{Frame: 'C', Payload: []byte(payload),
						Limits: Limits{Timeout: 300 * time.Millisecond, MaxOutput: MaxControlFrame}, ExitMemory: -1,
						Serve: func(byte, []byte) error { return nil }},
					End: func(result, errFrame []byte, keep bool, err error) {
						o := outcome{result: string(result)}
						var ce *CallError
						if errors.As(err, &ce) {
							o.sentinel, o.notSent, o.alone = ce.Sentinel, ce.NotSent(), ce.Alone()
						} else if err != nil || errFrame != nil {
							t.Errorf("call %d: error frame %q, %v", i, errFrame, err)
						}
						got = append(got, o)
					},
				}
			}
			if keep := p.CallBatch(calls, c.hold); keep != c.keep {
				t.Errorf("CallBatch kept the child: %v, want %v", keep, c.keep)
			}
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Errorf("outcomes %v, want %v", got, c.want)
			}
			if c.keep {
				echo(t, p) // the child still serves
			} else if p.Alive() {
				t.Error("the child is alive after a call overran")
			}
		})
	}
}
