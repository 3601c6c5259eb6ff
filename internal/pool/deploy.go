package pool

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/names"
	"github.com/hivemind/taskworker/internal/serving"
)

// ModuleChecker checks a module before it is deployed: that it loads,
// exports the function and imports only what workers provide, so a bad
// module fails at deploy, not at its first call.
type ModuleChecker interface {
	CheckModule(ctx context.Context, runtime v1.Runtime, module []byte, export string) error
}

// LimitsConfig holds the operator's defaults and maximums for deployed
// functions.
type LimitsConfig struct {
	Default, Max *v1.Limits
}

// DefaultLimits returns the limits a deploy gets when it names none, and the
// most it may ask for.
func DefaultLimits() LimitsConfig {
	return LimitsConfig{
		Default: &v1.Limits{MemoryBytes: 64 << 20, TimeoutMs: 5_000, Concurrency: 4, MaxInputBytes: 1 << 20, MaxOutputBytes: 1 << 20},
		Max:     &v1.Limits{MemoryBytes: 1 << 30, TimeoutMs: 300_000, Concurrency: 64, MaxInputBytes: 4 << 20, MaxOutputBytes: 8 << 20},
	}
}

// resolve fills a request's zero limits with defaults and refuses any over
// the maximum.
func (c LimitsConfig) resolve(req *v1.Limits) (*v1.Limits, error) {
	out := proto.Clone(c.Default).(*v1.Limits)
	if req == nil {
		return out, nil
	}
	type field struct {
		name      string
		got, max  int64
		set       func(int64)
		flagHint  string
		unitBytes bool
	}
	for _, f := range []field{
		{"memory", req.MemoryBytes, c.Max.MemoryBytes, func(v int64) { out.MemoryBytes = v }, "--memory", true},
		{"timeout", req.TimeoutMs, c.Max.TimeoutMs, func(v int64) { out.TimeoutMs = v }, "--timeout", false},
		{"concurrency", int64(req.Concurrency), int64(c.Max.Concurrency), func(v int64) { out.Concurrency = int32(v) }, "--concurrency", false},
		{"input size", req.MaxInputBytes, c.Max.MaxInputBytes, func(v int64) { out.MaxInputBytes = v }, "--max-input", true},
		{"output size", req.MaxOutputBytes, c.Max.MaxOutputBytes, func(v int64) { out.MaxOutputBytes = v }, "--max-output", true},
	} {
		switch {
		case f.got < 0:
			return nil, fmt.Errorf("%s %d is negative", f.name, f.got)
		case f.got > f.max:
			if f.name == "timeout" {
				return nil, fmt.Errorf("timeout %s is over the operator's maximum of %s; lower --timeout", humanDuration(f.got), humanDuration(f.max))
			}
			unit := ""
			if f.unitBytes {
				unit = " bytes"
			}
			return nil, fmt.Errorf("%s %d%s is over the operator's maximum of %d%s; lower %s", f.name, f.got, unit, f.max, unit, f.flagHint)
		case f.got > 0:
			f.set(f.got)
		}
	}
	return out, nil
}

// humanDuration writes milliseconds as people write durations: 10m, 1m30s,
// 2.5s, 250ms.
func humanDuration(ms int64) string {
	d := (time.Duration(ms) * time.Millisecond).String()
	for _, zero := range []string{"m0s", "h0m"} {
		d = strings.Replace(d, zero, zero[:1], 1)
	}
	return d
}

// deployments is every pool's view of the current version of each deployed
// function, kept by a watch.
type deployments struct {
	current atomic.Pointer[map[string]*v1.Deployment]

	mu      sync.Mutex
	rev     int64         // the etcd revision current reflects
	changed chan struct{} // closed and replaced when rev moves
}

// waitFor waits until this pool's view includes etcd revision rev, so that
// a deploy, rollback or undeploy is in effect on the pool that answered it
// before the caller hears so.
func (d *deployments) waitFor(ctx context.Context, rev int64) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for {
		d.mu.Lock()
		at, changed := d.rev, d.changed
		d.mu.Unlock()
		if at >= rev {
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return // the watch lags; other pools are eventual anyway
		}
	}
}

