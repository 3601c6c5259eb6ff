package pool_test

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker"
	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/cluster"
)

const addScript = "def add2(a, b):\n    return a + b\n"

func TestDeployVersionsAndRollback(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 1})
	ctx := ctxTimeout(t, 30*time.Second)
	cl := c.Client(0)
	star := taskworker.DeploySpec{Runtime: v1.Runtime_RUNTIME_STARLARK}
	d1, err := cl.Deploy(ctx, "add2", []byte(addScript), star)
	if err != nil {
		t.Fatal(err)
	}
	if d1.Version != 1 || d1.Limits.MemoryBytes != 64<<20 || d1.Export != "add2" || d1.Owner != "admin" {
		t.Errorf("first deploy: %v", d1)
	}
	d2, err := cl.Deploy(ctx, "add2", []byte(addScript+"# v2\n"), star)
	if err != nil || d2.Version != 2 || d2.ModuleSha256 == d1.ModuleSha256 {
		t.Fatalf("second deploy: %v, %v", d2, err)
	}
	back, err := cl.Rollback(ctx, "add2", 0)
	if err != nil || back.Version != 1 {
		t.Fatalf("rollback: %v, %v", back, err)
	}
	hist, err := v1.NewDeployServiceClient(cl.Conn()).History(ctx, &v1.HistoryRequest{Name: "add2"})
	if err != nil || len(hist.Versions) != 2 || hist.CurrentVersion != 1 || hist.Versions[0].Version != 2 {
		t.Fatalf("history: %v, %v", hist, err)
	}
	// A deploy after a rollback gets a new number, never a reused one.
	d3, err := cl.Deploy(ctx, "add2", []byte(addScript+"# v3\n"), star)
	if err != nil || d3.Version != 3 {
		t.Fatalf("deploy after rollback: %v, %v", d3, err)
	}
	// The function is listed, and waits for a worker that runs Starlark.
	waitFor(t, func() bool {
		fs, _ := cl.Functions(ctx)
		for _, f := range fs {
			if f.Name == "add2" && f.Runtime == "starlark" && f.Deployment.GetVersion() == 3 {
				return true
			}
		}
		return false
	})
	_, err = cl.Call(ctx, "add2", 1, 2)
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "no live worker runs starlark") {
		t.Fatalf("call with no sandbox worker: %v", err)
	}
	if err := cl.Undeploy(ctx, "add2"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		_, err := cl.Call(ctx, "add2", 1, 2)
		return status.Code(err) == codes.NotFound
	})
}

