package dnsproxy_test

import (
	"context"
	"fmt"
	"net/netip"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/dnsproxy"
)

// workers is a Directory: the pool passes its registry.
type workers map[string][]netip.AddrPort

func (w workers) Serving(function string) []netip.AddrPort { return w[function] }

// refusePrivate stands for the egress package's address policy.
func refusePrivate(a netip.Addr) error {
	if a.IsPrivate() || a.IsLoopback() {
		return fmt.Errorf("%s is private", a)
	}
	return nil
}

func Example() {
	cfg := dnsproxy.DefaultConfig()
	cfg.Upstreams = []string{"192.0.2.53:53"} // asked only for names outside the zone
	dir := workers{"add": {netip.MustParseAddrPort("10.0.0.5:50052"), netip.MustParseAddrPort("10.0.0.6:50052")}}
	r, err := dnsproxy.New(cfg, refusePrivate, nil, dir)
	if err != nil {
		panic(err)
	}
	ctx := context.Background()

	resp, err := r.Handle(ctx, "alice", &v1.DNSRequest{Domain: "add.fn.taskworker.internal"})
	fmt.Println(resp.GetAddresses(), resp.GetTtlSeconds(), err)

	resp, err = r.Handle(ctx, "alice", &v1.DNSRequest{Domain: "_taskworker._tcp.add.fn.taskworker.internal", RecordType: "SRV"})
	fmt.Println(resp.GetAddresses(), err)

	_, err = r.Handle(ctx, "alice", &v1.DNSRequest{Domain: "sub.fn.taskworker.internal"})
	fmt.Println(err)
	// Output:
	// [10.0.0.5 10.0.0.6] 5 <nil>
	// [0 1 50052 10-0-0-5.add.fn.taskworker.internal 0 1 50052 10-0-0-6.add.fn.taskworker.internal] <nil>
	// rpc error: code = NotFound desc = no such domain: sub.fn.taskworker.internal: no worker serves function "sub" now (function names are matched in lower case)
}
