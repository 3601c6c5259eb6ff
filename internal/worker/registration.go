package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
)

// registerLoop keeps the worker registered until ctx ends: it registers,
// heartbeats at the interval the pool asks for, and registers again when the
// pool says the lease is gone (expired while the pool or etcd was down, or
// after a restart of either).
func (s *Server) registerLoop(ctx context.Context) {
	backoff := newBackoff(100*time.Millisecond, 2*time.Second)
	for ctx.Err() == nil {
		if s.needsEnrolment() {
			if err := s.enroll(ctx); err != nil {
				if s.Err() != nil {
					return // the data directory is another network's
				}
				s.registrationFailed(ctx, "enrolling with the pool", err, backoff)
				continue
			}
		}
		client := v1.NewRegistryServiceClient(s.poolConn())
		select {
		case <-s.changed: // this registration carries the current functions
		default:
		}
		address := s.cfg.Advertise
		if address == "" {
			address = s.lis.Addr().String()
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var runtimes []v1.Runtime
		if s.cfg.Sandbox != nil {
			runtimes = s.cfg.Sandbox.Runtimes()
		}
		resp, err := client.Register(rctx, &v1.RegisterRequest{
			Runtimes:    runtimes,
			StoresFiles: s.shards != nil,
			WorkerId:    s.cfg.ID,
			Address:     address,
			Functions:   s.specs(),
			Labels:      s.cfg.Labels,
			Version:     s.cfg.Version,
			ClusterId:   s.network,
		})
		cancel()
		if status.Code(err) == codes.FailedPrecondition && s.network != "" {
			s.refuse(errors.New(status.Convert(err).Message()))
			return
		}
		if err == nil {
			err = s.claimDataDir(resp.ClusterId)
			if s.Err() != nil {
				return
			}
		}
		if err != nil {
			if c := status.Code(err); !s.cfg.Insecure && (c == codes.PermissionDenied || c == codes.Unauthenticated) {
				// The pool no longer takes this certificate (revoked, or
				// the id was enrolled again): enrol again, which says why
				// if it cannot be mended.
				s.id.cert.Clear()
			}
			s.registrationFailed(ctx, "registering with the pool", err, backoff)
			continue
		}
		backoff.reset()
		s.lastRefusal.Store(nil)
		s.lease.Store(resp.LeaseId)
		s.registeredOnce.Do(func() { close(s.registered) })
		s.log.Info("registered with the pool", "pool", s.cfg.PoolAddr, "address", resp.Address, "lease", resp.LeaseId)
		s.heartbeat(ctx, client, resp)
	}
}

// registrationFailed logs a failed enrolment or registration, keeps a
// refusal for WaitRegistered, and waits before the next try.
func (s *Server) registrationFailed(ctx context.Context, what string, err error, backoff *backoff) {
	level := s.log.Debug
	if c := status.Code(err); c != codes.Unavailable && c != codes.DeadlineExceeded && c != codes.Canceled {
		level = s.log.Error // bad token or bad request: the operator must act
		s.lastRefusal.Store(&err)
	}
	level(what, "pool", s.cfg.PoolAddr, "err", err)
	backoff.wait(ctx)
}

// claimDataDir records the network's identity in the data directory at the
// first registration, and refuses a pool of another network (one too old to
// check it itself).
func (s *Server) claimDataDir(clusterID string) error {
	switch {
	case s.cfg.DataDir == "" || clusterID == "" || clusterID == s.network:
		return nil
	case s.network != "":
		s.refuse(fmt.Errorf("worker %s: the data directory %s belongs to network %s, and the pool at %s serves network %s; give the worker a data directory of its own (--data-dir)",
			s.cfg.ID, s.cfg.DataDir, s.network, s.cfg.PoolAddr, clusterID))
		return s.refusal
	}
	if err := writeNetwork(s.cfg.DataDir, clusterID); err != nil {
		return fmt.Errorf("recording the network in the data directory: %w", err)
	}
	s.network = clusterID
	s.log.Info("data directory now belongs to the network", "dir", s.cfg.DataDir, "cluster_id", clusterID)
	return nil
}

// heartbeat renews the lease until the registration must be redone or ctx
// ends.
func (s *Server) heartbeat(ctx context.Context, client v1.RegistryServiceClient, reg *v1.RegisterResponse) {
	interval := time.Duration(reg.HeartbeatIntervalMs) * time.Millisecond
	if interval <= 0 {
		interval = time.Second
	}
	// A heartbeat may take as long as the lease has left: a slow pool or
	// etcd is still in time until then, and a fixed timeout shorter than
	// that would let the lease lapse under load alone.
	ttl := time.Duration(reg.LeaseTtlMs) * time.Millisecond
	expires := time.Now().Add(ttl)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.changed:
			return // functions changed: register them
		case <-tick.C:
		}
		var compiled []string
		if s.cfg.Sandbox != nil {
			compiled = s.cfg.Sandbox.Compiled()
		}
		sent := time.Now()
		hctx, cancel := context.WithDeadline(ctx, latest(expires, sent.Add(interval)))
		_, err := client.Heartbeat(hctx, &v1.HeartbeatRequest{
			WorkerId:        s.cfg.ID,
			LeaseId:         reg.LeaseId,
			Inflight:        s.inflight.Load(),
			CallsTotal:      s.completed.Load(),
			CompiledModules: compiled,
		})
		cancel()
		switch status.Code(err) {
		case codes.OK:
			expires = sent.Add(ttl)
		case codes.NotFound:
			s.log.Warn("lease lost; registering again", "err", err)
			return
		default:
			// The pool or etcd is down: keep trying; if the lease outlives
			// the outage nothing else is needed.
			s.log.Debug("heartbeat failed", "err", err)
		}
	}
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

type backoff struct {
	min, max, cur time.Duration
}

func newBackoff(min, max time.Duration) *backoff { return &backoff{min: min, max: max, cur: min} }

func (b *backoff) reset() { b.cur = b.min }

func (b *backoff) wait(ctx context.Context) {
	t := time.NewTimer(b.cur)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	b.cur = min(2*b.cur, b.max)
}
