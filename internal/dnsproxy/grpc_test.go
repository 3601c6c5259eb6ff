package dnsproxy

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
)

func TestHandle(t *testing.T) {
	up := newUpstreamServer(t, testZone...)
	allow := func(user, name string) error {
		if name == "forbidden.example." {
			return errors.New("forbidden.example is on no allowlist (rule: allowlist)")
		}
		return nil
	}
	r := newTestResolver(t, testConfig(up, nil), allow, testDirectory)
	down := DefaultConfig()
	broken := newUpstreamServer(t)
	broken.configure(func() { broken.rcode = 2 }) // SERVFAIL
	down.Upstreams = []string{broken.addr}
	unavailable := newTestResolver(t, down, nil, nil)

	for _, tc := range []struct {
		name     string
		r        *Resolver
		req      *v1.DNSRequest
		code     codes.Code
		want     []string
		contains string
	}{
		{"A", r, &v1.DNSRequest{Domain: "www.example", RecordType: "A"}, codes.OK, []string{"192.0.2.10"}, ""},
		{"empty type", r, &v1.DNSRequest{Domain: "www.example"}, codes.OK, []string{"192.0.2.10", "2001:db8::10"}, ""},
		{"lower-case type", r, &v1.DNSRequest{Domain: "txt.example", RecordType: "txt"}, codes.OK, []string{"v=spf1 -all"}, ""},
		{"SRV", r, &v1.DNSRequest{Domain: "_svc._tcp.example", RecordType: "SRV"}, codes.OK, []string{"10 5 8080 www.example"}, ""},
		{"CNAME", r, &v1.DNSRequest{Domain: "alias.example", RecordType: "CNAME"}, codes.OK, []string{"www.example"}, ""},
		{"zone", r, &v1.DNSRequest{Domain: "add.fn.taskworker.internal", UserId: "bob"}, codes.OK, []string{"10.1.0.5", "127.0.0.1", "fd00::5"}, ""},
		{"bad name", r, &v1.DNSRequest{Domain: "exa mple.com"}, codes.InvalidArgument, nil, "use letters, digits"},
		{"empty name", r, &v1.DNSRequest{}, codes.InvalidArgument, nil, "empty"},
		{"bad type", r, &v1.DNSRequest{Domain: "www.example", RecordType: "MX"}, codes.InvalidArgument, nil, "use A, AAAA, CNAME, TXT or SRV"},
		{"refused name", r, &v1.DNSRequest{Domain: "forbidden.example"}, codes.PermissionDenied, nil, "rule: allowlist"},
		{"private answer", r, &v1.DNSRequest{Domain: "private.example", RecordType: "A"}, codes.PermissionDenied, nil, "rule: RFC 1918"},
		{"NXDOMAIN", r, &v1.DNSRequest{Domain: "nosuch.example"}, codes.NotFound, nil, "no such domain: nosuch.example"},
		{"NODATA", r, &v1.DNSRequest{Domain: "v4only.example", RecordType: "AAAA"}, codes.NotFound, nil, "no AAAA records"},
		{"loop", r, &v1.DNSRequest{Domain: "loop1.example"}, codes.NotFound, nil, "loops"},
		{"upstream down", unavailable, &v1.DNSRequest{Domain: "www.example"}, codes.Unavailable, nil, "try again later"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := tc.r.Handle(t.Context(), "alice", tc.req)
			if got := status.Code(err); got != tc.code {
				t.Fatalf("code %s (%v), want %s", got, err, tc.code)
			}
			if err != nil {
				if !strings.Contains(status.Convert(err).Message(), tc.contains) {
					t.Errorf("message %q does not say %q", status.Convert(err).Message(), tc.contains)
				}
				return
			}
			got := slices.Sorted(slices.Values(resp.GetAddresses()))
			if !slices.Equal(got, tc.want) {
				t.Errorf("addresses %q, want %q", got, tc.want)
			}
			if resp.GetTtlSeconds() < 1 || resp.GetTtlSeconds() > 300 {
				t.Errorf("ttl_seconds %d", resp.GetTtlSeconds())
			}
		})
	}
}

func TestHandleCanceled(t *testing.T) {
	up := newUpstreamServer(t, testZone...)
	gate := make(chan struct{})
	up.configure(func() { up.gate = gate })
	defer close(gate)
	r := newTestResolver(t, testConfig(up, nil), nil, nil)
	go func() { _, _ = r.Resolve(context.Background(), "", "www.example", 1) }()
	for up.totalQueries() == 0 {
		time.Sleep(time.Millisecond) // until the first query is in flight
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := r.Handle(ctx, "", &v1.DNSRequest{Domain: "www.example", RecordType: "A"}); status.Code(err) != codes.Canceled {
		t.Errorf("code %s, want Canceled", status.Code(err))
	}
}
