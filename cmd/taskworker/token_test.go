package main

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hivemind/taskworker/internal/auth"
	"github.com/hivemind/taskworker/internal/cluster"
)

func TestTokenCommands(t *testing.T) {
	c := cluster.New(t, cluster.Options{Workers: 1})
	t.Setenv("TASKWORKER_HOME", t.TempDir())
	t.Setenv("TASKWORKER_POOL", c.PoolAddr(0))
	t.Setenv("TASKWORKER_TOKEN", c.AdminToken)
	t.Setenv("TASKWORKER_CA", writeCA(t, c))
	idLine := regexp.MustCompile(`^token ([0-9a-f]{12}) for user (\S+), role (\S+), expires (.+)\n$`)
	create := func(args ...string) (token, id, stderr string) {
		t.Helper()
		code, stdout, stderr := run(t, append([]string{"token", "create"}, args...)...)
		if code != 0 {
			t.Fatalf("token create %v: exit %d: %s", args, code, stderr)
		}
		m := idLine.FindStringSubmatch(stderr)
		if m == nil {
			t.Fatalf("token create %v: stderr %q does not give the id", args, stderr)
		}
		return strings.TrimSpace(stdout), m[1], stderr
	}

	join, joinID, stderr := create("--join", "--ttl", "1h", "--uses", "5", "--description", "rack\n12")
	if err := auth.Validate(join); err != nil || auth.ID(auth.Hash(join)) != joinID {
		t.Fatalf("join token %q, id %s: %v", join, joinID, err)
	}
	if !strings.Contains(stderr, "for user worker, role worker") || strings.Contains(stderr, "expires never") {
		t.Errorf("join token: %q", stderr)
	}
	alice, aliceID, _ := create("--user", "alice", "--description", "laptop")
	if _, _, stderr := create("--user", "admin", "--role", "user", "--force"); !strings.Contains(stderr, "for user admin, role user, expires never") {
		t.Errorf("forced: %q", stderr)
	}

	code, stdout, stderr := run(t, "token", "ls")
	if code != 0 {
		t.Fatalf("token ls: %s", stderr)
	}
	for _, secret := range []string{c.AdminToken, c.JoinToken, join, alice} {
		if strings.Contains(stdout, secret) || strings.Contains(stdout, auth.Hash(secret)[:auth.IDLen+1]) {
			t.Errorf("token ls shows a secret or more than an id of its hash:\n%s", stdout)
		}
	}
	row := func(id string) string {
		for _, line := range strings.Split(stdout, "\n") {
			if strings.HasPrefix(line, id+" ") {
				return line
			}
		}
		t.Errorf("token ls has no row for %s:\n%s", id, stdout)
		return ""
	}
	if r := row(joinID); !regexp.MustCompile(`worker +worker +\S+ \S+ +\S+ \S+ +never +0/5 +rack 12$`).MatchString(r) {
		t.Errorf("the join token's row: %q", r)
	}
	if r := row(aliceID); !regexp.MustCompile(`alice +user +\S+ \S+ +never +never +- +laptop$`).MatchString(r) {
		t.Errorf("alice's row: %q", r)
	}
	if !strings.HasPrefix(stdout, "ID  ") || !strings.Contains(stdout, "LAST USED") {
		t.Errorf("token ls header: %q", stdout)
	}
	code, stdout, _ = run(t, "token", "ls", "--user", "alice", "--json")
	if code != 0 || !regexp.MustCompile(`"id":\s*"`+aliceID+`"`).MatchString(stdout) || strings.Contains(stdout, joinID) || strings.Contains(stdout, alice) {
		t.Errorf("token ls --user alice --json: %d %s", code, stdout)
	}

	// Revoked: refused from then on, and gone from the list.
	if code, stdout, stderr := run(t, "token", "revoke", aliceID); code != 0 || stdout != "revoked token "+aliceID+" of user alice (role user)\n" {
		t.Fatalf("token revoke: %d %q %q", code, stdout, stderr)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _, stderr := run(t, "call", "--token", alice, "add", "1", "2")
		if code == 1 && strings.Contains(stderr, "Unauthenticated") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a revoked token still works: %d %q", code, stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, stdout, _ := run(t, "token", "ls"); code != 0 || strings.Contains(stdout, aliceID) {
		t.Errorf("the revoked token is still listed: %s", stdout)
	}
	if code, _, stderr := run(t, "token", "revoke", aliceID); code != 1 || !strings.Contains(stderr, "NotFound: no token has id "+aliceID) {
		t.Errorf("revoking it again: %d %q", code, stderr)
	}
	// Only an admin manages tokens.
	bob, _, _ := create("--user", "bob")
	if code, _, stderr := run(t, "token", "ls", "--token", bob); code != 1 || !strings.Contains(stderr, "PermissionDenied") {
		t.Errorf("bob listing tokens: %d %q", code, stderr)
	}
}

// Mistakes in token commands are refused before anything is dialed.
func TestTokenCommandMistakes(t *testing.T) {
	t.Setenv("TASKWORKER_HOME", t.TempDir())
	t.Setenv("TASKWORKER_POOL", "127.0.0.1:1")
	t.Setenv("TASKWORKER_TOKEN", "tw_"+strings.Repeat("a", 43))
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no user", []string{"token", "create"}, "--user is required (or --join for a join token)"},
		{"admin as a user", []string{"token", "create", "--user", "admin", "--role", "user"}, `--user: user "admin" is reserved for the pool's admin token`},
		{"admin by default role", []string{"token", "create", "--user", "admin"}, "with role user for it would act on that user's files"},
		{"worker as an admin", []string{"token", "create", "--user", "Worker", "--role", "admin"}, `user "Worker" is reserved for the pool's worker token`},
		{"join with another role", []string{"token", "create", "--join", "--role", "admin"}, "--join makes a token with role worker; drop --role admin"},
		{"uses on an API token", []string{"token", "create", "--user", "alice", "--uses", "3"}, "--uses limits join tokens only (--join)"},
		{"negative uses", []string{"token", "create", "--join", "--uses", "-1"}, "--uses -1: give a positive count"},
		{"negative ttl", []string{"token", "create", "--user", "alice", "--ttl", "-1h"}, "--ttl -1h0m0s: give a positive duration"},
		{"ttl with no unit", []string{"token", "create", "--user", "alice", "--ttl", "5"}, `invalid argument "5" for "--ttl"`},
		{"revoke a token, not an id", []string{"token", "revoke", "tw_" + strings.Repeat("a", 43)}, "an id is 12 lowercase hex digits, as 'taskworker token ls' shows it"},
		{"revoke nothing", []string{"token", "revoke"}, "accepts 1 arg(s), received 0"},
		{"ls for a bad user", []string{"token", "ls", "--user", "a/b"}, `--user: user "a/b"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := run(t, tt.args...)
			if code == 0 || !strings.Contains(stderr, tt.want) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want an error with %q", code, stdout, stderr, tt.want)
			}
		})
	}
}
