package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDeployTenantsThroughTheCLI runs the built binary's `up`, and Bob and
// Eve, each with a token of their own, through the commands: Bob's private
// function is NotFound to Eve, in the words of one that does not exist,
// until he grants it to her; her own function of the same name is hers.
func TestDeployTenantsThroughTheCLI(t *testing.T) {
	dir := t.TempDir()
	p, vars := startUp(t, "--dir", dir, "--workers", "1", "--listen", freeAddr(t))
	defer func() {
		_ = p.Signal(syscall.SIGINT)
		select {
		case <-p.Done():
		case <-time.After(30 * time.Second):
			t.Error("up did not stop on SIGINT")
		}
	}()
	base := []string{"TASKWORKER_HOME=" + dir, "TASKWORKER_POOL=" + vars["TASKWORKER_POOL"], "TASKWORKER_CA=" + vars["TASKWORKER_CA"]}
	admin := slices.Concat(base, []string{"TASKWORKER_TOKEN=" + vars["TASKWORKER_TOKEN"]})
	as := map[string][]string{}
	for _, user := range []string{"bob", "eve"} {
		out, err := runCLI(t, admin, "token", "create", "--user", user)
		tok := ""
		for _, f := range strings.Fields(out) {
			if strings.HasPrefix(f, "tw_") {
				tok = f
			}
		}
		if err != nil || tok == "" {
			t.Fatalf("token create --user %s: %q, %v", user, out, err)
		}
		as[user] = slices.Concat(base, []string{"TASKWORKER_TOKEN=" + tok})
	}
	scripts := t.TempDir()
	for _, who := range []string{"bob", "eve"} {
		script := filepath.Join(scripts, who+".star")
		if err := os.WriteFile(script, []byte("def reports():\n    return \""+who+"\"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := runCLI(t, as[who], "deploy", "reports", script); err != nil || !strings.Contains(out, "private") {
			t.Fatalf("%s deploying reports: %q, %v", who, out, err)
		}
	}
	expect := func(user string, want string, args ...string) {
		t.Helper()
		var out string
		var err error
		// The worker may take a moment to start its Starlark children.
		deadline := time.Now().Add(30 * time.Second)
		for {
			out, err = runCLI(t, as[user], args...)
			if strings.Contains(out, want) || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if !strings.Contains(out, want) {
			t.Errorf("%s: taskworker %s: %q, %v; want %q", user, strings.Join(args, " "), out, err, want)
		}
	}
	expect("bob", `"bob"`, "call", "reports")
	expect("eve", `"eve"`, "call", "reports")
	expect("eve", `no function "bob/reports": no live worker serves it`, "call", "bob/reports")
	expect("eve", `no function "bob/ghost": no live worker serves it`, "call", "bob/ghost")
	expect("eve", `no deployed function "bob/reports"`, "undeploy", "bob/reports")
	expect("eve", `no deployed function "bob/reports"`, "deploy", "history", "bob/reports")
	if out, _ := runCLI(t, as["eve"], "functions"); strings.Contains(out, "bob/") {
		t.Errorf("Eve's functions list Bob's private one:\n%s", out)
	}
	expect("bob", "reports is granted to: eve", "grant", "reports", "--user", "eve")
	expect("eve", `"bob"`, "call", "bob/reports")
	expect("eve", "bob/reports", "functions")
	expect("eve", "only its owner", "undeploy", "bob/reports")
	expect("bob", "granted to: eve", "deploy", "history", "reports")
	expect("bob", "reports is granted to no one", "revoke", "reports", "--user", "eve")
	expect("eve", `no function "bob/reports"`, "call", "bob/reports")
	expect("bob", `"bob"`, "call", "reports")
}
