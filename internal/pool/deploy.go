package pool

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/egress"
	"github.com/hivemind/taskworker/internal/names"
	"github.com/hivemind/taskworker/internal/quota"
	"github.com/hivemind/taskworker/internal/secrets"
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
	secrets *secrets.Store
}

// The keys of user owner's function name:
//
//	deploy/current/<owner>/<name>              the current version
//	deploy/versions/<owner>/<name>/<version>   every version
//	deploy/grants/<owner>/<name>               the users it is granted to
//
// Neither a user nor a function name contains '/' (package names), so each
// key names one function, and versions/<owner>/<name>/ is the prefix of that
// function's versions only, never of another name that <name> is a prefix
// of (versions/bob/reports/ against versions/bob/reports2/), and
// versions/<owner>/ the prefix of that user's versions only.
func (s *deployService) currentKey(owner, name string) string {
	return s.prefix + "current/" + owner + "/" + name
}
func (s *deployService) grantsKey(owner, name string) string {
	return s.prefix + "grants/" + owner + "/" + name
}
func (s *deployService) userVersionsKey(owner string) string {
	return s.prefix + "versions/" + owner + "/"
}
func (s *deployService) versionsKey(owner, name string) string {
	return s.userVersionsKey(owner) + name + "/"
}
func (s *deployService) versionKey(owner, name string, v int64) string {
	return fmt.Sprintf("%s%020d", s.versionsKey(owner, name), v)
}

var wasmMagic = []byte("\x00asm")

func (s *deployService) Deploy(ctx context.Context, req *v1.DeployRequest) (*v1.DeployResponse, error) {
	user, err := checkUser(ctx, req.UserId)
	if err != nil {
		return nil, err
	}
	if err := names.Function(req.Name); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v (a deploy names a function of your own namespace; an admin deploys for another user with user_id)", err)
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
	// A name is either native or deployed, for every user: a call of NAME
	// then never has two meanings.
	for _, w := range s.reg.list() {
		for _, f := range w.Functions {
			if f.Name == req.Name {
				return nil, status.Errorf(codes.AlreadyExists, "%q is a native function served by worker %s; choose another name", req.Name, w.WorkerId)
			}
		}
	}
	quotas, err := s.quotas(ctx, user)
	if err != nil {
		return nil, err
	}
	sha := moduleSHA256(req.Module)
	// Refused before anything is stored or started.
	if _, err := s.checkModuleQuota(ctx, user, sha, int64(len(req.Module)), quotas); err != nil {
		return nil, err
	}
	if s.checker != nil {
		if err := s.checker.CheckModule(ctx, req.Runtime, req.Module, export); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "%s: the module cannot be deployed: %v", req.Name, err)
		}
	}
	if _, err := egress.ParseAllowlist(req.GetCapabilities().GetAllowHosts()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%s: --allow-host: %v", req.Name, err)
	}
	// --secret NAME is a grant of the user's secret NAME to the function,
	// made before the deployment: a secret that does not exist refuses the
	// deploy.
	for _, name := range req.GetCapabilities().GetSecrets() {
		if _, err := s.secrets.Grant(ctx, user, name, req.Name, nil); err != nil {
			return nil, secrets.GRPCStatus(err)
		}
	}
	dep := &v1.Deployment{
		Name:         req.Name,
		Runtime:      req.Runtime,
		ModuleSha256: sha,
		ModuleSize:   int64(len(req.Module)),
		Export:       export,
		Limits:       limits,
		Idempotent:   req.Idempotent,
		Capabilities: req.Capabilities,
		Owner:        user,
		CreatedAtMs:  time.Now().UnixMilli(),
		Public:       req.Public,
	}
	for {
		// The user's versions as the quota saw them: the transaction below
		// insists they are unchanged, so two deploys at once cannot both
		// squeeze under the quota.
		quotaRev, err := s.checkModuleQuota(ctx, user, sha, dep.ModuleSize, quotas)
		if err != nil {
			return nil, err
		}
		// (Re)store the module's bytes on every attempt: an undeploy
		// elsewhere may have dropped them since, and the transaction
		// below insists on them.
		chunks, err := s.modules.put(ctx, req.Module)
		if err != nil {
			return nil, serving.EtcdError(err)
		}
		refs, refsRev, err := s.modules.refs(ctx, sha)
		if err != nil {
			return nil, serving.EtcdError(err)
		}
		cur, err := s.cli.Get(ctx, s.currentKey(user, req.Name))
		if err != nil {
			return nil, serving.EtcdError(err)
		}
		var rev int64
		if len(cur.Kvs) > 0 {
			rev = cur.Kvs[0].ModRevision
		}
		last, err := s.cli.Get(ctx, s.versionsKey(user, req.Name), clientv3.WithLastKey()...)
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
		conds := []clientv3.Cmp{
			clientv3.Compare(clientv3.ModRevision(s.currentKey(user, req.Name)), "=", rev),
			clientv3.Compare(clientv3.CreateRevision(s.versionKey(user, req.Name, dep.Version)), "=", 0),
		}
		if quotaRev != 0 {
			conds = append(conds, clientv3.Compare(clientv3.ModRevision(s.userVersionsKey(user)), "<", quotaRev+1).WithPrefix())
		}
		conds = append(conds, s.modules.completeCmps(sha, chunks, refsRev)...)
		ops := append([]clientv3.Op{
			clientv3.OpPut(s.currentKey(user, req.Name), string(b)),
			clientv3.OpPut(s.versionKey(user, req.Name, dep.Version), string(b)),
		}, s.modules.referOps(sha, dep.ModuleSize, chunks, refs+1)...)
		txn, err := s.cli.Txn(ctx).If(conds...).Then(ops...).Commit()
		if err != nil {
			return nil, serving.EtcdError(err)
		}
		if txn.Succeeded {
			s.deploys.waitFor(ctx, txn.Header.Revision)
			return &v1.DeployResponse{Deployment: dep}, nil
		}
		// A concurrent deploy of the same name or module won, or an
		// undeploy dropped the module: build on what is there now.
	}
}

