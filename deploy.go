package taskworker

import (
	"bytes"
	"context"
	"time"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
)

// DeploySpec describes how a deployed function runs. The zero value runs
// the module's export named like the function, under the operator's default
// limits, with no capabilities.
type DeploySpec struct {
	// Runtime is RUNTIME_WASM or RUNTIME_STARLARK; unset, it is guessed from
	// the module (WebAssembly starts with "\0asm").
	Runtime v1.Runtime
	// Export is the plugin export or Starlark function to call.
	Export string
	// Memory, Timeout, Concurrency (instances per worker), MaxInput and
	// MaxOutput bound each call; zero means the operator's default.
	Memory      int64
	Timeout     time.Duration
	Concurrency int
	MaxInput    int64
	MaxOutput   int64
	// Idempotent lets the pool retry a call elsewhere when its worker dies.
	Idempotent bool
	// AllowHosts and Secrets are the capabilities granted to the function.
	AllowHosts []string
	Secrets    []string
	// Public lets every user call the function, as owner/name; without it
	// only its owner, admins and the users it is granted to (Grant) may.
	Public bool
}

// Deploy uploads module (a .wasm plugin or a Starlark script) and makes it
// the current version of the function name, switching atomically; calls in
// flight finish on the version they started on. The function lives in the
// caller's namespace: others call it as owner/name, once it is public or
// granted to them.
func (c *Client) Deploy(ctx context.Context, name string, module []byte, spec DeploySpec) (*v1.Deployment, error) {
	rt := spec.Runtime
	if rt == v1.Runtime_RUNTIME_UNSPECIFIED {
		rt = v1.Runtime_RUNTIME_STARLARK
		if bytes.HasPrefix(module, []byte("\x00asm")) {
			rt = v1.Runtime_RUNTIME_WASM
		}
	}
	resp, err := v1.NewDeployServiceClient(c.conn).Deploy(ctx, &v1.DeployRequest{
		Name:    name,
		Runtime: rt,
		Module:  module,
		Export:  spec.Export,
		Limits: &v1.Limits{
			MemoryBytes:    spec.Memory,
			TimeoutMs:      spec.Timeout.Milliseconds(),
			Concurrency:    int32(spec.Concurrency),
			MaxInputBytes:  spec.MaxInput,
			MaxOutputBytes: spec.MaxOutput,
		},
		Idempotent:   spec.Idempotent,
		Capabilities: &v1.Capabilities{AllowHosts: spec.AllowHosts, Secrets: spec.Secrets},
		Public:       spec.Public,
	})
	if err != nil {
		return nil, err
	}
	return resp.Deployment, nil
}

// Rollback makes an earlier version of a deployed function current again:
// the given version, or with 0 the one before the current.
func (c *Client) Rollback(ctx context.Context, name string, version int64) (*v1.Deployment, error) {
	resp, err := v1.NewDeployServiceClient(c.conn).Rollback(ctx, &v1.RollbackRequest{Name: name, Version: version})
	if err != nil {
		return nil, err
	}
	return resp.Deployment, nil
}

// Undeploy removes a deployed function and all its versions.
func (c *Client) Undeploy(ctx context.Context, name string) error {
	_, err := v1.NewDeployServiceClient(c.conn).Undeploy(ctx, &v1.UndeployRequest{Name: name})
	return err
}

// Grant lets user call the deployed function name (NAME, or OWNER/NAME for
// an admin), and returns the users it is granted to now.
func (c *Client) Grant(ctx context.Context, name, user string) ([]string, error) {
	resp, err := v1.NewDeployServiceClient(c.conn).Grant(ctx, &v1.GrantRequest{Name: name, User: user})
	if err != nil {
		return nil, err
	}
	return resp.GrantedUsers, nil
}

// Revoke takes user's grant of the deployed function name away, and returns
// the users it is granted to now.
func (c *Client) Revoke(ctx context.Context, name, user string) ([]string, error) {
	resp, err := v1.NewDeployServiceClient(c.conn).Revoke(ctx, &v1.RevokeRequest{Name: name, User: user})
	if err != nil {
		return nil, err
	}
	return resp.GrantedUsers, nil
}
