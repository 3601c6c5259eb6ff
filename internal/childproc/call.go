package childproc

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// The frames that end a call, in every payload's protocol: the result,
// and the child's report of an error, whose payload the payload decodes.
const (
	FrameResult = 'O'
	FrameError  = 'E'
)

// Exchange is one call's conversation with a child: the call frame, then
// the child's frames until a result or an error frame.
type Exchange struct {
	Frame   byte // the call frame's type
	Payload []byte
	// Limits are the call's: the child is killed when Timeout passes (or
	// the caller's context ends); a result over MaxOutput is refused;
	// Memory is quoted when the child dies for lack of it.
	Limits Limits
	// Limit bounds the other frames the child may send, by type (zero:
	// MaxControlFrame).
	Limit func(typ byte) int
	// Serve handles every other frame: log lines, requests to the host.
	// An error ends the call and the child.
	Serve func(typ byte, payload []byte) error
	// Spin is how long to poll for each answer before blocking in a read
	// (Spin).
	Spin time.Duration
	// ExitMemory is the exit code by which the payload's child says it
	// ran out of memory; -1: none.
	ExitMemory int
}

// Call runs one exchange with p. It returns the result, or the payload of
// the child's error frame (the child survived and said why), or a
// *CallError when the child was killed, died or broke the protocol; keep
// reports whether p may serve another call.
func (p *Process) Call(ctx context.Context, x Exchange) (result, errFrame []byte, keep bool, err error) {
	start := time.Now()
	stop := p.arm(ctx, x.Limits.Timeout)
	if err := WriteFrame(p.W, x.Frame, x.Payload); err != nil {
		return p.answered(ctx, x, start, stop, 0, nil, fmt.Errorf("%w: %w", errNotSent, err))
	}
	typ, payload, err := p.answer(x)
	return p.answered(ctx, x, start, stop, typ, payload, err)
}

// Queued is one call of a batch (CallBatch).
type Queued struct {
	Ctx context.Context
	Exchange
	// Begin, if set, is called when the child starts the call (as the
	// call before it answered) and says whether its caller still waits
	// for it; if not, the call runs under its own time limit only, as
	// the caller's context no longer matters.
	Begin func() bool
	// End is given the call's outcome, as Call returns it, as soon as it
	// is known: a call the child never started (it died or was killed
	// during an earlier call of the batch) ends with a *CallError whose
	// NotSent is true, safe to run on another child.
	End func(result, errFrame []byte, keep bool, err error)
}

// CallBatch writes the call frames of several calls to p in one write
// and reads the child's answers, which come in order: the child runs the
// calls one at a time, each as soon as the one before it answered, so each
// call's limits run from the answer before it (the first's from now). A
// child then wakes once for the batch rather than once per call. Each
// call's End is called in turn; CallBatch reports whether p may serve
// another call. The frames of a batch must fit in the pipe's buffer
// together (a few tens of KiB), as the child answers while they are
// written.
//
// hold is how long after its last write the child may keep back the
// answers of calls that sent it nothing else, while it runs the calls
// behind them, to send several answers in one write (and wake this
// process once for them). A call's time limit is then armed hold later,
// so that the call running when it fires has run for at least its own
// limit: a call overrunning its limit is stopped within hold of it. When
// the child is killed or dies, a call that sent nothing may have been
// answered, its answer lost with the process, and the one at fault may be
// a later one; such calls end with a *CallError whose Alone is true: none
// of them reached outside the child, and each is safe to run again, on
// its own, where the one at fault shows.
func (p *Process) CallBatch(calls []Queued, hold time.Duration) (keep bool) {
	start := time.Now()
	first := calls[0]
	stop := p.arm(first.Ctx, first.Limits.Timeout+hold)
	for _, q := range calls {
		BufferFrame(p.W, q.Frame, q.Payload)
	}
	err := p.W.Flush()
	for i, q := range calls {
		ctx := q.Ctx
		if i > 0 {
			start = time.Now()
			if q.Begin != nil && !q.Begin() {
				ctx = context.WithoutCancel(ctx)
			}
			stop = p.arm(ctx, q.Limits.Timeout+hold)
		}
		var typ byte
		var payload []byte
		served := p.served
		if err != nil {
			err = fmt.Errorf("%w: %w", errNotSent, err)
		} else {
			typ, payload, err = p.answer(q.Exchange)
		}
		result, errFrame, keep, err := p.answered(ctx, q.Exchange, start, stop, typ, payload, err)
		if keep {
			q.End(result, errFrame, keep, err)
			continue
		}
		// The child is gone. With answers held back, this call may have
		// been answered and a later one be at fault (see above), unless
		// it sent something (the child sends every answer held before
		// anything else), its caller left, or its own answer came.
		var ce *CallError
		unanswered := hold > 0 && errors.As(err, &ce) && p.served == served &&
			ce.Sentinel != ErrCanceled && ce.Sentinel != ErrOutputTooLarge && i < len(calls)-1
		if unanswered {
			err = &CallError{Limits: q.Limits, Err: errUnanswered, Exit: ce.Exit}
		}
		q.End(result, errFrame, keep, err)
		p.endBatch(calls[i+1:], hold > 0)
		return false
	}
	return true
}