// quotas returns user's quotas (none without Config.Quotas).
func (s *deployService) quotas(ctx context.Context, user string) (quota.Limits, error) {
	if s.cfg.Quotas == nil {
		return quota.Limits{}, nil
	}
	q, err := s.cfg.Quotas(ctx, user)
	if err != nil {
		return quota.Limits{}, status.Errorf(codes.Unavailable, "reading the quotas of user %s: %v; try again", user, err)
	}
	return q, nil
}

// checkModuleQuota refuses a deploy of module sha (size bytes) that would
// take user's distinct modules, in all versions of all the user's
// functions, over the Modules or ModuleBytes quota. It returns the etcd
// revision it read the user's versions at, or 0 when no module quota is
// set.
func (s *deployService) checkModuleQuota(ctx context.Context, user, sha string, size int64, q quota.Limits) (int64, error) {
	if q.Modules <= 0 && q.ModuleBytes <= 0 {
		return 0, nil
	}
	sizes, rev, err := s.moduleUse(ctx, user)
	if err != nil {
		return 0, err
	}
	if _, have := sizes[sha]; have {
		return rev, nil // no new module: nothing more is spent
	}
	var total int64
	for _, n := range sizes {
		total += n
	}
	if q.Modules > 0 && int64(len(sizes))+1 > q.Modules {
		return 0, status.Errorf(codes.ResourceExhausted, "modules quota: user %s has %d distinct modules in the versions of their deployed functions, and the quota allows %d; undeploy functions you no longer need (their old versions count too), or ask an admin to raise it",
			user, len(sizes), q.Modules)
	}
	if q.ModuleBytes > 0 && total+size > q.ModuleBytes {
		return 0, status.Errorf(codes.ResourceExhausted, "module bytes quota: user %s's modules take %d bytes, this one %d more, and the quota allows %d; undeploy functions you no longer need (their old versions count too), or ask an admin to raise it",
			user, total, size, q.ModuleBytes)
	}
	return rev, nil
}

// moduleUse reads the distinct modules, by hash with their sizes, in all
// versions of all of user's deployed functions (what the Modules and
// ModuleBytes quotas count), and the etcd revision it read them at.
func (s *deployService) moduleUse(ctx context.Context, user string) (map[string]int64, int64, error) {
	resp, err := s.cli.Get(ctx, s.userVersionsKey(user), clientv3.WithPrefix())
	if err != nil {
		return nil, 0, serving.EtcdError(err)
	}
	sizes := map[string]int64{}
	for _, kv := range resp.Kvs {
		d := &v1.Deployment{}
		if proto.Unmarshal(kv.Value, d) == nil {
			sizes[d.ModuleSha256] = d.ModuleSize
		}
	}
	return sizes, resp.Header.Revision, nil
}

