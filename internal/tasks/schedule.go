package tasks

import (
	"context"
	"fmt"
	"time"

	"github.com/robfig/cron/v3"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"google.golang.org/protobuf/proto"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/names"
)

// cronParser reads five-field expressions (UTC) and descriptors (@hourly).
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// nextTick returns the first tick of sc strictly after t.
func nextTick(sc *v1.Schedule, t time.Time) (time.Time, error) {
	if sc.EveryMs > 0 {
		every := time.Duration(sc.EveryMs) * time.Millisecond
		// Ticks are anchored at the schedule's creation, so replicas agree.
		start := time.UnixMilli(sc.CreatedAtMs)
		if t.Before(start) {
			return start, nil
		}
		n := t.Sub(start)/every + 1
		return start.Add(n * every), nil
	}
	spec, err := cronParser.Parse(sc.Cron)
	if err != nil {
		return time.Time{}, err
	}
	return spec.Next(t.UTC()), nil
}

// PutSchedule makes or replaces owner's schedule sc.Name.
func (s *Store) PutSchedule(ctx context.Context, owner string, sc *v1.Schedule) (*v1.Schedule, error) {
	sc = proto.Clone(sc).(*v1.Schedule)
	if err := names.Function(sc.Name); err != nil {
		return nil, invalidf("schedule name: %w", err)
	}
	if err := names.Function(sc.FunctionName); err != nil {
		return nil, invalidf("function: %w", err)
	}
	switch {
	case (sc.EveryMs != 0) == (sc.Cron != ""):
		return nil, invalidf("give a schedule either an interval (every) or a cron expression, not %s", map[bool]string{true: "both", false: "neither"}[sc.EveryMs != 0])
	case sc.EveryMs < 0 || (sc.EveryMs > 0 && sc.EveryMs < 1000):
		return nil, invalidf("interval %d ms: the shortest is one second", sc.EveryMs)
	case sc.Missed < 0 || sc.Missed > v1.MissedTicks_MISSED_TICKS_SKIP:
		return nil, invalidf("missed-ticks policy %d: give one or skip", sc.Missed)
	}
	if sc.Cron != "" {
		if _, err := cronParser.Parse(sc.Cron); err != nil {
			return nil, invalidf("cron expression %q: %v (five fields: minute hour day-of-month month day-of-week, or @hourly, @daily...)", sc.Cron, err)
		}
	}
	if sc.Retry == nil {
		sc.Retry = &v1.RetryPolicy{}
	}
	if err := s.checkPolicy(sc.Retry, sc.TimeoutMs); err != nil {
		return nil, err
	}
	if sc.Missed == v1.MissedTicks_MISSED_TICKS_UNSPECIFIED {
		sc.Missed = v1.MissedTicks_MISSED_TICKS_ONE
	}
	now := time.Now()
	sc.Owner, sc.CreatedAtMs, sc.LastRunAtMs, sc.LastTaskId = owner, now.UnixMilli(), 0, ""
	next, err := nextTick(sc, now)
	if err != nil {
		return nil, invalidf("%v", err)
	}
	sc.NextRunAtMs = next.UnixMilli()
	val, err := proto.Marshal(sc)
	if err != nil {
		return nil, err
	}
	if _, err := s.cli.Put(ctx, s.k.schedule(owner, sc.Name), string(val)); err != nil {
		return nil, fmt.Errorf("recording the schedule in etcd: %w", err)
	}
	return sc, nil
}

// ListSchedules returns owner's schedules by name.
func (s *Store) ListSchedules(ctx context.Context, owner string) ([]*v1.Schedule, error) {
	resp, err := s.cli.Get(ctx, s.k.schedules()+owner+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("listing schedules in etcd: %w", err)
	}
	var out []*v1.Schedule
	for _, kv := range resp.Kvs {
		sc := &v1.Schedule{}
		if proto.Unmarshal(kv.Value, sc) == nil {
			out = append(out, sc)
		}
	}
	return out, nil
}