// endBatch ends the calls of a batch after the one whose failure killed
// the child. The child may have gone on to some of them (when it had
// answered that one: a result over its limit, or one that came as the
// deadline passed, or when it held answers back), but none of their frames
// was read: none of their requests to the host was served, so nothing of
// them reached outside the child, and they are safe to run again on
// another; on their own if the child held answers back (held), as the one
// at fault may be among them.
func (p *Process) endBatch(rest []Queued, held bool) {
	exit := p.ExitSummary() + p.StderrSummary()
	why := errNotStarted
	if held {
		why = errUnanswered
	}
	for _, q := range rest {
		q.End(nil, nil, false, &CallError{Limits: q.Limits, Err: why, Exit: exit})
	}
}

// arm kills p when a call's time is up, or its caller's context ends; the
// function returned disarms it and reports whether it had not fired.
func (p *Process) arm(ctx context.Context, timeout time.Duration) func() bool {
	// A timer and the caller's context, each on its own: a context with
	// the timeout would cost a call another timer and a cancel context.
	timer := time.AfterFunc(timeout, p.Kill)
	stop := context.AfterFunc(ctx, p.Kill)
	return func() bool {
		timerStopped, ctxStopped := timer.Stop(), stop()
		return timerStopped && ctxStopped
	}
}

// answered is a call's outcome from its answer (typ, payload) or the
// error that came instead.
func (p *Process) answered(ctx context.Context, x Exchange, start time.Time, stop func() bool, typ byte, payload []byte, err error) (result, errFrame []byte, keep bool, _ error) {
	killed := !stop()
	switch {
	case err == nil && typ == FrameResult:
		// A result that came as the deadline passed stands; the child,
		// killed, does not.
		return payload, nil, !killed, nil
	case err == nil && !killed:
		return nil, payload, true, nil
	}
	p.Kill()
	<-p.exited
	ce := &CallError{Elapsed: time.Since(start).Round(time.Millisecond), Limits: x.Limits, Err: err, Exit: p.ExitSummary() + p.StderrSummary()}
	switch {
	case killed && errors.Is(ctx.Err(), context.Canceled):
		ce.Sentinel = ErrCanceled
	case killed && ctx.Err() != nil && CallerFirst(ctx, start, x.Limits.Timeout):
		ce.Sentinel, ce.callerDeadline = ErrTimeout, true
	case killed:
		ce.Sentinel = ErrTimeout
	case errors.Is(err, errResultTooLarge):
		ce.Sentinel = ErrOutputTooLarge
	case p.OutOfMemory(x.ExitMemory):
		ce.Sentinel = ErrMemoryLimit
	}
	p.counts.end(ReasonOf(ce))
	return nil, nil, false, ce
}

// CallerFirst reports whether the caller's deadline, not the call's own
// time limit of timeout, ended the call started at start.
func CallerFirst(ctx context.Context, start time.Time, timeout time.Duration) bool {
	deadline, ok := ctx.Deadline()
	return ok && deadline.Before(start.Add(timeout))
}

var errResultTooLarge = errors.New("result frame over the output limit")