func (d *deployments) get(name string) *v1.Deployment {
	return (*d.current.Load())[name]
}

func (d *deployments) all() map[string]*v1.Deployment { return *d.current.Load() }

func (d *deployments) run(ctx context.Context, cli *clientv3.Client, prefix string, ready chan<- struct{}) {
	empty := map[string]*v1.Deployment{}
	d.current.Store(&empty)
	d.mu.Lock()
	d.changed = make(chan struct{})
	d.mu.Unlock()
	watchPrefix(ctx, cli, prefix, func(kvs []kv, reset bool, rev int64) {
		next := map[string]*v1.Deployment{}
		if !reset {
			for k, v := range *d.current.Load() {
				next[k] = v
			}
		}
		for _, e := range kvs {
			name := strings.TrimPrefix(e.key, prefix)
			if e.value == nil {
				delete(next, name)
				continue
			}
			dep := &v1.Deployment{}
			if proto.Unmarshal(e.value, dep) == nil {
				next[name] = dep
			}
		}
		d.current.Store(&next)
		d.mu.Lock()
		if rev > d.rev {
			d.rev = rev
			close(d.changed)
			d.changed = make(chan struct{})
		}
		d.mu.Unlock()
	}, ready)
}

// deployService stores and switches deployed functions.
type deployService struct {
	v1.UnimplementedDeployServiceServer
	cli     *clientv3.Client
	prefix  string // the deploy/ prefix
	cfg     Config
	modules *moduleStore
	reg     *registry
	checker ModuleChecker
	deploys *deployments
}

// The keys of a deployed function: deploy/current/<name> and
// deploy/versions/<name>/<version>. They are exact only because a function
// name cannot contain '/' (names.Function): versions/<name>/ is then a
// prefix of no other name's versions, not even of a name that <name> is a
// prefix of (versions/reports/ against versions/reports2/).
func (s *deployService) currentKey(name string) string { return s.prefix + "current/" + name }
func (s *deployService) versionsKey(name string) string {
	return s.prefix + "versions/" + name + "/"
}
func (s *deployService) versionKey(name string, v int64) string {
	return fmt.Sprintf("%s%020d", s.versionsKey(name), v)
}

var wasmMagic = []byte("\x00asm")

