package pool_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker"
	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/cluster"
	"github.com/hivemind/taskworker/internal/sandbox"
	"github.com/hivemind/taskworker/internal/starlarkrun"
)

var starlarkCommand []string

func TestMain(m *testing.M) {
	// The workers' Starlark children are this test binary, re-executed.
	if len(os.Args) > 1 && os.Args[1] == starlarkrun.ChildArg {
		os.Exit(starlarkrun.Main())
	}
	if len(os.Args) > 1 && os.Args[1] == sandbox.ChildArg {
		os.Exit(sandbox.ChildMain())
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	starlarkCommand = []string{exe, starlarkrun.ChildArg}
	os.Exit(m.Run())
}

// whoScript is a Starlark function that says whose it is.
func whoScript(owner string) []byte {
	return fmt.Appendf(nil, "def who():\n    return %q\n", owner)
}

// TestTenantsArePrivate is the attack of one user on another's deployed
// function: Eve, with an ordinary token, cannot call, list, read the
// history of, roll back, undeploy or grant Bob's private "reports", and
// every answer is the one for a function that does not exist. Her own
// "reports" lives beside his. Once Bob grants it to her, or makes it
// public, she may call it, and still not change it.
func TestTenantsArePrivate(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 1, Sandbox: true, StarlarkCommand: starlarkCommand})
	ctx := ctxTimeout(t, 2*time.Minute)
	admin := c.Client(0)
	bob, eve, carol := userClient(ctx, t, c, "bob"), userClient(ctx, t, c, "eve"), userClient(ctx, t, c, "carol")
	star := taskworker.DeploySpec{Runtime: v1.Runtime_RUNTIME_STARLARK, Export: "who"}
	bobV1, err := bob.Deploy(ctx, "reports", whoScript("bob"), star)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eve.Deploy(ctx, "reports", whoScript("eve"), star); err != nil {
		t.Fatalf("Eve deploying her own reports beside Bob's: %v", err)
	}
	call := func(cl *taskworker.Client, name string) (string, error) {
		out, err := cl.Call(ctx, name)
		return string(out), err
	}
	for _, tt := range []struct {
		cl         *taskworker.Client
		name, want string
	}{{bob, "reports", `"bob"`}, {eve, "reports", `"eve"`}, {bob, "bob/reports", `"bob"`}, {admin, "bob/reports", `"bob"`}, {admin, "eve/reports", `"eve"`}} {
		if got, err := call(tt.cl, tt.name); err != nil || got != tt.want {
			t.Errorf("call of %s: %s, %v; want %s", tt.name, got, err, tt.want)
		}
	}

	// notFound checks that an answer about bob/reports is NotFound in the
	// very words of the one about bob/ghost, which does not exist.
	notFound := func(what string, op func(name string) error) {
		t.Helper()
		got, ghost := status.Convert(op("bob/reports")), status.Convert(op("bob/ghost"))
		if got.Code() != codes.NotFound || ghost.Code() != codes.NotFound ||
			strings.ReplaceAll(got.Message(), "bob/reports", "bob/ghost") != ghost.Message() {
			t.Errorf("%s of Bob's private function: %s %q; of a function that does not exist: %s %q; want the same NotFound",
				what, got.Code(), got.Message(), ghost.Code(), ghost.Message())
		}
	}
	deploys := v1.NewDeployServiceClient(eve.Conn())
	attacks := func() {
		t.Helper()
		notFound("call", func(n string) error { _, err := call(eve, n); return err })
		notFound("history", func(n string) error {
			_, err := deploys.History(ctx, &v1.HistoryRequest{Name: n})
			return err
		})
		notFound("rollback", func(n string) error { _, err := eve.Rollback(ctx, n, 0); return err })
		notFound("undeploy", func(n string) error { return eve.Undeploy(ctx, n) })
		notFound("grant", func(n string) error { _, err := eve.Grant(ctx, n, "eve"); return err })
	}
	attacks()
	listed := func(cl *taskworker.Client) map[string]*v1.FunctionInfo {
		t.Helper()
		fs, err := cl.Functions(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]*v1.FunctionInfo{}
		for _, f := range fs {
			m[f.Name] = f
		}
		return m
	}
	evesList := listed(eve)
	if _, ok := evesList["bob/reports"]; ok {
		t.Errorf("Eve's list shows Bob's private function: %v", evesList)
	}
	if f := evesList["reports"]; f == nil || f.Deployment.GetOwner() != "eve" {
		t.Errorf("Eve's list: her own reports is %v; want it, with its details", f)
	}
	if _, ok := evesList["add"]; !ok {
		t.Errorf("Eve's list lacks the native functions: %v", evesList)
	}
	if f := listed(admin)["bob/reports"]; f == nil || f.Deployment.GetModuleSha256() != bobV1.ModuleSha256 {
		t.Errorf("the admin's list: bob/reports is %v; want it, with its details", f)
	}
	if out, err := eve.Call(ctx, "add", 1, 2); err != nil || string(out) != "3" {
		t.Errorf("Eve calling the native add: %s, %v", out, err)
	}

	// A grant lets Eve call it, list it (without its details), not change it.
	if users, err := bob.Grant(ctx, "reports", "eve"); err != nil || !slices.Equal(users, []string{"eve"}) {
		t.Fatalf("Bob granting reports to Eve: %v, %v", users, err)
	}
	if got, err := call(eve, "bob/reports"); err != nil || got != `"bob"` {
		t.Errorf("Eve calling bob/reports once granted: %s, %v", got, err)
	}
	if f := listed(eve)["bob/reports"]; f == nil || f.Deployment != nil || strings.Contains(f.Signature, bobV1.ModuleSha256[:12]) {
		t.Errorf("Eve's list once granted: bob/reports is %v; want it listed without owner's details", f)
	}
	for what, err := range map[string]error{
		"history":  func() error { _, err := deploys.History(ctx, &v1.HistoryRequest{Name: "bob/reports"}); return err }(),
		"rollback": func() error { _, err := eve.Rollback(ctx, "bob/reports", 0); return err }(),
		"undeploy": eve.Undeploy(ctx, "bob/reports"),
		"grant":    func() error { _, err := eve.Grant(ctx, "bob/reports", "carol"); return err }(),
	} {
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("Eve's %s of bob/reports, granted to her: %v; want PermissionDenied", what, err)
		}
	}
	if _, err := call(carol, "bob/reports"); status.Code(err) != codes.NotFound {
		t.Errorf("Carol calling bob/reports, granted to Eve only: %v", err)
	}
	if users, err := bob.Revoke(ctx, "reports", "eve"); err != nil || len(users) != 0 {
		t.Fatalf("Bob revoking Eve's grant: %v, %v", users, err)
	}
	attacks()

	// Public: anyone may call it; still only Bob may change it.
	bobV2, err := bob.Deploy(ctx, "reports", whoScript("bob, public"), taskworker.DeploySpec{Runtime: v1.Runtime_RUNTIME_STARLARK, Export: "who", Public: true})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := call(carol, "bob/reports"); err != nil || got != `"bob, public"` {
		t.Errorf("Carol calling public bob/reports: %s, %v", got, err)
	}
	if err := carol.Undeploy(ctx, "bob/reports"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("Carol undeploying public bob/reports: %v; want PermissionDenied", err)
	}
	// Bob's rollback makes it private again (version 1 was).
	if _, err := bob.Rollback(ctx, "reports", 0); err != nil {
		t.Fatal(err)
	}
	attacks()

	// Bob's versions and module are intact through all of it.
	h, err := v1.NewDeployServiceClient(bob.Conn()).History(ctx, &v1.HistoryRequest{Name: "reports"})
	if err != nil || len(h.Versions) != 2 || h.CurrentVersion != 1 || h.Versions[0].ModuleSha256 != bobV2.ModuleSha256 {
		t.Fatalf("Bob's history: %v, %v", h, err)
	}
	if got, err := call(bob, "reports"); err != nil || got != `"bob"` {
		t.Errorf("Bob calling his reports: %s, %v", got, err)
	}
	// A native name is no one's to deploy.
	if _, err := bob.Deploy(ctx, "add", whoScript("bob"), star); status.Code(err) != codes.AlreadyExists {
		t.Errorf("Bob deploying the native add: %v", err)
	}
}

