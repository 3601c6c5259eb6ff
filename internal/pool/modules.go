package pool

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"

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
// modules/<sha256>/chunk/<n> hold the bytes, modules/<sha256>/meta says
// the module is complete, and modules/<sha256>/refs counts the versions of
// deployed functions, of every user, that use it. The meta and the count
// are written in the transaction that stores a version, on the condition
// that every chunk is there and the count has not moved; an undeploy
// lowers the count in its own transaction, and deletes the module there
// when the count reaches zero. So a module is deleted exactly when no
// current or past version of any function refers to it, whichever pools
// deploy and undeploy at once. Until the file store holds modules, etcd's
// quota bounds their total (and per user, quota.Limits.ModuleBytes).
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

func (m *moduleStore) chunkKey(sha string, n int) string {
	return m.key(sha, fmt.Sprintf("chunk/%06d", n))
}

func chunkCount(size int) int { return max(1, (size+moduleChunkBytes-1)/moduleChunkBytes) }

// put stores module's chunks unless the module is stored whole already, and
// returns how many chunks it has. The module is not complete (nor kept)
// until a deploy's transaction refers to it (completeCmps, referOps).
func (m *moduleStore) put(ctx context.Context, module []byte) (int, error) {
	sha := moduleSHA256(module)
	n := chunkCount(len(module))
	resp, err := m.cli.Get(ctx, m.metaKey(sha), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	if resp.Count > 0 {
		return n, nil
	}
	for i := range n {
		off := i * moduleChunkBytes
		end := min(off+moduleChunkBytes, len(module))
		if _, err := m.cli.Put(ctx, m.chunkKey(sha, i), string(module[off:end])); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// refsKey counts the versions that use a module.
func (m *moduleStore) refsKey(sha string) string { return m.key(sha, "refs") }

// refs returns how many versions use a module, and the revision of the
// count (0: no count, no version).
func (m *moduleStore) refs(ctx context.Context, sha string) (n, rev int64, err error) {
	resp, err := m.cli.Get(ctx, m.refsKey(sha))
	if err != nil || len(resp.Kvs) == 0 {
		return 0, 0, err
	}
	n, err = strconv.ParseInt(string(resp.Kvs[0].Value), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("module %s: unreadable reference count %q: %w", sha, resp.Kvs[0].Value, err)
	}
	return n, resp.Kvs[0].ModRevision, nil
}

// completeCmps are the conditions of a transaction that makes a version
// use a module: every chunk is stored, and the count is still at refsRev.
func (m *moduleStore) completeCmps(sha string, chunks int, refsRev int64) []clientv3.Cmp {
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(m.refsKey(sha)), "=", refsRev)}
	for i := range chunks {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(m.chunkKey(sha, i)), ">", 0))
	}
	return cmps
}

// referOps mark the module complete and set its count to refs.
func (m *moduleStore) referOps(sha string, size int64, chunks int, refs int64) []clientv3.Op {
	meta, _ := json.Marshal(moduleMeta{Size: size, Chunks: chunks})
	return []clientv3.Op{
		clientv3.OpPut(m.metaKey(sha), string(meta)),
		clientv3.OpPut(m.refsKey(sha), strconv.FormatInt(refs, 10)),
	}
}

// releaseOps set a module's count to left, deleting the module when no
// version uses it any more. sha is a valid hash, so modules/<sha>/ is the
// prefix of that module's keys only.
func (m *moduleStore) releaseOps(sha string, left int64) []clientv3.Op {
	if left <= 0 {
		return []clientv3.Op{clientv3.OpDelete(m.key(sha, ""), clientv3.WithPrefix())}
	}
	return []clientv3.Op{clientv3.OpPut(m.refsKey(sha), strconv.FormatInt(left, 10))}
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
		c, err := m.cli.Get(ctx, m.chunkKey(sha, i))
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