func (s *deployService) Deploy(ctx context.Context, req *v1.DeployRequest) (*v1.DeployResponse, error) {
	user, err := checkUser(ctx, req.UserId)
	if err != nil {
		return nil, err
	}
	if err := names.Function(req.Name); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if len(req.Module) == 0 {
		return nil, status.Error(codes.InvalidArgument, "the module is empty")
	}
	if len(req.Module) > s.cfg.MaxModuleBytes {
		return nil, status.Errorf(codes.ResourceExhausted, "the module is %d bytes; the pool accepts at most %d", len(req.Module), s.cfg.MaxModuleBytes)
	}
	export := req.Export
	if export == "" {
		export = req.Name
	}
	switch req.Runtime {
	case v1.Runtime_RUNTIME_WASM:
		if !bytes.HasPrefix(req.Module, wasmMagic) {
			return nil, status.Error(codes.InvalidArgument, "the module is not WebAssembly (no \\0asm header); deploy a .wasm file, or a .star script with the Starlark runtime")
		}
	case v1.Runtime_RUNTIME_STARLARK:
		if !utf8.Valid(req.Module) {
			return nil, status.Error(codes.InvalidArgument, "the Starlark script is not UTF-8 text")
		}
	default:
		return nil, status.Errorf(codes.InvalidArgument, "runtime %s: use wasm or starlark", req.Runtime)
	}
	limits, err := s.cfg.DeployLimits.resolve(req.Limits)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%s: %v", req.Name, err)
	}
	for _, w := range s.reg.list() {
		for _, f := range w.Functions {
			if f.Name == req.Name {
				return nil, status.Errorf(codes.AlreadyExists, "%q is a native function served by worker %s; choose another name", req.Name, w.WorkerId)
			}
		}
	}
	if s.checker != nil {
		if err := s.checker.CheckModule(ctx, req.Runtime, req.Module, export); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "%s: the module cannot be deployed: %v", req.Name, err)
		}
	}
	dep := &v1.Deployment{
		Name:         req.Name,
		Runtime:      req.Runtime,
		ModuleSha256: moduleSHA256(req.Module),
		ModuleSize:   int64(len(req.Module)),
		Export:       export,
		Limits:       limits,
		Idempotent:   req.Idempotent,
		Capabilities: req.Capabilities,
		Owner:        user,
		CreatedAtMs:  time.Now().UnixMilli(),
	}
	for {
		// (Re)store the module on every attempt: an undeploy elsewhere may
		// have dropped it since, and the transaction below insists on it.
		if _, err := s.modules.put(ctx, req.Module); err != nil {
			return nil, serving.EtcdError(err)
		}
		cur, err := s.cli.Get(ctx, s.currentKey(req.Name))
		if err != nil {
			return nil, serving.EtcdError(err)
		}
		var rev int64
		if len(cur.Kvs) > 0 {
			rev = cur.Kvs[0].ModRevision
			old := &v1.Deployment{}
			if err := proto.Unmarshal(cur.Kvs[0].Value, old); err == nil {
				if err := mayChange(ctx, old); err != nil {
					return nil, err
				}
			}
		}
		last, err := s.cli.Get(ctx, s.versionsKey(req.Name), clientv3.WithLastKey()...)
		if err != nil {
			return nil, serving.EtcdError(err)
		}
		dep.Version = 1
		if len(last.Kvs) > 0 {
			prev := &v1.Deployment{}
			if err := proto.Unmarshal(last.Kvs[0].Value, prev); err == nil {
				dep.Version = prev.Version + 1
			}
		}
		b, _ := proto.Marshal(dep)
		txn, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(s.currentKey(req.Name)), "=", rev),
				clientv3.Compare(clientv3.CreateRevision(s.versionKey(req.Name, dep.Version)), "=", 0),
				clientv3.Compare(clientv3.CreateRevision(s.modules.metaKey(dep.ModuleSha256)), ">", 0)).
			Then(clientv3.OpPut(s.currentKey(req.Name), string(b)), clientv3.OpPut(s.versionKey(req.Name, dep.Version), string(b))).
			Commit()
		if err != nil {
			return nil, serving.EtcdError(err)
		}
		if txn.Succeeded {
			s.deploys.waitFor(ctx, txn.Header.Revision)
			return &v1.DeployResponse{Deployment: dep}, nil
		}
		// A concurrent deploy of the same name won, or an undeploy dropped
		// the module: build on what is there now.
	}
}

// mayChange checks that the caller owns a deployed function (or is admin).
func mayChange(ctx context.Context, d *v1.Deployment) error {
	id := identityFrom(ctx)
	if id.Role == v1.Role_ROLE_ADMIN || id.User == d.Owner {
		return nil
	}
	return status.Errorf(codes.PermissionDenied, "%s was deployed by another user; choose another name", d.Name)
}

func (s *deployService) history(ctx context.Context, name string) (cur *v1.Deployment, rev int64, versions []*v1.Deployment, err error) {
	if err := names.Function(name); err != nil {
		return nil, 0, nil, status.Error(codes.InvalidArgument, err.Error())
	}
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(s.currentKey(name)),
		clientv3.OpGet(s.versionsKey(name), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend)),
	).Commit()
	if err != nil {
		return nil, 0, nil, serving.EtcdError(err)
	}
	curKvs := resp.Responses[0].GetResponseRange().Kvs
	if len(curKvs) == 0 {
		return nil, 0, nil, status.Errorf(codes.NotFound, "no deployed function %q", name)
	}
	cur = &v1.Deployment{}
	if err := proto.Unmarshal(curKvs[0].Value, cur); err != nil {
		return nil, 0, nil, status.Errorf(codes.DataLoss, "%s: unreadable deployment: %v", name, err)
	}
	if err := mayChange(ctx, cur); err != nil {
		return nil, 0, nil, err
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		d := &v1.Deployment{}
		// The name check keeps out keys that a name with '/', stored before
		// names.Function refused it, put under this name's prefix.
		if proto.Unmarshal(kv.Value, d) == nil && d.Name == name {
			versions = append(versions, d)
		}
	}
	return cur, curKvs[0].ModRevision, versions, nil
}