// answer reads the child's frames of a call until its answer.
func (p *Process) answer(x Exchange) (byte, []byte, error) {
	limit := func(typ byte) int {
		switch {
		case typ == FrameResult:
			return x.Limits.MaxOutput
		case x.Limit != nil:
			if n := x.Limit(typ); n > 0 {
				return n
			}
		}
		return MaxControlFrame
	}
	for {
		if x.Spin > 0 {
			p.Spin(x.Spin)
		}
		typ, payload, err := ReadFrame(p.R, limit)
		switch {
		case typ == FrameResult && errors.Is(err, ErrFrameTooLarge):
			// The child should have sent an error instead: it is not
			// trusted further.
			return 0, nil, errResultTooLarge
		case err != nil:
			return 0, nil, err
		case typ == FrameResult || typ == FrameError:
			return typ, payload, nil
		case x.Serve == nil:
			return 0, nil, fmt.Errorf("unexpected %q frame during a call", typ)
		}
		p.served++
		if err := x.Serve(typ, payload); err != nil {
			return 0, nil, err
		}
	}
}

// errNotSent is a call the child never received: its pipe was already
// broken (it died while idle). Running the call on another child is safe.
var errNotSent = errors.New("the call could not be sent to its process")

// errNotStarted is a call of a batch the child died, or was killed,
// before it answered an earlier one: none of its requests to the host was
// served (endBatch), so running it on another child is safe.
var errNotStarted = errors.New("the process ended before the call's turn in its batch")

// errUnanswered is a call of a batch whose child held answers back and
// ended before this call's answer came: the call sent nothing else, so it
// may have run, or be the one that overran, but nothing of it reached
// outside the child (CallBatch).
var errUnanswered = errors.New("the process ended before the call's answer, which it may have held back, came")

// CallError is a call whose child was killed, died, or broke the protocol.
// Its Sentinel says which of ErrTimeout, ErrCanceled, ErrOutputTooLarge
// and ErrMemoryLimit it is, or is nil for a crash, which the payload wraps
// in its own sentinel.
type CallError struct {
	Sentinel error
	Elapsed  time.Duration
	Limits   Limits
	Err      error  // what the exchange saw: a broken pipe, a bad frame
	Exit     string // how the child ended, and the first line of its stderr

	callerDeadline bool
}

// NotSent reports whether the call never reached the child, or never
// started in it, so that running it on another is safe.
func (e *CallError) NotSent() bool {
	return e.Sentinel == nil && (errors.Is(e.Err, errNotSent) || errors.Is(e.Err, errNotStarted) || e.Alone())
}

// Alone reports whether the call may have run but nothing of it reached
// outside its child, and the fault that ended the child may be its or
// another's of its batch: it is safe to run again, and should run on its
// own, so that if the fault is its, it shows as its (CallBatch).
func (e *CallError) Alone() bool { return e.Sentinel == nil && errors.Is(e.Err, errUnanswered) }

func (e *CallError) Unwrap() error { return e.Sentinel }

func (e *CallError) Error() string {
	switch {
	case e.Sentinel == ErrCanceled:
		return fmt.Sprintf("%v: canceled by the caller after %s; its process was stopped", e.Sentinel, e.Elapsed)
	case e.callerDeadline:
		return fmt.Sprintf("%v: the caller's deadline passed after %s, before the function finished: give the call more time", e.Sentinel, e.Elapsed)
	case e.Sentinel == ErrTimeout:
		return fmt.Sprintf("%v: the function ran past its time limit of %s and was stopped: make it faster, or deploy it with a longer timeout",
			e.Sentinel, e.Limits.Timeout)
	case e.Sentinel == ErrOutputTooLarge:
		return fmt.Sprintf("%v: the function returned more than its limit of %s: return less, or deploy it with a higher output limit",
			e.Sentinel, FormatBytes(int64(e.Limits.MaxOutput)))
	case e.Sentinel == ErrMemoryLimit:
		return fmt.Sprintf("%v: the function went past its %s memory limit and its process was stopped: make it keep less data, or deploy it with a larger memory limit",
			e.Sentinel, FormatBytes(e.Limits.Memory))
	case e.NotSent():
		return fmt.Sprintf("%v; retry it", e.Err)
	}
	return fmt.Sprintf("the function's process ended during the call (%s)", e.Exit)
}
