package taskworker

import (
	"context"
	"time"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
)

// Resolve asks the pool's DNSService for name's records of recordType
// ("A", "AAAA", "CNAME", "TXT", "SRV"; "" for A and AAAA together). The
// pool resolves under the network's policy: private addresses are left
// out, and names in the network's zone (add.fn.taskworker.internal by
// default) answer with the pools that serve the function. It returns the
// answers as text and how long they may be kept.
func (c *Client) Resolve(ctx context.Context, name, recordType string) ([]string, time.Duration, error) {
	resp, err := v1.NewDNSServiceClient(c.conn).ResolveDomain(ctx, &v1.DNSRequest{Domain: name, RecordType: recordType})
	if err != nil {
		return nil, 0, err
	}
	return resp.Addresses, time.Duration(resp.TtlSeconds) * time.Second, nil
}
