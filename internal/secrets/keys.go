package secrets

import (
	"context"
	"log/slog"
	"slices"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/keyring"
)

// Rewrapper is a store of wrapped data keys: after a rotation, RewrapKeys
// wraps every one under the keyring's current master key and says how many
// it changed. *Store is one; the file service is another.
type Rewrapper interface {
	RewrapKeys(ctx context.Context) (int, error)
}

var _ Rewrapper = (*Store)(nil)

// KeyServer is the KeyService: it rotates the pool's master keys and
// rewraps every data key under the new one. It lives beside the secrets
// because package keyring holds keys, not services.
type KeyServer struct {
	v1.UnimplementedKeyServiceServer
	ring   *keyring.Keyring
	stores map[string]Rewrapper
	log    *slog.Logger

	mu sync.Mutex // one rotation at a time
}

var _ v1.KeyServiceServer = (*KeyServer)(nil)

// NewKeyServer returns the KeyService over ring; stores are the stores of
// data keys it wraps, by the name a response reports them under
// ("secrets", "files"). log may be nil.
func NewKeyServer(ring *keyring.Keyring, stores map[string]Rewrapper, log *slog.Logger) *KeyServer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &KeyServer{ring: ring, stores: stores, log: log.With("service", "keys")}
}

// Register registers k on srv.
func (k *KeyServer) Register(srv *grpc.Server) { v1.RegisterKeyServiceServer(srv, k) }

// RotateKeys makes a new master key current (unless rewrap_only), then
// rewraps every store's data keys. A store that fails is reported in the
// response, not as the call's status: the rotation stands, what was
// rewrapped stays rewrapped, and running it again with rewrap_only finishes
// the work.
func (k *KeyServer) RotateKeys(ctx context.Context, req *v1.RotateKeysRequest) (*v1.RotateKeysResponse, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !req.GetRewrapOnly() {
		id, err := k.ring.Rotate()
		if err != nil {
			return nil, status.Errorf(codes.FailedPrecondition, "rotating the master key: %v; check that the pool can write its key file", err)
		}
		k.log.Info("master key rotated", "current", id, "key_file", k.ring.Path())
	}
	out := &v1.RotateKeysResponse{}
	names := make([]string, 0, len(k.stores))
	for name := range k.stores {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		n, err := k.stores[name].RewrapKeys(ctx)
		r := &v1.KeysRewrapped{Store: name, Keys: int64(n)}
		if err != nil {
			r.Error = err.Error()
			k.log.Error("rewrapping data keys failed; run the rotation again with rewrap_only", "store", name, "rewrapped", n, "err", err)
		} else {
			k.log.Info("data keys rewrapped", "store", name, "rewrapped", n)
		}
		out.Rewrapped = append(out.Rewrapped, r)
	}
	out.CurrentKeyId, out.KeyIds, out.KeyFile = k.ring.Current(), k.ring.IDs(), k.ring.Path()
	return out, nil
}
