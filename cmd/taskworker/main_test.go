package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/hivemind/taskworker"
	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/cluster"
)

func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return runWithInput(t, "", args...)
}

// runWithInput runs a command line with stdin as its standard input.
// writeCA writes the cluster's CA certificate to a file, as TASKWORKER_CA
// names it.
func writeCA(t *testing.T, c *cluster.Cluster) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(path, c.CA.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func runWithInput(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = doMain(args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestClientCommands(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 2})
	t.Setenv("TASKWORKER_HOME", t.TempDir()) // no env file to fall back on
	t.Setenv("TASKWORKER_POOL", c.PoolAddr(0))
	t.Setenv("TASKWORKER_TOKEN", c.AdminToken)
	t.Setenv("TASKWORKER_CA", writeCA(t, c))
	tests := []struct {
		name     string
		args     []string
		code     int
		stdout   string // exact, when set
		contains string // in stdout, or in stderr on failure
	}{
		{"add", []string{"call", "add", "1", "2"}, 0, "3\n", ""},
		{"hello", []string{"call", "hello"}, 0, "\"Hello from HiveMind!\"\n", ""},
		{"string argument", []string{"call", "echo", "plain words"}, 0, "\"plain words\"\n", ""},
		{"JSON argument", []string{"call", "echo", `{"a":[1,2]}`}, 0, "{\"a\":[1,2]}\n", ""},
		{"wrong arity", []string{"call", "add", "1"}, 1, "", "taskworker: InvalidArgument: add: takes 2 arguments"},
		{"unknown function", []string{"call", "nope"}, 1, "", "taskworker: NotFound: no function \"nope\""},
		{"bad token", []string{"call", "--token", "x", "add", "1", "2"}, 1, "", "taskworker: malformed API token"},
		{"negative numbers", []string{"call", "add", "-1", "-5"}, 0, "-6\n", ""},
		{"words after NAME are arguments", []string{"call", "echo", "--timeout"}, 0, "\"--timeout\"\n", ""},
		{"broken JSON", []string{"call", "echo", "[1,2"}, 1, "", "argument 1 ([1,2) starts like JSON but is not valid JSON"},
		{"--json refuses a bare word", []string{"call", "--json", "echo", "hello"}, 1, "", "argument 1 (hello) is not valid JSON"},
		{"--json takes JSON", []string{"call", "--json", "echo", `"hello"`}, 0, "\"hello\"\n", ""},
		{"args file and ARGs", []string{"call", "--args-file", "-", "add", "1"}, 1, "", "pass the arguments one way"},
		{"args file missing", []string{"call", "--args-file", "/nonexistent/args.json", "add"}, 1, "", "--args-file: open /nonexistent/args.json"},
		{"pool not host:port", []string{"call", "--pool", "nonsense", "add", "1", "2"}, 1, "", `pool address "nonsense" is not host:port`},
		{"nothing at the pool address", []string{"call", "--pool", "127.0.0.1:1", "add", "1", "2"}, 1, "", "cannot reach the pool at 127.0.0.1:1"},
		{"no function", []string{"call"}, 1, "", "requires at least 1 arg"},
		{"pool list with an empty entry", []string{"call", "--pool", c.PoolAddr(0) + ",", "add", "1", "2"}, 1, "", "entry 2 is empty"},
		{"pool list with a bad port", []string{"call", "--pool", c.PoolAddr(0) + ",127.0.0.1:99999", "add", "1", "2"}, 1, "", `port "99999" is not a number from 1 to 65535`},
		{"nothing at any pool address", []string{"call", "--pool", "127.0.0.1:1,127.0.0.1:2", "add", "1", "2"}, 1, "", "cannot reach any of the pools at 127.0.0.1:1, 127.0.0.1:2"},
		{"one pool of two answers", []string{"call", "--pool", "127.0.0.1:1," + c.PoolAddr(0), "add", "1", "2"}, 0, "3\n", ""},
		{"TASKWORKER_POOL names two", []string{"call", "--pool", c.PoolAddr(0) + ", localhost" + c.PoolAddr(0)[strings.LastIndex(c.PoolAddr(0), ":"):], "add", "2", "2"}, 0, "4\n", ""},
		{"workers", []string{"workers"}, 0, "", "worker_002"},
		{"functions", []string{"functions"}, 0, "", "func(float64, float64) float64"},
		{"token for a bad role", []string{"token", "create", "--user", "a", "--role", "god"}, 1, "", `unknown role "god"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := run(t, tt.args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d; stdout %q stderr %q", code, tt.code, stdout, stderr)
			}
			if tt.stdout != "" && stdout != tt.stdout {
				t.Errorf("stdout %q, want %q", stdout, tt.stdout)
			}
			if tt.contains != "" && !strings.Contains(stdout+stderr, tt.contains) {
				t.Errorf("output %q %q lacks %q", stdout, stderr, tt.contains)
			}
			if code != 0 && strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Errorf("error is not one line: %q", stderr)
			}
		})
	}

	// Arguments from standard input or a file.
	if code, out, stderr := runWithInput(t, " [40, 2]\n", "call", "--args-file", "-", "add"); code != 0 || out != "42\n" {
		t.Errorf("--args-file -: %d %q %q", code, out, stderr)
	}
	dir := t.TempDir()
	argsFile := filepath.Join(dir, "args.json")
	os.WriteFile(argsFile, []byte(`{"not": "an array"}`), 0o600)
	if code, _, stderr := run(t, "call", "--args-file", argsFile, "add"); code != 1 || !strings.Contains(stderr, "must hold one JSON array of arguments") {
		t.Errorf("--args-file with an object: %d %q", code, stderr)
	}
	// 20 MB of arguments: over gRPC's message limit, which the pool's own
	// check never sees; the error says what to do instead.
	os.WriteFile(argsFile, []byte(`["`+strings.Repeat("x", 20<<20)+`"]`), 0o600)
	if code, _, stderr := run(t, "call", "--args-file", argsFile, "echo"); code != 1 || !strings.Contains(stderr, "the pool accepts at most 16777216 in one message (pass large data as a file: taskworker push FILE") {
		t.Errorf("20 MB of arguments: %d %q", code, stderr)
	}
	// Deploy errors name the file as given and write durations as people do.
	script := filepath.Join(dir, "syntax.star")
	os.WriteFile(script, []byte("def f(x):\n    return x +\n"), 0o600)
	if code, _, stderr := run(t, "deploy", "f", script); code != 1 || !strings.Contains(stderr, "syntax.star:2:") {
		t.Errorf("deploy of a script with a syntax error: %d %q", code, stderr)
	}
	os.WriteFile(script, []byte("def f(x):\n    return x\n"), 0o600)
	if code, _, stderr := run(t, "deploy", "--export", "nosuch", "f", script); code != 1 || !strings.Contains(stderr, `syntax.star has no top-level function "nosuch"`) {
		t.Errorf("deploy with a missing export: %d %q", code, stderr)
	}
	if code, _, stderr := run(t, "deploy", "--timeout", "10m", "f", script); code != 1 || !strings.Contains(stderr, "timeout 10m is over the operator's maximum of 5m; lower --timeout") {
		t.Errorf("deploy with a long timeout: %d %q", code, stderr)
	}

	// A token made for alice works, and acts as alice.
	code, tok, stderr := run(t, "token", "create", "--user", "alice")
	if code != 0 {
		t.Fatalf("token create: %s", stderr)
	}
	if code, out, stderr := run(t, "call", "--token", strings.TrimSpace(tok), "add", "2", "2"); code != 0 || out != "4\n" {
		t.Fatalf("call with alice's token: %d %q %q", code, out, stderr)
	}
	// ...but cannot make tokens.
	if code, _, stderr := run(t, "token", "create", "--token", strings.TrimSpace(tok), "--user", "bob"); code != 1 || !strings.Contains(stderr, "PermissionDenied") {
		t.Fatalf("alice making a token: %d %q", code, stderr)
	}
	// workers --json is JSON with the workers in it.
	_, out, _ := run(t, "workers", "--json")
	var listed struct{ Workers []struct{ WorkerId string } }
	if err := json.Unmarshal([]byte(out), &listed); err != nil || len(listed.Workers) != 2 {
		t.Fatalf("workers --json: %v %q", err, out)
	}
}

func TestNoPoolConfigured(t *testing.T) {
	t.Setenv("TASKWORKER_HOME", t.TempDir())
	t.Setenv("TASKWORKER_POOL", "")
	t.Setenv("TASKWORKER_TOKEN", "")
	t.Setenv("TASKWORKER_CA", "")
	code, _, stderr := run(t, "call", "add", "1", "2")
	if code != 1 || !strings.Contains(stderr, "no pool address") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}

func TestCLIArgs(t *testing.T) {
	tests := []struct {
		words  []string
		strict bool
		want   string // JSON, or the error's start
	}{
		{[]string{"1", "two", `"three"`, "[4]", "{\"five\":5}", "true", "", "-1"}, false, `[1,"two","three",[4],{"five":5},true,"",-1]`},
		{[]string{"1", `"two"`, "null"}, true, `[1,"two",null]`},
		{[]string{"1", "two"}, true, "argument 2 (two) is not valid JSON"},
		{[]string{"[1,2"}, false, "argument 1 ([1,2) starts like JSON"},
		{[]string{`{"a":`}, false, "argument 1 ({\"a\":) starts like JSON"},
		{[]string{`"unterminated`}, false, "argument 1 (\"unterminated) starts like JSON"},
		{[]string{"1 2"}, false, `["1 2"]`},
		{nil, false, `[]`},
	}
	for _, tt := range tests {
		got, err := cliArgs(tt.words, tt.strict)
		if err != nil {
			got = []byte(err.Error())
		}
		if !strings.HasPrefix(string(got), tt.want) {
			t.Errorf("cliArgs(%q, %v) = %s, want %s", tt.words, tt.strict, got, tt.want)
		}
	}
}

func TestFileCommands(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 3})
	t.Setenv("TASKWORKER_HOME", t.TempDir())
	t.Setenv("TASKWORKER_POOL", c.PoolAddr(0))
	t.Setenv("TASKWORKER_TOKEN", c.AdminToken)
	t.Setenv("TASKWORKER_CA", writeCA(t, c))
	dir := t.TempDir()
	src := filepath.Join(dir, "notes.txt")
	content := strings.Repeat("a line of notes\n", 20_000) // 320 KB: sharded, not inline
	if err := os.WriteFile(src, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := run(t, "push", src)
	if code != 0 {
		t.Fatalf("push: %s", stderr)
	}
	id := strings.TrimSpace(out)
	dst := filepath.Join(dir, "copy.txt")
	if code, _, stderr := run(t, "get", id, "-o", dst); code != 0 {
		t.Fatalf("get: %s", stderr)
	}
	if got, _ := os.ReadFile(dst); string(got) != content {
		t.Fatalf("get wrote %d bytes, want %d", len(got), len(content))
	}
	os.WriteFile(src, []byte("revised"), 0o600)
	if code, out, stderr := run(t, "revise", id, src, "--expect-version", "1"); code != 0 || strings.TrimSpace(out) != "2" {
		t.Fatalf("revise: %d %q %q", code, out, stderr)
	}
	if code, _, stderr := run(t, "revise", id, src, "--expect-version", "1"); code != 1 || !strings.Contains(stderr, "FailedPrecondition: file "+id+" is at version 2, not 1") {
		t.Fatalf("a stale revise: %d %q", code, stderr)
	}
	if _, out, _ := run(t, "get", id); out != "revised" {
		t.Fatalf("get to stdout: %q", out)
	}
	if _, out, _ := run(t, "history", id); !strings.Contains(out, "notes.txt") || strings.Count(out, "\n") != 3 {
		t.Fatalf("history:\n%s", out)
	}
	if _, out, _ := run(t, "files"); !strings.Contains(out, id) {
		t.Fatalf("files:\n%s", out)
	}
	_, out, _ = run(t, "sync")
	if !strings.Contains(out, "created "+id+" 2 notes.txt") || !strings.Contains(out, "cursor ") {
		t.Fatalf("sync:\n%s", out)
	}
	cursor := strings.TrimPrefix(strings.TrimSpace(out[strings.LastIndex(out, "cursor "):]), "cursor ")
	if code, _, stderr := run(t, "rm", id); code != 0 {
		t.Fatalf("rm: %s", stderr)
	}
	if _, out, _ := run(t, "sync", "--cursor", cursor); !strings.Contains(out, "deleted "+id) {
		t.Fatalf("sync after rm:\n%s", out)
	}
	if code, _, stderr := run(t, "get", id); code != 1 || !strings.Contains(stderr, "NotFound") {
		t.Fatalf("get after rm: %d %q", code, stderr)
	}
	if _, out, _ := run(t, "status"); !strings.Contains(out, "workers:  3") {
		t.Fatalf("status:\n%s", out)
	}
}

// What a person gets wrong on the command line is refused with a message
// that says what to do, before anything is dialled.
func TestCommandLineMistakes(t *testing.T) {
	t.Setenv("TASKWORKER_HOME", t.TempDir())
	t.Setenv("TASKWORKER_POOL", "127.0.0.1:1")
	t.Setenv("TASKWORKER_TOKEN", "tw_"+strings.Repeat("a", 43))
	t.Setenv("TASKWORKER_CA", "")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown log level", []string{"--log-level", "trace", "workers"}, `--log-level "trace": use debug, info, warn or error`},
		{"unknown log format", []string{"--log-format", "xml", "workers"}, `--log-format "xml": use text or json`},
		{"unknown subcommand of a group", []string{"token", "list"}, `unknown command "list" for "taskworker token"`},
		{"unknown subcommand of bench", []string{"bench", "nosuch"}, `unknown command "nosuch" for "taskworker bench"`},
		{"token cut short", []string{"call", "--token", "tw_abc", "add"}, "a token is tw_ followed by 43 characters"},
		// Names are checked by the pool's rules before anything is dialed.
		{"function name with two slashes", []string{"call", "bob/reports/daily"}, `function name "reports/daily": use 1 to 200 letters`},
		{"owner that is no user name", []string{"call", "../reports"}, `user "..": use 1 to 128 letters`},
		{"grant to no user name", []string{"grant", "reports", "--user", "a b"}, `--user: user "a b"`},
		{"deploy name with a slash", []string{"deploy", "a/b", "f.star"}, `function name "a/b"`},
		{"not a file id", []string{"get", "README.md"}, `file id "README.md": a file id is 26 characters`},
		{"one bad file id of several", []string{"rm", "aaaaaaaaaaaaaaaaaaaaaaaaaa", "../x"}, `file id "../x"`},
		{"worker id that is a path", []string{"worker", "--pool", "127.0.0.1:1", "--id", "../../etc"}, `--id: worker id "../../etc"`},
		{"user name with a slash", []string{"token", "create", "--user", "eve/bob"}, `--user: user "eve/bob"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := run(t, tt.args...)
			if code == 0 || !strings.Contains(stderr, tt.want) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want an error with %q", code, stdout, stderr, tt.want)
			}
		})
	}
	// A pool on a busy address says so before it writes anything.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	_, port, _ := net.SplitHostPort(busy.Addr().String())
	if code, _, stderr := run(t, "pool", "--listen", busy.Addr().String()); code != 1 || !strings.Contains(stderr, "address already in use: another process serves there") || !strings.Contains(stderr, "pass --listen with a free port") {
		t.Errorf("pool on a busy address: %d %q", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(os.Getenv("TASKWORKER_HOME"), "pool-"+port)); !os.IsNotExist(err) {
		t.Errorf("pool on a busy address made its data directory: %v", err)
	}
	// So does a worker.
	if code, _, stderr := run(t, "worker", "--pool", "127.0.0.1:1", "--listen", busy.Addr().String()); code != 1 || !strings.Contains(stderr, "address already in use: another process serves there (perhaps another worker)") {
		t.Errorf("worker on a busy address: %d %q", code, stderr)
	}
	// A group with no subcommand named prints its help, and succeeds.
	if code, stdout, _ := run(t, "token"); code != 0 || !strings.Contains(stdout, "create") {
		t.Errorf("token: exit %d, %q", code, stdout)
	}
}

// Every flag's help reads as written: cobra takes a backquoted word in a
// usage string as the flag's value name ("--pool taskworker up"), and adds
// "(default X)" after a usage that may already name one.
func TestFlagUsage(t *testing.T) {
	root := rootCommand(&env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard})
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if strings.Contains(f.Usage, "`") {
				t.Errorf("%s --%s: usage %q has a backquote", c.CommandPath(), f.Name, f.Usage)
			}
			zero := map[string]bool{"": true, "0": true, "false": true, "[]": true, "0s": true}
			if !zero[f.DefValue] && strings.Contains(f.Usage, "(default") {
				t.Errorf("%s --%s: usage %q names a default and cobra adds (default %s)", c.CommandPath(), f.Name, f.Usage, f.DefValue)
			}
		})
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// grpcurl shows bytes as base64; args_json and result_json carry the same
// JSON as text. Shown here as grpcurl would print it (protojson).
func TestCallWithJSONText(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 1})
	client, err := taskworker.Dial(c.PoolAddr(0), taskworker.WithToken(c.AdminToken), taskworker.WithCA(c.CA.CertPEM()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	rpc := v1.NewRPCServiceClient(client.Conn())
	tests := []struct {
		name string
		req  string // as grpcurl -d takes it
		want string // the response as grpcurl prints it, or the error
	}{
		{"JSON text", `{"function_name": "add", "args_json": "[1, 2]"}`, `"result":"Mw==","workerId":"worker_001","resultJson":"3"`},
		{"bytes, as before", `{"function_name": "add", "args": "WzEsMl0="}`, `{"result":"Mw==","workerId":"worker_001"}`},
		{"both", `{"function_name": "add", "args": "WzEsMl0=", "args_json": "[1, 2]"}`, "InvalidArgument desc = both args and args_json are set; set one"},
		{"broken JSON", `{"function_name": "add", "args_json": "[1, 2"}`, `InvalidArgument desc = args_json is not valid JSON: "[1, 2"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &v1.FunctionCallRequest{}
			if err := protojson.Unmarshal([]byte(tt.req), req); err != nil {
				t.Fatal(err)
			}
			resp, err := rpc.CallFunction(t.Context(), req)
			got := ""
			if err != nil {
				got = err.Error()
			} else {
				b, _ := protojson.MarshalOptions{}.Marshal(resp)
				got = strings.ReplaceAll(string(b), " ", "")
			}
			if !strings.Contains(got, tt.want) {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

// docs/cli is the CLI reference generated from the command tree; it must be
// regenerated (go run ./cmd/taskworker gen-docs docs/cli) when a command
// changes. Defaults that depend on the machine (home, host name) would make
// it differ from one machine to the next, so TASKWORKER_HOME is moved.
func TestCLIReferenceIsCurrent(t *testing.T) {
	t.Setenv("TASKWORKER_HOME", t.TempDir())
	dir := t.TempDir()
	if code, _, stderr := run(t, "gen-docs", dir); code != 0 {
		t.Fatalf("gen-docs: %s", stderr)
	}
	const committed = "../../docs/cli"
	fresh, _ := os.ReadDir(dir)
	old, _ := os.ReadDir(committed)
	if len(fresh) != len(old) {
		t.Errorf("%d pages generated, %d in %s: run go run ./cmd/taskworker gen-docs docs/cli", len(fresh), len(old), committed)
	}
	for _, f := range fresh {
		want, _ := os.ReadFile(filepath.Join(dir, f.Name()))
		got, err := os.ReadFile(filepath.Join(committed, f.Name()))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("docs/cli/%s is stale (%v): run go run ./cmd/taskworker gen-docs docs/cli", f.Name(), err)
		}
	}
}

// The default directories of pool and worker never meet those of 'up'
// (HOME/pool, HOME/workers/ID), nor each other's across networks.
func TestDefaultDirectories(t *testing.T) {
	home := t.TempDir()
	t.Setenv("TASKWORKER_HOME", home)
	tests := []struct {
		got, want string
	}{
		{defaultPoolDir("0.0.0.0:7051"), "pool-7051"},
		{defaultPoolDir("127.0.0.1:50051"), "pool-50051"},
		{defaultPoolDir("[::1]:7051"), "pool-7051"},
		{defaultPoolDir("127.0.0.1:0"), "pool-any"},
		{defaultWorkerDir("10.0.0.5:7051", "worker_001"), "joined/10.0.0.5_7051/worker_001"},
		{defaultWorkerDir("127.0.0.1:50051", "worker_001"), "joined/127.0.0.1_50051/worker_001"},
		{defaultWorkerDir("[::1]:7051", "w"), "joined/__1_7051/w"},
		{defaultWorkerDir("", "bench"), "joined/standalone/bench"},
	}
	for _, tt := range tests {
		if want := filepath.Join(home, tt.want); tt.got != want {
			t.Errorf("got %s, want %s", tt.got, want)
		}
	}
}

// How call turns command-line words into arguments.
func Example_cliArgs() {
	for _, words := range [][]string{{"1", "-1", "two", `"three"`, "[4]"}, {"[1,2"}} {
		b, err := cliArgs(words, false)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Println(string(b))
	}
	// Output:
	// [1,-1,"two","three",[4]]
	// argument 1 ([1,2) starts like JSON but is not valid JSON (unexpected end of JSON input); fix it, or pass it as a JSON string
}

func TestLogFormats(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		var buf strings.Builder
		e := &env{stderr: &buf, logLevel: "info", logFormat: format}
		e.logger().Info("pool ready", "address", "127.0.0.1:7051")
		line := strings.TrimSpace(buf.String())
		switch format {
		case "json":
			var rec map[string]any
			if err := json.Unmarshal([]byte(line), &rec); err != nil || rec["msg"] != "pool ready" || rec["address"] != "127.0.0.1:7051" {
				t.Errorf("json log line %q: %v, %v", line, rec, err)
			}
		case "text":
			if !strings.Contains(line, `msg="pool ready" address=127.0.0.1:7051`) {
				t.Errorf("text log line %q", line)
			}
		}
	}
}
