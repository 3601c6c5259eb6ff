package files

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/erasure"
	"github.com/hivemind/taskworker/internal/keyring"
	"github.com/hivemind/taskworker/internal/names"
	"github.com/hivemind/taskworker/internal/placement"
	"github.com/hivemind/taskworker/internal/quota"
)

// Workers is what the file service needs of the pool's registry.
type Workers interface {
	// StorageWorkers returns the live workers that store shards.
	StorageWorkers() []placement.Worker
	// Draining reports whether one of them is drained: it keeps and serves
	// its shards, and gets new ones only when there are too few others.
	Draining(id string) bool
	// ShardClient returns a client of a live worker's ShardService.
	ShardClient(id string) (v1.ShardServiceClient, bool)
}

// Config configures the file service.
type Config struct {
	// Prefix namespaces the etcd keys (the pool's prefix).
	Prefix string
	// Keyring wraps each file version's data key (the pool's master keys).
	Keyring *keyring.Keyring
	// BlockSize is the size of the blocks files are cut into.
	BlockSize int
	// BlocksInFlight bounds the blocks a write sends at once.
	BlocksInFlight int
	// InlineMax is the largest file kept in its manifest in etcd instead of
	// as shards on workers (0: none).
	InlineMax int
	// MaxManifestBytes bounds a version's manifest and each of its
	// segments, one etcd value each: etcd refuses requests over 1.5 MiB.
	MaxManifestBytes int
	// SegmentBlocks is how many blocks' checksums and placement one etcd
	// value holds; a version with more blocks keeps them in segments of
	// that many (see segment). 0: as many as fit in MaxManifestBytes
	// (4834 at 4+2, 37 GiB at 8 MiB blocks), so only larger files have
	// segments.
	SegmentBlocks int
	// MaxFileBytes bounds a file's size (0: only the erasure format's own
	// bound). An upload that declares, or reaches, a larger file is
	// refused as soon as that is known (ResourceExhausted).
	MaxFileBytes int64
	// MaxUnaryBytes bounds the files Push and Get carry in one message;
	// larger ones go through Upload and Download.
	MaxUnaryBytes int
	// RepairGrace is how long a worker may be gone before its shards are
	// rebuilt elsewhere (a restart should not cause a rebuild).
	RepairGrace time.Duration
	// RepairInterval is how often the repairer looks for work when nothing
	// prompts it.
	RepairInterval time.Duration
	// RepairConcurrency bounds the files repaired at once.
	RepairConcurrency int
	// InventoryInterval is how often the repairer lists every live
	// worker's shards and compares them with the manifests (anti-entropy),
	// collecting garbage from the same listing.
	InventoryInterval time.Duration
	// GCInterval and GCMinAge: how far apart the two passes that must both
	// find a failed write's shards unreferenced are, and how old its
	// newest shard must be (a write in progress is not yet referenced).
	GCInterval, GCMinAge time.Duration
	// Limits returns a user's quotas: StorageBytes bounds the bytes of all
	// their file versions, KeepVersions and KeepFor how many of a file's
	// versions are kept (see retention.go). nil: the defaults for all.
	Limits func(ctx context.Context, user string) (quota.Limits, error)
	Logger *slog.Logger
}

// DefaultMaxManifestBytes keeps a manifest and its file record within
// etcd's 1.5 MiB request limit: 37 GiB files at 8 MiB blocks and 4+2.
const DefaultMaxManifestBytes = 1400 << 10

// DefaultConfig returns the configuration the pool uses.
func DefaultConfig(prefix string) Config {
	return Config{
		Prefix:            prefix,
		BlockSize:         erasure.DefaultBlockSize,
		BlocksInFlight:    3,
		InlineMax:         4 << 10,
		MaxUnaryBytes:     12 << 20,
		MaxManifestBytes:  DefaultMaxManifestBytes,
		RepairGrace:       10 * time.Second,
		RepairInterval:    10 * time.Second,
		RepairConcurrency: 2,
		InventoryInterval: 15 * time.Second,
		GCInterval:        time.Minute,
		GCMinAge:          10 * time.Minute,
	}
}

