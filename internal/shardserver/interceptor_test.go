package shardserver_test

import (
	"context"
	"io"
	"testing"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/shardserver"
)

func TestWorkerInterceptors(t *testing.T) {
	t.Parallel()
	h := newHarness(t, shardserver.Options{})
	calls := []struct {
		name string
		call func(context.Context, v1.ShardServiceClient, healthpb.HealthClient) error
		open bool // served without the key
	}{
		{"unary Usage", func(ctx context.Context, c v1.ShardServiceClient, _ healthpb.HealthClient) error {
			_, err := c.Usage(ctx, &v1.UsageRequest{})
			return err
		}, false},
		{"server-streaming ListShards", func(ctx context.Context, c v1.ShardServiceClient, _ healthpb.HealthClient) error {
			s, err := c.ListShards(ctx, &v1.ListShardsRequest{})
			if err != nil {
				return err
			}
			if _, err = s.Recv(); err == io.EOF {
				return nil
			}
			return err
		}, false},
		{"client-streaming PutShard", func(ctx context.Context, c v1.ShardServiceClient, _ healthpb.HealthClient) error {
			_, err := putMessages(ctx, c, keyMsg(key("f1", "w1", 0, 0)))
			return err
		}, false},
		{"health check", func(ctx context.Context, _ v1.ShardServiceClient, hc healthpb.HealthClient) error {
			_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
			return err
		}, true},
	}
	for _, tc := range []struct {
		name string
		key  string
		ok   bool
	}{
		{"no key", "", false},
		{"wrong key", "not-the-key", false},
		{"key with a suffix", testCallKey + "x", false},
		{"right key", testCallKey, true},
	} {
		conn := dial(t, h.addr, tc.key)
		c, hc := v1.NewShardServiceClient(conn), healthpb.NewHealthClient(conn)
		for _, call := range calls {
			t.Run(tc.name+"/"+call.name, func(t *testing.T) {
				err := call.call(context.Background(), c, hc)
				if tc.ok || call.open {
					if err != nil {
						t.Fatalf("refused: %v", err)
					}
					return
				}
				wantCode(t, err, codes.PermissionDenied, "serves only its pool")
			})
		}
	}
}
