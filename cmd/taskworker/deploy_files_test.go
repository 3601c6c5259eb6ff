package main

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/hivemind/taskworker/internal/metrics"
)

// dryRun checks that args is a valid taskworker invocation: a command that
// exists, flags it knows with values they accept, and the arguments it
// takes. Nothing runs.
func dryRun(t *testing.T, where string, args []string) {
	t.Helper()
	root := rootCommand(&env{})
	cmd, rest, err := root.Find(args)
	if err != nil || cmd == root {
		t.Errorf("%s: %q is not a taskworker command: %v", where, args, err)
		return
	}
	if err := cmd.ParseFlags(rest); err != nil {
		t.Errorf("%s: taskworker %s: %v", where, cmd.Name(), err)
		return
	}
	if cmd.Args != nil {
		if err := cmd.Args(cmd, cmd.Flags().Args()); err != nil {
			t.Errorf("%s: taskworker %s: %v", where, cmd.Name(), err)
		}
	}
}

// The compose file's services each run a valid taskworker command, in a
// layout of three etcd members, two pools and four workers in two zones.
func TestComposeFileCommands(t *testing.T) {
	b, err := os.ReadFile("../../deploy/compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Services map[string]struct {
			Image   string   `yaml:"image"`
			Command []string `yaml:"command"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	kinds := map[string]int{}
	zones := map[string]bool{}
	for name, s := range f.Services {
		if s.Image != "taskworker" || len(s.Command) == 0 {
			t.Errorf("service %s: image %q, command %q; want the taskworker image and a command", name, s.Image, s.Command)
			continue
		}
		dryRun(t, "compose service "+name, s.Command)
		kinds[s.Command[0]]++
		for i, a := range s.Command {
			if a == "--label" && i+1 < len(s.Command) && strings.HasPrefix(s.Command[i+1], "zone=") {
				zones[s.Command[i+1]] = true
			}
		}
	}
	if kinds["etcd"] != 3 || kinds["pool"] != 2 || kinds["worker"] != 4 || kinds["init"] != 1 || len(zones) != 2 {
		t.Errorf("compose layout: %v, zones %v; want init, 3 etcd, 2 pools, 4 workers in 2 zones", kinds, zones)
	}
}

// Every systemd unit's ExecStart is a valid taskworker command.
func TestSystemdUnits(t *testing.T) {
	units, _ := filepath.Glob("../../deploy/systemd/*.service")
	if len(units) < 3 {
		t.Fatalf("%d units in deploy/systemd; want the pool, worker and etcd units", len(units))
	}
	for _, u := range units {
		f, err := os.Open(u)
		if err != nil {
			t.Fatal(err)
		}
		var exec string
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "ExecStart=") || exec != "" && strings.HasSuffix(exec, `\`) {
				exec = strings.TrimSuffix(exec, `\`) + " " + strings.TrimPrefix(line, "ExecStart=")
			}
		}
		f.Close()
		exec = regexp.MustCompile(`%[iH]`).ReplaceAllString(exec, "node1")
		fields := strings.Fields(exec)
		if len(fields) < 2 || filepath.Base(fields[0]) != "taskworker" {
			t.Errorf("%s: ExecStart %q does not run taskworker", u, exec)
			continue
		}
		dryRun(t, filepath.Base(u), fields[1:])
	}
}

// The image runs the static binary as a non-root user.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("../../deploy/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, want := range []string{"CGO_ENABLED=0", "./cmd/taskworker", "FROM scratch", "USER 65532"} {
		if !strings.Contains(s, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
}

// The shipped alert rules cover what docs/OPERATIONS.md promises, each with
// a severity and an explanation, and name only metrics that exist: the
// families internal/metrics registers, or etcd's own.
func TestAlertRules(t *testing.T) {
	b, err := os.ReadFile("../../deploy/prometheus/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Name  string
			Rules []struct {
				Alert       string
				Expr        string
				For         string
				Labels      map[string]string
				Annotations map[string]string
			}
		}
	}
	if err := yaml.Unmarshal(b, &file); err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{
		"etcd_mvcc_db_total_size_in_bytes": true,
		"etcd_server_quota_backend_bytes":  true,
	}
	families, err := metrics.New().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		known[f.GetName()] = true
	}
	// Vector families appear in Gather only once they have a child; the
	// registry's descriptions name them all.
	ch := make(chan *prometheus.Desc, 100)
	go func() { metrics.New().Registry.Describe(ch); close(ch) }()
	for d := range ch {
		if m := regexp.MustCompile(`fqName: "([a-z_]+)"`).FindStringSubmatch(d.String()); m != nil {
			known[m[1]] = true
		}
	}
	metricName := regexp.MustCompile(`\b(taskworker|etcd)_[a-z_]+\b`)
	alerts := map[string]bool{}
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			alerts[r.Alert] = true
			if r.Expr == "" || r.For == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s: needs expr, for, a severity, a summary and a description", r.Alert)
			}
			for _, name := range metricName.FindAllString(r.Expr, -1) {
				if !known[name] {
					t.Errorf("alert %s names %s, which no TaskWorker process or etcd exports", r.Alert, name)
				}
			}
		}
	}
	for _, want := range []string{"TaskWorkerWorkerGone", "TaskWorkerRedundancyReduced", "TaskWorkerRepairStalled",
		"TaskWorkerQuotaNear", "TaskWorkerEtcdNearSpaceQuota"} {
		if !alerts[want] {
			t.Errorf("no alert %s", want)
		}
	}
}