func TestDeployRefuses(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 1})
	ctx := ctxTimeout(t, 30*time.Second)
	admin := c.Client(0)
	alice, bob := userClient(ctx, t, c, "alice"), userClient(ctx, t, c, "bob")
	if _, err := alice.Deploy(ctx, "mine", []byte(addScript), taskworker.DeploySpec{Export: "add2"}); err != nil {
		t.Fatal(err)
	}
	wasm := taskworker.DeploySpec{Runtime: v1.Runtime_RUNTIME_WASM}
	tests := []struct {
		name string
		err  error
		code codes.Code
		msg  string
	}{
		{"another user's rollback", func() error { _, err := bob.Rollback(ctx, "alice/mine", 0); return err }(), codes.NotFound, `no deployed function "alice/mine"`},
		{"another user's undeploy", bob.Undeploy(ctx, "alice/mine"), codes.NotFound, `no deployed function "alice/mine"`},
		{"a name of one's own namespace", func() error { _, err := bob.Rollback(ctx, "mine", 0); return err }(), codes.NotFound, `no deployed function "mine"`},
		{"a deploy into another namespace", func() error {
			_, err := bob.Deploy(ctx, "alice/mine", []byte(addScript), taskworker.DeploySpec{})
			return err
		}(), codes.InvalidArgument, "your own namespace"},
		{"nothing to roll back to", func() error { _, err := alice.Rollback(ctx, "mine", 0); return err }(), codes.FailedPrecondition, "no version before 1"},
		{"no such version", func() error { _, err := alice.Rollback(ctx, "mine", 7); return err }(), codes.NotFound, "no version 7"},
		{"native name", func() error {
			_, err := alice.Deploy(ctx, "add", []byte(addScript), taskworker.DeploySpec{})
			return err
		}(), codes.AlreadyExists, "native function"},
		{"not wasm", func() error {
			_, err := alice.Deploy(ctx, "w", []byte("#!/bin/sh\nrm -rf /\n"), wasm)
			return err
		}(), codes.InvalidArgument, "not WebAssembly"},
		{"empty", func() error { _, err := alice.Deploy(ctx, "w", nil, wasm); return err }(), codes.InvalidArgument, "module is empty"},
		{"bad name", func() error { _, err := alice.Deploy(ctx, "a b", []byte("x"), taskworker.DeploySpec{}); return err }(), codes.InvalidArgument, "function name"},
		{"memory over the maximum", func() error {
			_, err := alice.Deploy(ctx, "big", []byte(addScript), taskworker.DeploySpec{Memory: 2 << 30})
			return err
		}(), codes.InvalidArgument, "over the operator's maximum"},
		{"too large", func() error {
			_, err := alice.Deploy(ctx, "big", append([]byte("\x00asm"), make([]byte, 13<<20)...), wasm)
			return err
		}(), codes.ResourceExhausted, "accepts at most"},
		{"undeploy unknown", alice.Undeploy(ctx, "ghost"), codes.NotFound, `no deployed function "ghost"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := status.Convert(tt.err)
			if st.Code() != tt.code || !strings.Contains(st.Message(), tt.msg) {
				t.Errorf("got %s %q; want %s containing %q", st.Code(), st.Message(), tt.code, tt.msg)
			}
		})
	}
	// An admin may change anyone's function.
	if _, err := admin.Rollback(ctx, "alice/mine", 1); err != nil {
		t.Errorf("admin rollback: %v", err)
	}
}

func TestModuleFetch(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 1})
	ctx := ctxTimeout(t, 30*time.Second)
	module := append([]byte(addScript), bytes.Repeat([]byte("# padding to span chunks\n"), 100_000)...)
	d, err := c.Client(0).Deploy(ctx, "add2", module, taskworker.DeploySpec{Runtime: v1.Runtime_RUNTIME_STARLARK})
	if err != nil {
		t.Fatal(err)
	}
	worker, err := c.EnrollWorker(0, "fetcher")
	if err != nil {
		t.Fatal(err)
	}
	fetch := func(conn *grpc.ClientConn, sha string) ([]byte, error) { return fetchModule(ctx, conn, sha) }
	got, err := fetch(worker, d.ModuleSha256)
	if err != nil || !bytes.Equal(got, module) {
		t.Fatalf("fetching a %d-byte module: %d bytes, %v", len(module), len(got), err)
	}
	if _, err := fetch(worker, strings.Repeat("0", 64)); status.Code(err) != codes.NotFound {
		t.Errorf("unknown module: %v", err)
	}
	if _, err := fetch(worker, "../../etc/passwd"); status.Code(err) != codes.InvalidArgument {
		t.Errorf("bad module id: %v", err)
	}
	// Modules are for workers' certificates: no token opens them.
	userTok, _ := c.Client(0).CreateToken(ctx, "eve", "")
	for _, tok := range []string{userTok, c.AdminToken, c.JoinToken} {
		if _, err := fetch(c.ClientWithToken(0, tok).Conn(), d.ModuleSha256); status.Code(err) != codes.Unauthenticated {
			t.Errorf("a token fetching a module: %v", err)
		}
	}
}

// userClient returns a client of pool 0 with a new token of user.
func userClient(ctx context.Context, t *testing.T, c *cluster.Cluster, user string) *taskworker.Client {
	t.Helper()
	tok, err := c.Client(0).CreateToken(ctx, user, "")
	if err != nil {
		t.Fatal(err)
	}
	return c.ClientWithToken(0, tok)
}

// fetchModule fetches a module on conn as a worker would.
func fetchModule(ctx context.Context, conn *grpc.ClientConn, sha string) ([]byte, error) {
	stream, err := v1.NewModuleServiceClient(conn).GetModule(ctx, &v1.GetModuleRequest{ModuleSha256: sha})
	if err != nil {
		return nil, err
	}
	var got []byte
	for {
		chunk, err := stream.Recv()
		if err == io.EOF {
			return got, nil
		}
		if err != nil {
			return nil, err
		}
		got = append(got, chunk.Data...)
	}
}

// TestDeployNamesCannotReachIntoEachOther is the attack on etcd key
// prefixes: Eve's function "reports" against Bob's "reports/daily" (a name
// with '/', refused) and "reports2" (a name that "reports" is a prefix of).
// Eve's history, rollback and undeploy see and touch her versions only, and
// her undeploy leaves the module Bob's versions still use.
func TestDeployNamesCannotReachIntoEachOther(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 1})
	ctx := ctxTimeout(t, 60*time.Second)
	eve, bob := userClient(ctx, t, c, "eve"), userClient(ctx, t, c, "bob")
	star := taskworker.DeploySpec{Runtime: v1.Runtime_RUNTIME_STARLARK, Export: "add2"}
	shared := []byte(addScript)                 // both deploy it: one module
	evesOwn := []byte(addScript + "# eve\n")    // only Eve's versions use it
	bobsOwn := []byte(addScript + "# bob v2\n") // only Bob's

	if _, err := eve.Deploy(ctx, "reports", shared, star); err != nil {
		t.Fatal(err)
	}
	eveV2, err := eve.Deploy(ctx, "reports", evesOwn, star)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"reports/daily", "reports/", "reports/00000000000000000001"} {
		_, err := bob.Deploy(ctx, name, shared, star)
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "function name") {
			t.Errorf("Bob deploying %q: %v; want InvalidArgument naming the function name rule", name, err)
		}
	}
	bobV1, err := bob.Deploy(ctx, "reports2", shared, star)
	if err != nil {
		t.Fatal(err)
	}
	bobV2, err := bob.Deploy(ctx, "reports2", bobsOwn, star)
	if err != nil {
		t.Fatal(err)
	}
	if bobV1.Version != 1 || bobV2.Version != 2 {
		t.Errorf("Bob's versions are numbered %d, %d; want 1, 2 (Eve's history must not count)", bobV1.Version, bobV2.Version)
	}

	history := func(cl *taskworker.Client, name string) []int64 {
		t.Helper()
		h, err := v1.NewDeployServiceClient(cl.Conn()).History(ctx, &v1.HistoryRequest{Name: name})
		if err != nil {
			t.Fatalf("history of %s: %v", name, err)
		}
		var vs []int64
		for _, d := range h.Versions {
			if d.Name != name {
				t.Errorf("history of %s lists a version of %s", name, d.Name)
			}
			vs = append(vs, d.Version)
		}
		return vs
	}
	if got := history(eve, "reports"); len(got) != 2 {
		t.Errorf("Eve's history: versions %v; want her 2", got)
	}
	if _, err := eve.Rollback(ctx, "reports", 0); err != nil {
		t.Fatal(err)
	}
	if err := eve.Undeploy(ctx, "reports"); err != nil {
		t.Fatal(err)
	}

	if got := history(bob, "reports2"); len(got) != 2 || got[0] != 2 || got[1] != 1 {
		t.Errorf("Bob's history after Eve's undeploy: versions %v; want [2 1]", got)
	}
	worker, err := c.EnrollWorker(0, "fetcher")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fetchModule(ctx, worker, bobV1.ModuleSha256); err != nil {
		t.Errorf("the module Bob's version 1 uses (Eve used it too) is gone after Eve's undeploy: %v", err)
	}
	if _, err := fetchModule(ctx, worker, bobV2.ModuleSha256); err != nil {
		t.Errorf("Bob's own module is gone after Eve's undeploy: %v", err)
	}
	if _, err := fetchModule(ctx, worker, eveV2.ModuleSha256); status.Code(err) != codes.NotFound {
		t.Errorf("the module only Eve used outlived her undeploy: %v", err)
	}
	if _, err := bob.Rollback(ctx, "reports2", 1); err != nil {
		t.Errorf("Bob rolling back to his version 1: %v", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