// TestModulesAreCountedAcrossOwners deploys one module as two users'
// functions through two pool replicas at once, undeploying and deploying
// again, and checks the module is stored exactly while some version of
// anyone's uses it.
func TestModulesAreCountedAcrossOwners(t *testing.T) {
	c := cluster.New(t, cluster.Options{Pools: 2, Workers: 1})
	ctx := ctxTimeout(t, 2*time.Minute)
	tok := func(user string) string {
		tk, err := c.Client(0).CreateToken(ctx, user, "")
		if err != nil {
			t.Fatal(err)
		}
		return tk
	}
	bob, eve := c.ClientWithToken(0, tok("bob")), c.ClientWithToken(1, tok("eve"))
	module := []byte(addScript + "# shared\n")
	star := taskworker.DeploySpec{Runtime: v1.Runtime_RUNTIME_STARLARK, Export: "add2"}
	var wg sync.WaitGroup
	for _, cl := range []*taskworker.Client{bob, eve} {
		wg.Go(func() {
			for i := range 8 {
				if _, err := cl.Deploy(ctx, "f", module, star); err != nil {
					t.Errorf("deploy %d: %v", i, err)
					return
				}
				if i%2 == 1 {
					if err := cl.Undeploy(ctx, "f"); err != nil {
						t.Errorf("undeploy %d: %v", i, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	// Each undeployed f after its last deploy.
	sha := moduleSHA(module)
	if keys := moduleKeys(ctx, t, c, sha); len(keys) != 0 {
		t.Errorf("no version uses the module, and its keys are left: %v", keys)
	}
	if _, err := bob.Deploy(ctx, "f", module, star); err != nil {
		t.Fatal(err)
	}
	if _, err := eve.Deploy(ctx, "g", module, star); err != nil {
		t.Fatal(err)
	}
	if _, err := eve.Deploy(ctx, "g", []byte(addScript+"# eve's v2\n"), star); err != nil {
		t.Fatal(err)
	}
	if err := eve.Undeploy(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	worker, err := c.EnrollWorker(0, "fetcher")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := fetchModule(ctx, worker, sha); err != nil || string(got) != string(module) {
		t.Errorf("Bob's module after Eve's undeploy of her versions that used it: %v", err)
	}
	if err := bob.Undeploy(ctx, "f"); err != nil {
		t.Fatal(err)
	}
	if keys := moduleKeys(ctx, t, c, sha); len(keys) != 0 {
		t.Errorf("the last version using the module is undeployed, and its keys are left: %v", keys)
	}
}

func moduleSHA(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// moduleKeys lists the etcd keys of a module.
func moduleKeys(ctx context.Context, t *testing.T, c *cluster.Cluster, sha string) []string {
	t.Helper()
	resp, err := c.EtcdClient().Get(ctx, "/taskworker/modules/"+sha+"/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, kv := range resp.Kvs {
		keys = append(keys, string(kv.Key))
	}
	return keys
}

// TestZoneNamesPublicFunctionsOnly: the DNS zone answers anyone, so it
// names a deployed function only while it is public, as <name>.<owner>.
func TestZoneNamesPublicFunctionsOnly(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 1, Sandbox: true, StarlarkCommand: starlarkCommand})
	ctx := ctxTimeout(t, time.Minute)
	bob, eve := userClient(ctx, t, c, "bob"), userClient(ctx, t, c, "eve")
	spec := taskworker.DeploySpec{Runtime: v1.Runtime_RUNTIME_STARLARK, Export: "who"}
	if _, err := bob.Deploy(ctx, "reports", whoScript("bob"), spec); err != nil {
		t.Fatal(err)
	}
	spec.Public = true
	if _, err := bob.Deploy(ctx, "open.data", whoScript("bob"), spec); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Grant(ctx, "reports", "eve"); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		code codes.Code
	}{
		{"open.data.bob.fn.taskworker.internal", codes.OK},
		{"reports.bob.fn.taskworker.internal", codes.NotFound},
		{"reports.fn.taskworker.internal", codes.NotFound},
		{"open.data.fn.taskworker.internal", codes.NotFound},
	} {
		for _, cl := range []*taskworker.Client{bob, eve} {
			if _, _, err := cl.Resolve(ctx, tt.name, "A"); status.Code(err) != tt.code {
				t.Errorf("resolving %s: %v; want %v", tt.name, err, tt.code)
			}
		}
	}
}
