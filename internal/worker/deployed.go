package worker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/atomicfile"
	"github.com/hivemind/taskworker/internal/names"
	"github.com/hivemind/taskworker/internal/quota"
)

// Sandbox runs deployed (untrusted) functions: the worker's collaborator
// for WebAssembly and Starlark code. The worker fetches and verifies module
// bytes; the sandbox compiles, caches and runs them under the deployment's
// limits.
type Sandbox interface {
	// Runtimes lists the runtimes the sandbox runs.
	Runtimes() []v1.Runtime
	// Compiled lists the modules (hex SHA-256) it has compiled and ready.
	Compiled() []string
	// Call runs one call of d for caller (the user calling, by whom the
	// sandbox shares its processes fairly) with the call's JSON
	// arguments. It gets the module's bytes from modules on first use.
	Call(ctx context.Context, caller string, d *v1.Deployment, args []byte, modules ModuleSource) ([]byte, error)
}

// ModuleSource returns a module's verified bytes by hex SHA-256.
type ModuleSource func(ctx context.Context, sha256 string) ([]byte, error)

// moduleCache keeps deployed modules on the worker's disk, fetched from the
// pool on first use and checked against their SHA-256 every time they are
// read, so neither the network nor the disk can substitute code.
type moduleCache struct {
	dir   string // empty: memory only, nothing kept across restarts
	fetch func(ctx context.Context, sha string) ([]byte, error)

	mu       sync.Mutex
	fetching map[string]*fetchCall // one fetch per module at a time
}

type fetchCall struct {
	done chan struct{}
	b    []byte
	err  error
}

func (c *moduleCache) get(ctx context.Context, sha string) ([]byte, error) {
	if err := names.SHA256(sha); err != nil {
		return nil, fmt.Errorf("module id: %w", err)
	}
	if c.dir != "" {
		if b, err := os.ReadFile(filepath.Join(c.dir, sha)); err == nil {
			if moduleHash(b) == sha {
				return b, nil
			}
			os.Remove(filepath.Join(c.dir, sha)) // corrupt: fetch again
		}
	}
	c.mu.Lock()
	if c.fetching == nil {
		c.fetching = map[string]*fetchCall{}
	}
	f, running := c.fetching[sha]
	if !running {
		f = &fetchCall{done: make(chan struct{})}
		c.fetching[sha] = f
	}
	c.mu.Unlock()
	if !running {
		f.b, f.err = c.fetchAndStore(ctx, sha)
		c.mu.Lock()
		delete(c.fetching, sha)
		c.mu.Unlock()
		close(f.done)
	}
	select {
	case <-f.done:
		return f.b, f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *moduleCache) fetchAndStore(ctx context.Context, sha string) ([]byte, error) {
	b, err := c.fetch(ctx, sha)
	if err != nil {
		return nil, err
	}
	if got := moduleHash(b); got != sha {
		return nil, fmt.Errorf("module %s: received bytes hash to %s", sha, got)
	}
	if c.dir != "" {
		if err := os.MkdirAll(c.dir, 0o700); err != nil {
			return nil, err
		}
		if err := atomicfile.Write(filepath.Join(c.dir, sha), b, 0o600); err != nil {
			return nil, fmt.Errorf("caching module %s: %w", sha, err)
		}
	}
	return b, nil
}

func moduleHash(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// fetchModule streams a module from the pool.
func (s *Server) fetchModule(ctx context.Context, sha string) ([]byte, error) {
	conn := s.poolConn()
	if conn == nil {
		return nil, errors.New("standalone worker: no pool to fetch modules from")
	}
	stream, err := v1.NewModuleServiceClient(conn).GetModule(ctx, &v1.GetModuleRequest{ModuleSha256: sha})
	if err != nil {
		return nil, err
	}
	var buf []byte
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
		if chunk.TotalSize > 0 && buf == nil {
			if chunk.TotalSize > maxModuleBytes {
				return nil, fmt.Errorf("module %s is %d bytes, over the worker's limit of %d", sha, chunk.TotalSize, maxModuleBytes)
			}
			buf = make([]byte, 0, chunk.TotalSize)
		}
		if len(buf)+len(chunk.Data) > maxModuleBytes {
			return nil, fmt.Errorf("module %s is over the worker's limit of %d bytes", sha, maxModuleBytes)
		}
		buf = append(buf, chunk.Data...)
	}
}

// maxModuleBytes bounds a module a worker accepts.
const maxModuleBytes = 64 << 20

// callDeployed runs a call of a deployed function in the sandbox.
func (s *Server) callDeployed(ctx context.Context, req *v1.FunctionCallRequest) (_ []byte, err error) {
	if s.cfg.Sandbox == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "worker %s runs no sandboxed functions", s.cfg.ID)
	}
	d := req.Deployment
	if max := int64(req.MaxSandboxProcesses); max > 0 {
		held := s.sandboxed.take(req.UserId)
		defer s.sandboxed.give(req.UserId)
		if held > max {
			return nil, quota.Exceeded(req.UserId, quota.SandboxProcesses, max, held-1, 1)
		}
	}
	if sctx, span := s.sandboxSpan(ctx, d); span != nil {
		ctx = sctx
		defer func() { endSpan(span, err) }()
	}
	out, err := s.cfg.Sandbox.Call(ctx, req.UserId, d, req.Args, s.modules.get)
	if err != nil {
		if _, ok := status.FromError(err); ok {
			return nil, err
		}
		return nil, status.Errorf(codes.Internal, "%s v%d: %v", d.Name, d.Version, err)
	}
	return out, nil
}

// perCaller counts the sandboxed calls each caller has running on this
// worker: what the pool's sandbox processes quota bounds.
type perCaller struct {
	mu sync.Mutex
	n  map[string]int64
}

// take counts one more call of caller and returns its count.
func (p *perCaller) take(caller string) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n == nil {
		p.n = map[string]int64{}
	}
	p.n[caller]++
	return p.n[caller]
}

func (p *perCaller) give(caller string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n[caller]--; p.n[caller] <= 0 {
		delete(p.n, caller)
	}
}
