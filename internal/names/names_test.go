package names_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/hivemind/taskworker/internal/names"
)

func TestNames(t *testing.T) {
	sha := strings.Repeat("0123456789abcdef", 4)
	tests := []struct {
		check func(string) error
		kind  string
		name  string
		ok    bool
	}{
		{names.WorkerID, "worker", "worker_001", true},
		{names.WorkerID, "worker", "w-1.zone-a", true},
		{names.WorkerID, "worker", strings.Repeat("w", 128), true},
		{names.WorkerID, "worker", strings.Repeat("w", 129), false},
		{names.WorkerID, "worker", "", false},
		{names.WorkerID, "worker", "_w", false},
		{names.WorkerID, "worker", "a/b", false},
		{names.WorkerID, "worker", "a b", false},
		{names.Function, "function", "add", true},
		{names.Function, "function", "_private.v2:run-1", true},
		{names.Function, "function", strings.Repeat("f", 200), true},
		{names.Function, "function", strings.Repeat("f", 201), false},
		{names.Function, "function", "", false},
		{names.Function, "function", "1add", false},
		{names.Function, "function", "reports/daily", false},
		{names.Function, "function", "reports/", false},
		{names.Function, "function", "add\x00", false},
		{names.Function, "function", "café", false},
		{names.User, "user", "alice@example.org", true},
		{names.User, "user", "bob", true},
		{names.User, "user", "", false},
		{names.User, "user", "bob/eve", false},
		{names.User, "user", "@bob", false},
		{names.Secret, "secret", "EXTERNAL_API_KEY", true},
		{names.Secret, "secret", "external-api.key", true},
		{names.Secret, "secret", "_k", true},
		{names.Secret, "secret", "1key", false},
		{names.Secret, "secret", "", false},
		{names.Secret, "secret", "a/b", false},
		{names.Secret, "secret", "a:b", false},
		{names.Secret, "secret", "{{secret:x}}", false},
		{names.Secret, "secret", strings.Repeat("k", 129), false},
		{names.FileID, "file", "abcdefghijklmnopqrstuvwxyz", true},
		{names.FileID, "file", "234567abcdefghijklmnopqrst", true},
		{names.FileID, "file", "abcdefghijklmnopqrstuvwxy1", false},
		{names.FileID, "file", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", false},
		{names.FileID, "file", "abc", false},
		{names.SHA256, "sha", sha, true},
		{names.SHA256, "sha", strings.ToUpper(sha), false},
		{names.SHA256, "sha", sha[:63], false},
		{names.SHA256, "sha", sha + "0", false},
		{names.SHA256, "sha", sha[:63] + "g", false},
	}
	for _, tt := range tests {
		t.Run(tt.kind+" "+tt.name, func(t *testing.T) {
			err := tt.check(tt.name)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok = %v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, names.ErrInvalid) {
				t.Fatalf("err = %v, does not wrap ErrInvalid", err)
			}
		})
	}
}

func TestTruncate(t *testing.T) {
	tests := []struct {
		s    string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"a longer string", 8, "a longer..."},
		{"héllo", 2, "h..."}, // never half of é
		{"", 0, ""},
	}
	for _, tt := range tests {
		if got := names.Truncate(tt.s, tt.n); got != tt.want {
			t.Errorf("Truncate(%q, %d) = %q, want %q", tt.s, tt.n, got, tt.want)
		}
	}
}

func TestQualifiedFunction(t *testing.T) {
	tests := []struct {
		in          string
		owner, name string
		ok          bool
	}{
		{"reports", "", "reports", true},
		{"bob/reports", "bob", "reports", true},
		{"alice@example.org/f.v2", "alice@example.org", "f.v2", true},
		{"bob/reports/daily", "", "", false},
		{"/reports", "", "", false},
		{"bob/", "", "", false},
		{"b ob/reports", "", "", false},
		{"bob/1reports", "", "", false},
		{"", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			owner, name, err := names.QualifiedFunction(tt.in)
			if (err == nil) != tt.ok || owner != tt.owner || name != tt.name {
				t.Fatalf("got %q, %q, %v; want %q, %q, ok = %v", owner, name, err, tt.owner, tt.name, tt.ok)
			}
			if err != nil && !errors.Is(err, names.ErrInvalid) {
				t.Fatalf("err = %v, does not wrap ErrInvalid", err)
			}
		})
	}
}

func FuzzFunctionHasNoSlash(f *testing.F) {
	f.Add("reports/daily")
	f.Add("reports")
	f.Fuzz(func(t *testing.T, name string) {
		if names.Function(name) == nil && strings.ContainsAny(name, "/\x00") {
			t.Fatalf("%q is accepted, and can reach into another name's etcd keys", name)
		}
	})
}

func ExampleFunction() {
	fmt.Println(names.Function("reports"))
	fmt.Println(names.Function("reports/daily"))
	// Output:
	// <nil>
	// function name "reports/daily": use 1 to 200 letters, digits, '_', '.', ':' or '-', starting with a letter or '_'
}
