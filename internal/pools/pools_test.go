package pools

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []string
		wantErr string
	}{
		{"127.0.0.1:50051", []string{"127.0.0.1:50051"}, ""},
		{"a:1,b:2", []string{"a:1", "b:2"}, ""},
		{" a:1 , [::1]:2 ", []string{"a:1", "[::1]:2"}, ""},
		{":50051", nil, `pool address ":50051" has no host`},
		{"", nil, "no pool address"},
		{"  ", nil, "no pool address"},
		{"a:1,", nil, `entry 2 is empty`},
		{"a:1,,b:2", nil, `entry 2 is empty`},
		{",a:1", nil, `entry 1 is empty`},
		{"nonsense", nil, `pool address "nonsense" is not host:port`},
		{"a:1,b", nil, `pool address "b" is not host:port`},
		{"a:http", nil, `port "http" is not a number from 1 to 65535`},
		{"a:0", nil, `port "0" is not a number from 1 to 65535`},
		{"a:65536", nil, `port "65536" is not a number`},
		{"a:", nil, `port "" is not a number`},
		{"::1:5", nil, `is not host:port`},
		{"a:1,a:1", nil, "names a:1 twice"},
	} {
		got, err := Parse(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Parse(%q) = %v, %v; want an error with %q", tc.in, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("Parse(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestTarget(t *testing.T) {
	if got := Target([]string{"a:1"}); got != "a:1" {
		t.Errorf("one address: target %q, want the address itself", got)
	}
	if got := Target([]string{"a:1", "b:2"}); got != Scheme+":///a:1,b:2" {
		t.Errorf("two addresses: target %q", got)
	}
}

// fakeCreds records the host it was made for; its handshake fails with it.
type fakeCreds struct {
	credentials.TransportCredentials
	host string
}

func (f fakeCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("checked as " + f.host)
}

// Each address is checked by its own host, and credentials are made once
// per host.
func TestPerHost(t *testing.T) {
	made := map[string]int{}
	c := PerHost(func(host string) credentials.TransportCredentials {
		made[host]++
		return fakeCreds{host: host}
	})
	for _, tc := range []struct{ authority, want string }{
		{"pool-a.example:50051", "checked as pool-a.example"},
		{"10.0.0.2:50051", "checked as 10.0.0.2"},
		{"[::1]:50051", "checked as ::1"},
		{"pool-a.example:50052", "checked as pool-a.example"},
	} {
		if _, _, err := c.ClientHandshake(context.Background(), tc.authority, nil); err == nil || err.Error() != tc.want {
			t.Errorf("handshake with %s: %v, want %q", tc.authority, err, tc.want)
		}
	}
	if made["pool-a.example"] != 1 || len(made) != 3 {
		t.Errorf("credentials made %v, want once per host", made)
	}
}

func TestNeverSent(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused"`), true},
		{status.Error(codes.Unavailable, `connection error: desc = "transport: authentication handshake failed: untrusted certificate"`), true},
		{status.Error(codes.Unavailable, "name resolver error: produced zero addresses"), true},
		{status.Error(codes.Unavailable, "error reading from server: EOF"), false},
		{status.Error(codes.Unavailable, "the control plane (etcd) is unavailable"), false},
		{status.Error(codes.DeadlineExceeded, "Error while dialing"), false},
		{errors.New("Error while dialing"), false},
		{nil, false},
	} {
		if got := NeverSent(tc.err); got != tc.want {
			t.Errorf("NeverSent(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// The service config parses, and names only read-only methods.
func TestServiceConfig(t *testing.T) {
	for _, rr := range []bool{false, true} {
		sc := serviceConfig(rr)
		if strings.Contains(sc, `"round_robin"`) != rr {
			t.Errorf("round_robin %v: %s", rr, sc)
		}
		for _, verb := range []string{"Push", "Revise", "Upload", "CallFunction", "Delete\"", "Submit", "CreateToken"} {
			if strings.Contains(sc, `"`+verb) {
				t.Errorf("the retry policy names %s, which changes something", verb)
			}
		}
	}
}

// The Python client (python/taskworker/_pools.py) sends the same methods
// again to another pool as this package does: its READ_ONLY table names
// the same services and methods, in the same order.
func TestPythonReadOnlyTableMatches(t *testing.T) {
	src, err := os.ReadFile("../../python/taskworker/_pools.py")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(src), "\nREAD_ONLY = {\n")
	table, _, ok2 := strings.Cut(table, "\n}\n")
	if !ok || !ok2 {
		t.Fatal("no READ_ONLY = {...} table in the Python client")
	}
	lines := strings.Split(table, "\n")
	if len(lines) != len(ReadOnly) {
		t.Errorf("the Python table has %d services, this package %d:\n%s", len(lines), len(ReadOnly), table)
	}
	for svc, methods := range ReadOnly {
		quoted := make([]string, len(methods))
		for i, m := range methods {
			quoted[i] = strconv.Quote(m)
		}
		tuple := strings.Join(quoted, ", ")
		if len(methods) == 1 {
			tuple += ","
		}
		if want := fmt.Sprintf("    %q: (%s),", svc, tuple); !slices.Contains(lines, want) {
			t.Errorf("the Python table has no line\n%s\nit has:\n%s", want, table)
		}
	}
}