// notFound is the answer for a deployed function that does not exist and
// for one the caller may not see: the same words, so that the answer does
// not tell which.
func notFound(name string) error {
	return status.Errorf(codes.NotFound, "no deployed function %q", name)
}

// target resolves a request's function name, NAME or OWNER/NAME, to its
// owner and name; NAME is the acting user's.
func target(name, user string) (owner, fn string, err error) {
	owner, fn, err = names.QualifiedFunction(name)
	if err != nil {
		return "", "", status.Error(codes.InvalidArgument, err.Error())
	}
	if owner == "" {
		owner = user
	}
	return owner, fn, nil
}

// history reads a function's current version and all its versions, for a
// caller who may change it. Another user's function is NotFound, as if it
// did not exist, unless the caller may call it: then PermissionDenied.
func (s *deployService) history(ctx context.Context, name, userID string) (owner, fn string, cur *v1.Deployment, rev int64, versions []*v1.Deployment, err error) {
	user, err := checkUser(ctx, userID)
	if err != nil {
		return "", "", nil, 0, nil, err
	}
	if owner, fn, err = target(name, user); err != nil {
		return "", "", nil, 0, nil, err
	}
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(s.currentKey(owner, fn)),
		clientv3.OpGet(s.versionsKey(owner, fn), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend)),
	).Commit()
	if err != nil {
		return "", "", nil, 0, nil, serving.EtcdError(err)
	}
	curKvs := resp.Responses[0].GetResponseRange().Kvs
	if len(curKvs) == 0 {
		return "", "", nil, 0, nil, notFound(name)
	}
	cur = &v1.Deployment{}
	if err := proto.Unmarshal(curKvs[0].Value, cur); err != nil {
		return "", "", nil, 0, nil, status.Errorf(codes.DataLoss, "%s: unreadable deployment: %v", name, err)
	}
	id := identityFrom(ctx)
	if !mayChange(id, user, cur) {
		if s.deploys.mayCall(id, user, cur) {
			return "", "", nil, 0, nil, status.Errorf(codes.PermissionDenied, "%s belongs to user %s: only its owner (or an admin) may see its versions, roll it back, undeploy or grant it", name, cur.Owner)
		}
		return "", "", nil, 0, nil, notFound(name)
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		d := &v1.Deployment{}
		if proto.Unmarshal(kv.Value, d) == nil {
			versions = append(versions, d)
		}
	}
	return owner, fn, cur, curKvs[0].ModRevision, versions, nil
}

func (s *deployService) History(ctx context.Context, req *v1.HistoryRequest) (*v1.HistoryResponse, error) {
	owner, fn, cur, _, versions, err := s.history(ctx, req.Name, req.UserId)
	if err != nil {
		return nil, err
	}
	g, _, err := s.readGrants(ctx, owner, fn)
	if err != nil {
		return nil, err
	}
	return &v1.HistoryResponse{Versions: versions, CurrentVersion: cur.Version, GrantedUsers: g}, nil
}

func (s *deployService) Rollback(ctx context.Context, req *v1.RollbackRequest) (*v1.RollbackResponse, error) {
	owner, fn, cur, rev, versions, err := s.history(ctx, req.Name, req.UserId)
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
	txn, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(s.currentKey(owner, fn)), "=", rev)).
		Then(clientv3.OpPut(s.currentKey(owner, fn), string(b))).Commit()
	if err != nil {
		return nil, serving.EtcdError(err)
	}
	if !txn.Succeeded {
		return nil, status.Errorf(codes.Aborted, "%s changed during the rollback; try again", req.Name)
	}
	s.deploys.waitFor(ctx, txn.Header.Revision)
	return &v1.RollbackResponse{Deployment: target}, nil
}

