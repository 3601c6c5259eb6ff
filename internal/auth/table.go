package auth

import (
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
)

// Server is one of the network's two kinds of gRPC server.
type Server int

// The servers.
const (
	Pool Server = iota
	Worker
)

func (s Server) String() string {
	if s == Worker {
		return "worker"
	}
	return "pool"
}

// Access says who may call a method on one server. The zero value, Denied,
// is what a method missing from the table gets: nobody.
type Access uint8

// The accesses.
const (
	// Denied: the method is not in the table; every call is refused.
	Denied Access = iota
	// NotServed: listed, and refused on purpose (the method's service is
	// registered on this server, but the method is the other server's).
	NotServed
	// Open: anyone, with no credentials: health, reflection, and Enroll
	// (which carries its join token in the request).
	Open
	// UserToken: a user's or an admin's API token.
	UserToken
	// WorkerToken: the network's join token (or an admin's).
	WorkerToken
	// AdminToken: an admin's token only.
	AdminToken
	// PoolCert: the pool, presenting its certificate (mTLS).
	PoolCert
	// WorkerCert: a worker, presenting its certificate (mTLS), for the
	// worker id the certificate names.
	WorkerCert
)

// Rule is one method's access on each server.
type Rule struct {
	Pool, Worker Access
}

var (
	open       = Rule{Pool: Open, Worker: Open}
	user       = Rule{Pool: UserToken, Worker: NotServed}
	fromWorker = Rule{Pool: WorkerCert, Worker: NotServed}
	enrol      = Rule{Pool: Open, Worker: NotServed}
	admin      = Rule{Pool: AdminToken, Worker: NotServed}
	fromPool   = Rule{Pool: NotServed, Worker: PoolCert}
	userOrPool = Rule{Pool: UserToken, Worker: PoolCert}
	methods    = map[string]Rule{
		healthpb.Health_Check_FullMethodName:                                   open,
		healthpb.Health_List_FullMethodName:                                    open,
		healthpb.Health_Watch_FullMethodName:                                   open,
		reflectionv1.ServerReflection_ServerReflectionInfo_FullMethodName:      open,
		reflectionv1alpha.ServerReflection_ServerReflectionInfo_FullMethodName: open,

		v1.RPCService_CallFunction_FullMethodName: userOrPool,
		v1.RPCService_CallStream_FullMethodName:   fromPool,

		v1.RegistryService_Register_FullMethodName:     fromWorker,
		v1.RegistryService_Heartbeat_FullMethodName:    fromWorker,
		v1.RegistryService_Deregister_FullMethodName:   fromWorker,
		v1.RegistryService_ReportDamage_FullMethodName: fromWorker,
		v1.RegistryService_Enroll_FullMethodName:       enrol,
		v1.RegistryService_Drain_FullMethodName:        fromWorker,
		v1.ModuleService_GetModule_FullMethodName:      fromWorker,

		v1.AdminService_ListWorkers_FullMethodName:   user,
		v1.AdminService_ListFunctions_FullMethodName: user,
		v1.AdminService_WhoAmI_FullMethodName:        user,
		v1.AdminService_CreateToken_FullMethodName:   admin,
		v1.AdminService_Status_FullMethodName:        admin,
		v1.AdminService_ListTokens_FullMethodName:    admin,
		v1.AdminService_RevokeToken_FullMethodName:   admin,
		v1.AdminService_RevokeWorker_FullMethodName:  admin,
		v1.AdminService_DrainWorker_FullMethodName:   admin,

		v1.DeployService_Deploy_FullMethodName:   user,
		v1.DeployService_Rollback_FullMethodName: user,
		v1.DeployService_Undeploy_FullMethodName: user,
		v1.DeployService_History_FullMethodName:  user,
		v1.DeployService_Grant_FullMethodName:    user,
		v1.DeployService_Revoke_FullMethodName:   user,

		v1.FileService_Push_FullMethodName:         user,
		v1.FileService_Get_FullMethodName:          user,
		v1.FileService_Revise_FullMethodName:       user,
		v1.FileService_Synchronous_FullMethodName:  user,
		v1.FileService_WatchChanges_FullMethodName: user,
		v1.FileService_Upload_FullMethodName:       user,
		v1.FileService_Download_FullMethodName:     user,
		v1.FileService_Delete_FullMethodName:       user,
		v1.FileService_List_FullMethodName:         user,
		v1.FileService_Stat_FullMethodName:         user,
		v1.FileService_FileHistory_FullMethodName:  user,

		v1.DNSService_ResolveDomain_FullMethodName: user,

		v1.SecretService_Put_FullMethodName:     user,
		v1.SecretService_List_FullMethodName:    user,
		v1.SecretService_Delete_FullMethodName:  user,
		v1.SecretService_Grant_FullMethodName:   user,
		v1.SecretService_Revoke_FullMethodName:  user,
		v1.SecretService_Audit_FullMethodName:   user,
		v1.KeyService_RotateKeys_FullMethodName: admin,
		v1.EgressService_Fetch_FullMethodName:   user,

		v1.SecretService_ReadForCall_FullMethodName:  fromWorker,
		v1.EgressService_FetchForCall_FullMethodName: fromWorker,

		v1.TaskService_Submit_FullMethodName:         user,
		v1.TaskService_GetTask_FullMethodName:        user,
		v1.TaskService_ListTasks_FullMethodName:      user,
		v1.TaskService_CountTasks_FullMethodName:     user,
		v1.TaskService_WaitTask_FullMethodName:       user,
		v1.TaskService_CancelTask_FullMethodName:     user,
		v1.TaskService_PutSchedule_FullMethodName:    user,
		v1.TaskService_ListSchedules_FullMethodName:  user,
		v1.TaskService_DeleteSchedule_FullMethodName: user,

		v1.QuotaService_SetQuota_FullMethodName:   admin,
		v1.QuotaService_GetQuota_FullMethodName:   user,
		v1.QuotaService_ListQuotas_FullMethodName: admin,

		v1.ShardService_PutShard_FullMethodName:     fromPool,
		v1.ShardService_GetShard_FullMethodName:     fromPool,
		v1.ShardService_DeleteShards_FullMethodName: fromPool,
		v1.ShardService_ListShards_FullMethodName:   fromPool,
		v1.ShardService_Usage_FullMethodName:        fromPool,
	}
)