// DeleteSchedule removes owner's schedule name; the tasks it submitted stay.
func (s *Store) DeleteSchedule(ctx context.Context, owner, name string) error {
	if err := names.Function(name); err != nil {
		return invalidf("schedule name: %w", err)
	}
	resp, err := s.cli.Delete(ctx, s.k.schedule(owner, name))
	if err != nil {
		return fmt.Errorf("deleting the schedule in etcd: %w", err)
	}
	if resp.Deleted == 0 {
		return fmt.Errorf("%w: no schedule %q (taskworker schedule ls)", ErrNotFound, name)
	}
	return nil
}

// fire submits the task of sc's due tick, and moves sc to its next tick,
// in one transaction that compares sc's revision: of the replicas that try
// one tick, exactly one succeeds. Missed ticks (the tick is more than one
// interval late) run once or are skipped, as sc says.
func (s *Store) fire(ctx context.Context, sc *v1.Schedule, rev int64, now time.Time) error {
	tick := time.UnixMilli(sc.NextRunAtMs)
	next, err := nextTick(sc, now)
	if err != nil {
		return err
	}
	following, _ := nextTick(sc, tick)
	late := following.Before(now) // at least one later tick was missed too
	var ops []clientv3.Op
	if !late || sc.Missed != v1.MissedTicks_MISSED_TICKS_SKIP {
		key := fmt.Sprintf("schedule/%s/%d", sc.Name, tick.UnixMilli())
		t, tops, err := s.newTask(sc.Owner, sc.FunctionName, sc.Args, sc.Retry, sc.TimeoutMs, key, now)
		if err != nil {
			return err
		}
		ops = tops
		sc.LastRunAtMs, sc.LastTaskId = tick.UnixMilli(), t.Id
	}
	sc.NextRunAtMs = next.UnixMilli()
	val, err := proto.Marshal(sc)
	if err != nil {
		return err
	}
	sk := s.k.schedule(sc.Owner, sc.Name)
	ops = append(ops, clientv3.OpPut(sk, string(val)))
	_, err = s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(sk), "=", rev)).Then(ops...).Commit()
	return err
}

// schedule fires due schedules while this replica is the elected one, and
// campaigns again when it loses the election, until ctx ends.
func (r *Runner) schedule(ctx context.Context) {
	for ctx.Err() == nil {
		sess, err := concurrency.NewSession(r.s.cli, concurrency.WithTTL(max(int(r.s.cfg.LeaseTTL/time.Second), 1)), concurrency.WithContext(ctx))
		if err != nil {
			sleep(ctx, time.Second)
			continue
		}
		e := concurrency.NewElection(sess, r.s.k.p+"scheduler")
		if err := e.Campaign(ctx, r.s.cfg.Replica); err == nil {
			r.log.Info("this replica fires the schedules")
			r.fireWhileLeader(ctx, sess)
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_ = e.Resign(rctx)
			cancel()
		}
		sess.Close()
	}
}

func (r *Runner) fireWhileLeader(ctx context.Context, sess *concurrency.Session) {
	for {
		wait := time.Second
		resp, err := r.s.cli.Get(ctx, r.s.k.schedules(), clientv3.WithPrefix())
		if err == nil {
			now := time.Now()
			for _, kv := range resp.Kvs {
				sc := &v1.Schedule{}
				if proto.Unmarshal(kv.Value, sc) != nil {
					continue
				}
				at := time.UnixMilli(sc.NextRunAtMs)
				if !at.After(now) {
					if err := r.s.fire(ctx, sc, kv.ModRevision, now); err != nil {
						r.log.Warn("firing a schedule failed; trying again", "schedule", sc.Name, "owner", sc.Owner, "err", err)
					}
					continue
				}
				wait = min(wait, time.Until(at))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-sess.Done():
			return
		case <-time.After(wait):
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