// Undeploy deletes a function's current version, its versions and its
// grants, and releases its references to modules in the same transaction:
// a module whose last reference goes is deleted with it.
func (s *deployService) Undeploy(ctx context.Context, req *v1.UndeployRequest) (*v1.UndeployResponse, error) {
	for {
		owner, fn, _, rev, versions, err := s.history(ctx, req.Name, req.UserId)
		if err != nil {
			return nil, err
		}
		uses := map[string]int64{} // module -> versions of this function using it
		for _, d := range versions {
			uses[d.ModuleSha256]++
		}
		conds := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(s.currentKey(owner, fn)), "=", rev)}
		// The function's versions change only with its current key, which
		// the condition above holds: the prefix deletes exactly those read.
		ops := []clientv3.Op{
			clientv3.OpDelete(s.currentKey(owner, fn)),
			clientv3.OpDelete(s.versionsKey(owner, fn), clientv3.WithPrefix()),
			clientv3.OpDelete(s.grantsKey(owner, fn)),
		}
		for _, sha := range slices.Sorted(maps.Keys(uses)) {
			refs, refsRev, err := s.modules.refs(ctx, sha)
			if err != nil {
				return nil, serving.EtcdError(err)
			}
			conds = append(conds, clientv3.Compare(clientv3.ModRevision(s.modules.refsKey(sha)), "=", refsRev))
			ops = append(ops, s.modules.releaseOps(sha, refs-uses[sha])...)
		}
		txn, err := s.cli.Txn(ctx).If(conds...).Then(ops...).Commit()
		if err != nil {
			return nil, serving.EtcdError(err)
		}
		if txn.Succeeded {
			s.deploys.waitFor(ctx, txn.Header.Revision)
			return &v1.UndeployResponse{}, nil
		}
		// The function, or another's use of one of its modules, changed
		// meanwhile: read again.
	}
}

// readGrants returns the users a function is granted to and the revision
// of its record (0: none).
func (s *deployService) readGrants(ctx context.Context, owner, fn string) ([]string, int64, error) {
	resp, err := s.cli.Get(ctx, s.grantsKey(owner, fn))
	if err != nil {
		return nil, 0, serving.EtcdError(err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, nil
	}
	var g grantRecord
	if err := json.Unmarshal(resp.Kvs[0].Value, &g); err != nil {
		return nil, 0, status.Errorf(codes.DataLoss, "%s: unreadable grants: %v", fn, err)
	}
	return g.Users, resp.Kvs[0].ModRevision, nil
}

func (s *deployService) Grant(ctx context.Context, req *v1.GrantRequest) (*v1.GrantResponse, error) {
	users, err := s.grant(ctx, req.Name, req.UserId, req.User, true)
	if err != nil {
		return nil, err
	}
	return &v1.GrantResponse{GrantedUsers: users}, nil
}

func (s *deployService) Revoke(ctx context.Context, req *v1.RevokeRequest) (*v1.RevokeResponse, error) {
	users, err := s.grant(ctx, req.Name, req.UserId, req.User, false)
	if err != nil {
		return nil, err
	}
	return &v1.RevokeResponse{GrantedUsers: users}, nil
}

// grant adds (on) or removes a user from a function's grants, while the
// function exists.
func (s *deployService) grant(ctx context.Context, name, userID, grantee string, on bool) ([]string, error) {
	if err := names.User(grantee); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "user: %v", err)
	}
	for {
		owner, fn, _, _, _, err := s.history(ctx, name, userID)
		if err != nil {
			return nil, err
		}
		users, rev, err := s.readGrants(ctx, owner, fn)
		if err != nil {
			return nil, err
		}
		i, found := slices.BinarySearch(users, grantee)
		switch {
		case on && !found:
			users = slices.Insert(users, i, grantee)
		case !on && found:
			users = slices.Delete(users, i, i+1)
		default:
			return users, nil // already so
		}
		op := clientv3.OpDelete(s.grantsKey(owner, fn))
		if len(users) > 0 {
			b, _ := json.Marshal(grantRecord{Users: users})
			op = clientv3.OpPut(s.grantsKey(owner, fn), string(b))
		}
		txn, err := s.cli.Txn(ctx).If(
			clientv3.Compare(clientv3.CreateRevision(s.currentKey(owner, fn)), ">", 0),
			clientv3.Compare(clientv3.ModRevision(s.grantsKey(owner, fn)), "=", rev),
		).Then(op).Commit()
		if err != nil {
			return nil, serving.EtcdError(err)
		}
		if txn.Succeeded {
			s.deploys.waitForGrants(ctx, txn.Header.Revision)
			return users, nil
		}
		// Undeployed, or granted elsewhere meanwhile: look again.
	}
}
