package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// cliAs runs a client command as the user of token, with stdin, and
// returns its stdout and stderr together.
func (n *network) cliAs(token, stdin string, args ...string) (string, error) {
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), "TASKWORKER_POOL="+n.poolAddr, "TASKWORKER_TOKEN="+token, "TASKWORKER_CA="+n.ca())
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// Deployed functions read their owner's secrets and reach the network only
// through the pool, under the grants and the --allow-host rules, with every
// process real: a Starlark function of Bob's reads a secret granted at
// deploy, and sends another to an allowed server by injection, never seeing
// it; a function without the grant, another host, and Eve are all refused;
// no log of the pool or a worker, at debug level, holds either value.
func TestDeployedFunctionsSecretsAndEgress(t *testing.T) {
	const (
		dbPassword = "db-password-4f1c0a9e77"
		apiKey     = "api-key-b93d52e610"
	)
	var seen []string
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Header.Get("Authorization"))
		fmt.Fprintf(w, "hello; you sent %s", r.Header.Get("Authorization"))
	}))
	defer api.Close()

	n := &network{t: t, dir: t.TempDir(), poolAddr: freeAddr(t), poolArgs: []string{"--egress-allow-net", "127.0.0.1/32"}}
	n.startPool()
	n.workers = append(n.workers, n.startWorker("worker_001"))
	n.waitWorkers(1, 20*time.Second)
	token := func(user string) string {
		out, err := n.cli("token", "create", "--user", user)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	bob, eve := token("bob"), token("eve")
	must := func(out string, err error) string {
		t.Helper()
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return out
	}
	must(n.cliAs(bob, dbPassword, "secret", "put", "DB_PASSWORD"))
	must(n.cliAs(bob, apiKey, "secret", "put", "API_KEY"))
	must(n.cliAs(bob, "", "secret", "grant", "API_KEY", "--function", "report", "--host", api.URL))

	script := filepath.Join(t.TempDir(), "report.star")
	err := os.WriteFile(script, []byte(fmt.Sprintf(`
def report(what):
    if what == "password":
        return secret("DB_PASSWORD")[:3]
    if what == "api":
        r = http.get(%q, headers = {"Authorization": "Bearer {{secret:API_KEY}}"})
        return r.body
    if what == "elsewhere":
        return http.get("http://127.0.0.1:1/").body
    return secret(what)
`, api.URL)), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	must(n.cliAs(bob, "", "deploy", "report", script, "--secret", "DB_PASSWORD", "--allow-host", api.URL))

	// The granted secret, read by the function during its call.
	if out := must(n.cliAs(bob, "", "call", "report", "password")); out != `"db-"` {
		t.Errorf("the function's read of DB_PASSWORD: %s", out)
	}
	// The injected key reaches the server; what the function sees of it is
	// redacted.
	out := must(n.cliAs(bob, "", "call", "report", "api"))
	if len(seen) != 1 || seen[0] != "Bearer "+apiKey {
		t.Errorf("the API server saw Authorization %q", seen)
	}
	if strings.Contains(out, apiKey) || !strings.Contains(out, "redacted") {
		t.Errorf("the function saw the API's answer as %s", out)
	}
	for _, tc := range []struct{ what, want string }{
		// The script's error carries the pool's code, as the guest saw it.
		{"API_KEY", "permission_denied"},   // granted for injection toward a host, not to read
		{"elsewhere", "permission_denied"}, // no --allow-host for it
		{"NO_SUCH", "not_found"},
	} {
		out, err := n.cliAs(bob, "", "call", "report", tc.what)
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("call report %s: %v, %s; want %s", tc.what, err, out, tc.want)
		}
	}
	// Eve cannot take Bob's secret: not by deploying with its name (she has
	// none), nor by calling his function (private), nor with a secret of
	// her own of the same name (hers, not his).
	if out, err := n.cliAs(eve, "", "deploy", "steal", script, "--secret", "DB_PASSWORD"); err == nil {
		t.Errorf("eve's deploy with --secret DB_PASSWORD: %s", out)
	}
	if out, err := n.cliAs(eve, "", "call", "bob/report", "password"); err == nil || !strings.Contains(out, "NotFound") {
		t.Errorf("eve calls bob/report: %v, %s", err, out)
	}
	must(n.cliAs(eve, "eves-own-value", "secret", "put", "DB_PASSWORD"))
	must(n.cliAs(eve, "", "deploy", "report", script, "--secret", "DB_PASSWORD"))
	if out := must(n.cliAs(eve, "", "call", "report", "password")); out != `"eve"` {
		t.Errorf("eve's function read %s, want her own value", out)
	}
	// Reads are audited; values are in no log.
	if out := must(n.cliAs(bob, "", "audit")); !strings.Contains(out, "DB_PASSWORD") {
		t.Errorf("bob's audit does not list the read:\n%s", out)
	}
	for _, p := range append(n.workers, n.pool) {
		for _, v := range []string{dbPassword, apiKey} {
			if bytes.Contains([]byte(p.Output()), []byte(v)) {
				t.Errorf("the output of %s holds a secret's value", p.Name)
			}
		}
	}
}