func (s *deployService) History(ctx context.Context, req *v1.HistoryRequest) (*v1.HistoryResponse, error) {
	if _, err := checkUser(ctx, req.UserId); err != nil {
		return nil, err
	}
	cur, _, versions, err := s.history(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	return &v1.HistoryResponse{Versions: versions, CurrentVersion: cur.Version}, nil
}

func (s *deployService) Rollback(ctx context.Context, req *v1.RollbackRequest) (*v1.RollbackResponse, error) {
	if _, err := checkUser(ctx, req.UserId); err != nil {
		return nil, err
	}
	cur, rev, versions, err := s.history(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	var target *v1.Deployment
	for _, d := range versions { // newest first
		if req.Version == 0 && d.Version < cur.Version || req.Version != 0 && d.Version == req.Version {
			target = d
			break
		}
	}
	if target == nil {
		if req.Version == 0 {
			return nil, status.Errorf(codes.FailedPrecondition, "%s has no version before %d to roll back to", req.Name, cur.Version)
		}
		return nil, status.Errorf(codes.NotFound, "%s has no version %d (see `taskworker deploy history %s`)", req.Name, req.Version, req.Name)
	}
	b, _ := proto.Marshal(target)
	txn, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(s.currentKey(req.Name)), "=", rev)).
		Then(clientv3.OpPut(s.currentKey(req.Name), string(b))).Commit()
	if err != nil {
		return nil, serving.EtcdError(err)
	}
	if !txn.Succeeded {
		return nil, status.Errorf(codes.Aborted, "%s changed during the rollback; try again", req.Name)
	}
	s.deploys.waitFor(ctx, txn.Header.Revision)
	return &v1.RollbackResponse{Deployment: target}, nil
}

func (s *deployService) Undeploy(ctx context.Context, req *v1.UndeployRequest) (*v1.UndeployResponse, error) {
	if _, err := checkUser(ctx, req.UserId); err != nil {
		return nil, err
	}
	_, rev, versions, err := s.history(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	txn, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(s.currentKey(req.Name)), "=", rev)).
		Then(s.deleteOps(req.Name, versions)...).Commit()
	if err != nil {
		return nil, serving.EtcdError(err)
	}
	if !txn.Succeeded {
		return nil, status.Errorf(codes.Aborted, "%s changed during the undeploy; try again", req.Name)
	}
	s.deploys.waitFor(ctx, txn.Header.Revision)
	// Drop the modules no other deployment uses.
	for _, d := range versions {
		if err := s.dropIfUnused(ctx, d.ModuleSha256); err != nil {
			s.reg.log.Warn("removing an unused module", "module", d.ModuleSha256, "err", err)
		}
	}
	return &v1.UndeployResponse{}, nil
}

// deleteOps deletes a function's current key and exactly the versions
// history read: each by its own key, never by prefix.
func (s *deployService) deleteOps(name string, versions []*v1.Deployment) []clientv3.Op {
	ops := []clientv3.Op{clientv3.OpDelete(s.currentKey(name))}
	for _, d := range versions {
		ops = append(ops, clientv3.OpDelete(s.versionKey(name, d.Version)))
	}
	return ops
}

// dropIfUnused removes a module that no current or historical version of
// any deployment uses. The removal is conditional on nothing under deploy/
// having changed since the check, so a deploy of the same module that
// lands meanwhile keeps it (and a deploy that lands after the removal
// stores it again: its transaction requires the module).
func (s *deployService) dropIfUnused(ctx context.Context, sha string) error {
	resp, err := s.cli.Get(ctx, s.prefix, clientv3.WithPrefix())
	if err != nil {
		return err
	}
	for _, kv := range resp.Kvs {
		d := &v1.Deployment{}
		if proto.Unmarshal(kv.Value, d) == nil && d.ModuleSha256 == sha {
			return nil
		}
	}
	txn, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(s.prefix), "<", resp.Header.Revision+1).WithPrefix()).
		Then(s.modules.removeOp(sha)).Commit()
	if err != nil {
		return err
	}
	if !txn.Succeeded {
		return s.dropIfUnused(ctx, sha) // something was deployed meanwhile: look again
	}
	return nil
}