// Lookup returns who may call method on srv: Denied for a method the table
// does not list.
func Lookup(srv Server, method string) Access {
	r := methods[method]
	if srv == Worker {
		return r.Worker
	}
	return r.Pool
}

// roles returns the token roles an access admits, nil for the others.
func (a Access) roles() []v1.Role {
	switch a {
	case UserToken:
		return []v1.Role{v1.Role_ROLE_USER, v1.Role_ROLE_ADMIN}
	case WorkerToken:
		return []v1.Role{v1.Role_ROLE_WORKER, v1.Role_ROLE_ADMIN}
	case AdminToken:
		return []v1.Role{v1.Role_ROLE_ADMIN}
	}
	return nil
}

// Authorize checks that a caller holding a token of role may call method
// on the pool. It returns nil or a PermissionDenied status that says which
// token to use.
func Authorize(method string, role v1.Role) error {
	access := Lookup(Pool, method)
	roles := access.roles()
	if slices.Contains(roles, role) {
		return nil
	}
	if roles == nil {
		return refused(Pool, method, access)
	}
	return status.Errorf(codes.PermissionDenied, "%s: a token with role %s cannot call this; use a token with role %s",
		method, RoleName(role), RoleName(roles[0]))
}

// refused is the status for a method that no credential opens on srv.
func refused(srv Server, method string, access Access) error {
	switch access {
	case Denied:
		return status.Errorf(codes.PermissionDenied, "%s: not in the %s's authorization table (internal/auth), so nobody may call it", method, srv)
	case WorkerCert:
		return status.Errorf(codes.PermissionDenied, "%s: only a worker's certificate opens it, no token", method)
	}
	return status.Errorf(codes.PermissionDenied, "%s: not served by the %s", method, srv)
}

// RoleName is a role as people write it: "user", "worker", "admin".
func RoleName(r v1.Role) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "ROLE_"))
}

// CheckServices returns an error naming every method of services (a
// grpc.Server's GetServiceInfo) that the table does not list for srv. The
// tests of the pool and the worker run it on their real servers, so a
// method added without an entry fails them (see TestEveryMethodIsInTheTable).
func CheckServices(srv Server, services map[string]grpc.ServiceInfo) error {
	var missing []string
	for svc, info := range services {
		for _, m := range info.Methods {
			full := fmt.Sprintf("/%s/%s", svc, m.Name)
			if Lookup(srv, full) == Denied {
				missing = append(missing, full)
			}
		}
	}
	if len(missing) == 0 {
		return nil
	}
	slices.Sort(missing)
	return fmt.Errorf("the %s serves %d methods with no entry in internal/auth's table (so every call is refused): %s; add each to methods in internal/auth/table.go",
		srv, len(missing), strings.Join(missing, ", "))
}
