package pool

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/names"
	"github.com/hivemind/taskworker/internal/serving"
)

// moduleChunkBytes keeps each etcd write well under its 1.5 MiB request
// limit.
const moduleChunkBytes = 1 << 20

// moduleStore keeps deployed modules in etcd, content-addressed:
// modules/<sha256>/chunk/<n> hold the bytes and modules/<sha256>/meta,
// written last, says the module is complete. Until the file store exists
// this is the durable home of modules; etcd's quota bounds their total.
type moduleStore struct {
	cli    *clientv3.Client
	prefix string
}

type moduleMeta struct {
	Size   int64 `json:"size"`
	Chunks int   `json:"chunks"`
}

func moduleSHA256(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func (m *moduleStore) key(sha string, rest string) string {
	return m.prefix + "modules/" + sha + "/" + rest
}

// put stores module unless it is already there, and returns its hash.
func (m *moduleStore) put(ctx context.Context, module []byte) (string, error) {
	sha := moduleSHA256(module)
	resp, err := m.cli.Get(ctx, m.metaKey(sha), clientv3.WithCountOnly())
	if err != nil {
		return "", err
	}
	if resp.Count > 0 {
		return sha, nil
	}
	n := 0
	for off := 0; off < len(module) || n == 0; off += moduleChunkBytes {
		end := min(off+moduleChunkBytes, len(module))
		if _, err := m.cli.Put(ctx, m.key(sha, fmt.Sprintf("chunk/%06d", n)), string(module[off:end])); err != nil {
			return "", err
		}
		n++
	}
	meta, _ := json.Marshal(moduleMeta{Size: int64(len(module)), Chunks: n})
	_, err = m.cli.Put(ctx, m.metaKey(sha), string(meta))
	return sha, err
}

// stream sends a module's chunks to send, checking the whole against its
// hash first, so a worker never receives bytes that etcd corrupted.
func (m *moduleStore) stream(ctx context.Context, sha string, send func(*v1.ModuleChunk) error) error {
	resp, err := m.cli.Get(ctx, m.metaKey(sha))
	if err != nil {
		return serving.EtcdError(err)
	}
	if len(resp.Kvs) == 0 {
		return status.Errorf(codes.NotFound, "no module %s (undeployed?)", sha)
	}
	var meta moduleMeta
	if err := json.Unmarshal(resp.Kvs[0].Value, &meta); err != nil {
		return status.Errorf(codes.DataLoss, "module %s: unreadable metadata: %v", sha, err)
	}
	h := sha256.New()
	chunks := make([][]byte, 0, meta.Chunks)
	for i := range meta.Chunks {
		c, err := m.cli.Get(ctx, m.key(sha, fmt.Sprintf("chunk/%06d", i)))
		if err != nil {
			return serving.EtcdError(err)
		}
		if len(c.Kvs) == 0 {
			return status.Errorf(codes.DataLoss, "module %s: chunk %d is missing", sha, i)
		}
		h.Write(c.Kvs[0].Value)
		chunks = append(chunks, c.Kvs[0].Value)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sha {
		return status.Errorf(codes.DataLoss, "module %s: stored bytes hash to %s; redeploy the function", sha, got)
	}
	for i, c := range chunks {
		chunk := &v1.ModuleChunk{Data: c}
		if i == 0 {
			chunk.TotalSize = meta.Size
		}
		if err := send(chunk); err != nil {
			return err
		}
	}
	return nil
}

// metaKey is the key whose presence says the module is stored whole.
func (m *moduleStore) metaKey(sha string) string { return m.key(sha, "meta") }

// removeOp deletes a module; sha is a valid hash, so modules/<sha>/ is the
// prefix of that module's keys only.
func (m *moduleStore) removeOp(sha string) clientv3.Op {
	return clientv3.OpDelete(m.key(sha, ""), clientv3.WithPrefix())
}

// moduleService lets workers fetch modules.
type moduleService struct {
	v1.UnimplementedModuleServiceServer
	modules *moduleStore
}

func (s *moduleService) GetModule(req *v1.GetModuleRequest, stream v1.ModuleService_GetModuleServer) error {
	if err := names.SHA256(req.ModuleSha256); err != nil {
		return status.Errorf(codes.InvalidArgument, "module_sha256: %v", err)
	}
	return s.modules.stream(stream.Context(), req.ModuleSha256, stream.Send)
}
