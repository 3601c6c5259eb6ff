package files

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/names"
	"github.com/hivemind/taskworker/internal/serving"
)

// A cursor is the etcd revision the caller's view is at: every change to a
// file rewrites its record, so comparing the user's records at the cursor
// with the records now gives exactly the changes since.

func parseCursor(c string) (int64, error) {
	if c == "" {
		return 0, nil
	}
	rev, err := strconv.ParseInt(c, 10, 64)
	if err != nil || rev < 0 {
		return 0, status.Errorf(codes.InvalidArgument, "cursor %q is not one this service returned; start over with an empty cursor", names.Truncate(c, 40))
	}
	return rev, nil
}

func (s *Service) Synchronous(ctx context.Context, req *v1.SynchronousRequest) (*v1.SynchronousResponse, error) {
	user, err := s.userFrom(ctx, req.UserId)
	if err != nil {
		return nil, err
	}
	from, err := parseCursor(req.Cursor)
	if err != nil {
		return nil, err
	}
	changes, rev, err := s.changesSince(ctx, user, from)
	if err != nil {
		return nil, err
	}
	return &v1.SynchronousResponse{Changes: changes, Cursor: strconv.FormatInt(rev, 10)}, nil
}

// changesSince returns the changes to user's files after revision from (0:
// every live file, as created) and the revision they bring the caller to.
func (s *Service) changesSince(ctx context.Context, user string, from int64) ([]*v1.FileChange, int64, error) {
	prefix := s.keys.userFiles(user)
	now, err := s.cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, serving.EtcdError(err)
	}
	rev := now.Header.Revision
	if from > rev {
		return nil, 0, status.Errorf(codes.InvalidArgument, "cursor %d is ahead of this network (at %d): it comes from another network; start over with an empty cursor", from, rev)
	}
	before := map[string]bool{}
	if from > 0 {
		then, err := s.cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(from), clientv3.WithKeysOnly())
		if errors.Is(err, rpctypes.ErrCompacted) {
			return nil, 0, status.Errorf(codes.OutOfRange, "cursor %d is older than the history the network keeps; resync: start over with an empty cursor", from)
		}
		if err != nil {
			return nil, 0, serving.EtcdError(err)
		}
		for _, kv := range then.Kvs {
			before[string(kv.Key)] = true
		}
	}
	var changes []*v1.FileChange
	for _, kv := range now.Kvs {
		key := string(kv.Key)
		existed := before[key]
		delete(before, key)
		if kv.ModRevision <= from {
			continue
		}
		var rec fileRecord
		if json.Unmarshal(kv.Value, &rec) != nil {
			continue
		}
		kind := v1.FileChange_KIND_REVISED
		if !existed {
			kind = v1.FileChange_KIND_CREATED
		}
		changes = append(changes, &v1.FileChange{FileId: rec.FileID, Kind: kind, Version: rec.Version, Filename: rec.Filename})
	}
	for key := range before {
		changes = append(changes, &v1.FileChange{FileId: strings.TrimPrefix(key, prefix), Kind: v1.FileChange_KIND_DELETED})
	}
	return changes, rev, nil
}

func (s *Service) WatchChanges(req *v1.SynchronousRequest, stream v1.FileService_WatchChangesServer) error {
	ctx := stream.Context()
	user, err := s.userFrom(ctx, req.UserId)
	if err != nil {
		return err
	}
	from, err := parseCursor(req.Cursor)
	if err != nil {
		return err
	}
	changes, rev, err := s.changesSince(ctx, user, from)
	if err != nil {
		return err
	}
	if err := stream.Send(&v1.SynchronousResponse{Changes: changes, Cursor: strconv.FormatInt(rev, 10)}); err != nil {
		return err
	}
	prefix := s.keys.userFiles(user)
	for resp := range s.cli.Watch(clientv3.WithRequireLeader(ctx), prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithPrevKV()) {
		if err := resp.Err(); err != nil {
			return status.Errorf(codes.Unavailable, "watching for changes: %v; call again with cursor %d", err, rev)
		}
		var batch []*v1.FileChange
		for _, ev := range resp.Events {
			id := strings.TrimPrefix(string(ev.Kv.Key), prefix)
			if ev.Type == clientv3.EventTypeDelete {
				batch = append(batch, &v1.FileChange{FileId: id, Kind: v1.FileChange_KIND_DELETED})
				continue
			}
			var rec fileRecord
			if json.Unmarshal(ev.Kv.Value, &rec) != nil {
				continue
			}
			kind := v1.FileChange_KIND_REVISED
			if ev.IsCreate() {
				kind = v1.FileChange_KIND_CREATED
			}
			batch = append(batch, &v1.FileChange{FileId: id, Kind: kind, Version: rec.Version, Filename: rec.Filename})
			rev = ev.Kv.ModRevision
		}
		if len(resp.Events) > 0 {
			rev = resp.Events[len(resp.Events)-1].Kv.ModRevision
		}
		if len(batch) > 0 {
			if err := stream.Send(&v1.SynchronousResponse{Changes: batch, Cursor: strconv.FormatInt(rev, 10)}); err != nil {
				return err
			}
		}
	}
	return ctx.Err()
}