// Validate reports a configuration that cannot work, saying what to change.
func (c Config) Validate() error {
	if most := erasure.MaxBlockSize - keyring.Overhead; c.BlockSize < 4<<10 || c.BlockSize > most {
		return fmt.Errorf("files: block size %d must be between 4 KiB and %d (a sealed block is %d bytes longer)", c.BlockSize, most, keyring.Overhead)
	}
	if c.InlineMax < 0 || c.InlineMax > 64<<10 {
		return fmt.Errorf("files: inline maximum %d must be between 0 and 64 KiB (etcd holds these files)", c.InlineMax)
	}
	if c.MaxManifestBytes < 2*manifestReserve || c.MaxManifestBytes > DefaultMaxManifestBytes {
		return fmt.Errorf("files: MaxManifestBytes %d must be between %d and %d (etcd's request limit)", c.MaxManifestBytes, 2*manifestReserve, DefaultMaxManifestBytes)
	}
	if most := maxBlocks(erasure.DefaultLayout, c.MaxManifestBytes); c.SegmentBlocks < 0 || int64(c.SegmentBlocks) > most {
		return fmt.Errorf("files: SegmentBlocks %d must be between 1 and %d (what MaxManifestBytes holds at %s), or 0 for that", c.SegmentBlocks, most, erasure.DefaultLayout)
	}
	if c.MaxFileBytes < 0 || c.MaxFileBytes > MaxFileSize {
		return fmt.Errorf("files: MaxFileBytes %d must be between 1 and %d, or 0 for no bound", c.MaxFileBytes, int64(MaxFileSize))
	}
	if c.BlocksInFlight < 1 || c.RepairConcurrency < 1 {
		return errors.New("files: blocks in flight and repair concurrency must be at least 1")
	}
	if c.RepairGrace < 0 || c.RepairInterval <= 0 || c.GCInterval <= 0 || c.InventoryInterval <= 0 {
		return errors.New("files: repair grace must not be negative; repair, inventory and GC intervals must be positive")
	}
	return nil
}

// Service implements v1.FileServiceServer.
type Service struct {
	v1.UnimplementedFileServiceServer
	cfg      Config
	cli      *clientv3.Client
	workers  Workers
	userFrom func(ctx context.Context, userID string) (string, error)
	keys     keys
	log      *slog.Logger
	commits  *committer // the commit transactions of writes (batch.go)

	kick    chan struct{} // wakes the repairer
	inlines inlineSeen    // the manifests scans found inline (status.go)
	full    sync.Map      // worker id -> time.Time: no new shards until then (its disk was full)
	stats   struct {
		pending, done, failed, rebuilt, rebuiltBytes atomic.Int64
	}
}

// New returns a file service. userFrom resolves a request's user from its
// credentials and the request's user_id (refusing a mismatch).
func New(cfg Config, cli *clientv3.Client, workers Workers, userFrom func(ctx context.Context, userID string) (string, error)) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Keyring == nil {
		return nil, errors.New("files: no Keyring: every file version is sealed under a data key that a master key wraps; give the master keys (keyring.Open)")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{
		cfg: cfg, cli: cli, workers: workers, userFrom: userFrom,
		keys: keys{prefix: cfg.Prefix}, log: log.With("component", "files"),
		kick: make(chan struct{}, 1), commits: &committer{cli: cli},
	}, nil
}

// Kick asks the repairer to look for work now (a worker was lost).
func (s *Service) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func checkFileID(id string) error {
	if err := names.FileID(id); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return nil
}

func checkFilename(name string) error {
	if len(name) > 1024 {
		return status.Error(codes.InvalidArgument, "filename is over 1024 bytes")
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return status.Error(codes.InvalidArgument, "filename contains a control character")
		}
	}
	return nil
}
