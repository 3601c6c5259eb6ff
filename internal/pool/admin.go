package pool

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/files"
)

// adminService answers operators and users about the network.
type adminService struct {
	v1.UnimplementedAdminServiceServer
	reg     *registry
	tokens  *tokenStore
	deploys *deployments
	files   *files.Service
	ids     *identities
}

func (s *adminService) ListWorkers(ctx context.Context, _ *v1.ListWorkersRequest) (*v1.ListWorkersResponse, error) {
	return &v1.ListWorkersResponse{Workers: s.reg.list()}, nil
}

func (s *adminService) ListFunctions(ctx context.Context, _ *v1.ListFunctionsRequest) (*v1.ListFunctionsResponse, error) {
	byName := map[string]*v1.FunctionInfo{}
	// A drained worker's functions are not served there: calls do not go
	// to it.
	workers := slices.DeleteFunc(s.reg.list(), func(w *v1.WorkerInfo) bool { return w.Draining })
	for _, w := range workers {
		for _, f := range w.Functions {
			fi := byName[f.Name]
			if fi == nil {
				fi = &v1.FunctionInfo{Name: f.Name, Idempotent: f.Idempotent, Signature: f.Signature, Runtime: "go"}
				byName[f.Name] = fi
			}
			fi.WorkerIds = append(fi.WorkerIds, w.WorkerId)
		}
	}
	id := identityFrom(ctx)
	for full, d := range s.deploys.all() {
		// Only what the caller may call is listed, and the details (owner,
		// module, limits, capabilities) only of the caller's own, or to an
		// admin; another user's function goes by owner/name.
		if !s.deploys.mayCall(id, id.User, d) {
			continue
		}
		name := full
		if d.Owner == id.User {
			name = d.Name
		}
		// The deployed function takes the calls, never a native one of
		// the same name (rpcService.CallFunction).
		fi := &v1.FunctionInfo{Name: name, Idempotent: d.Idempotent, Runtime: runtimeName(d.Runtime)}
		if mayChange(id, id.User, d) {
			fi.Deployment = d
			fi.Signature = fmt.Sprintf("v%d %s export %s", d.Version, d.ModuleSha256[:12], d.Export)
		}
		for _, w := range workers {
			if slices.Contains(w.Runtimes, d.Runtime) {
				fi.WorkerIds = append(fi.WorkerIds, w.WorkerId)
			}
		}
		byName[name] = fi
	}
	resp := &v1.ListFunctionsResponse{}
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		resp.Functions = append(resp.Functions, byName[name])
	}
	return resp, nil
}

func runtimeName(r v1.Runtime) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "RUNTIME_"))
}

func (s *adminService) WhoAmI(ctx context.Context, _ *v1.WhoAmIRequest) (*v1.WhoAmIResponse, error) {
	id := identityFrom(ctx)
	return &v1.WhoAmIResponse{User: id.User, Role: id.Role}, nil
}

func (s *adminService) Status(ctx context.Context, _ *v1.StatusRequest) (*v1.StatusResponse, error) {
	st, err := s.files.Status(ctx)
	if err != nil {
		return nil, err
	}
	for _, w := range s.reg.list() {
		st.Workers++
		if w.Draining {
			st.WorkersDraining++
		}
	}
	return st, nil
}
