package files

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/erasure"
	"github.com/hivemind/taskworker/internal/keyring"
	"github.com/hivemind/taskworker/internal/names"
	"github.com/hivemind/taskworker/internal/serving"
)

// load returns the manifest of a version of a user's file (0: current). A
// file of another user is NotFound, like a file that does not exist.
func (s *Service) load(ctx context.Context, user, fileID string, version int64) (*manifest, error) {
	if err := checkFileID(fileID); err != nil {
		return nil, err
	}
	if version < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "version %d is negative", version)
	}
	cur, _, err := s.current(ctx, user, fileID, 0)
	if err != nil {
		return nil, err
	}
	if version == 0 {
		version = cur.Version
	}
	resp, err := s.cli.Get(ctx, s.keys.manifest(fileID, version))
	if err != nil {
		return nil, serving.EtcdError(err)
	}
	if len(resp.Kvs) == 0 {
		return nil, status.Errorf(codes.NotFound, "file %s has no version %d (it is at version %d)", fileID, version, cur.Version)
	}
	m, err := unmarshalManifest(resp.Kvs[0].Value)
	if err != nil || m.Owner != user {
		return nil, status.Errorf(codes.DataLoss, "file %s version %d: unreadable manifest", fileID, version)
	}
	if err := s.loadSegments(ctx, m, resp.Header.Revision); err != nil {
		return nil, segmentsError(m, err)
	}
	return m, nil
}

// segmentsError is the status of a version whose segments could not be read.
func segmentsError(m *manifest, err error) error {
	switch {
	case errors.Is(err, errSegments):
		return status.Errorf(codes.DataLoss, "file %s version %d: %v", m.FileID, m.Version, err)
	case compacted(err):
		return status.Errorf(codes.Unavailable, "file %s version %d changed while it was read; try again", m.FileID, m.Version)
	}
	return serving.EtcdError(err)
}

// fileReader reads a stored file back: the erasure Decoder, or the bytes
// of an inline file.
type fileReader interface {
	// Copy writes the whole file to w, checking it: against its SHA-256,
	// or, sealed, block by block as each is opened.
	Copy(ctx context.Context, w io.Writer) (int64, error)
	CopyRange(ctx context.Context, w io.Writer, off, length int64) (int64, error)
}

// open returns a reader for the file version m describes.
func (s *Service) open(m *manifest) (fileReader, error) {
	sealer, err := s.sealer(m)
	switch {
	case errors.Is(err, keyring.ErrCorrupt):
		return nil, status.Errorf(codes.DataLoss, "file %s version %d: %v", m.FileID, m.Version, err)
	case err != nil:
		return nil, status.Errorf(codes.FailedPrecondition, "file %s version %d: %v", m.FileID, m.Version, err)
	}
	if !m.inline() {
		d, err := s.decoder(m)
		if err != nil || sealer == nil {
			return d, err
		}
		return &sealedReader{d: d, sealer: sealer, size: m.Size, blockSize: m.BlockSize}, nil
	}
	data, err := base64.StdEncoding.DecodeString(m.Inline)
	if err == nil && sealer != nil {
		data, err = sealer.Open(nil, 0, data)
	}
	if err != nil || int64(len(data)) != m.Size || fmt.Sprintf("%x", sha256.Sum256(data)) != m.SHA256 {
		return nil, status.Errorf(codes.DataLoss, "file %s version %d: the inline bytes do not match the manifest", m.FileID, m.Version)
	}
	return inlineReader(data), nil
}

type inlineReader []byte

func (r inlineReader) Copy(ctx context.Context, w io.Writer) (int64, error) {
	n, err := w.Write(r)
	return int64(n), err
}

func (r inlineReader) CopyRange(ctx context.Context, w io.Writer, off, length int64) (int64, error) {
	n, err := w.Write(r[off : off+length])
	return int64(n), err
}

// decoder returns a decoder that reads m's shards from its workers and
// reports the bad ones for repair.
func (s *Service) decoder(m *manifest) (*erasure.Decoder, error) {
	info, err := m.fileInfo()
	if err != nil {
		return nil, status.Errorf(codes.DataLoss, "file %s: %v", m.FileID, err)
	}
	d, err := erasure.NewDecoder(info, shardSource{s, m, info})
	if err != nil {
		return nil, status.Errorf(codes.DataLoss, "file %s: %v", m.FileID, err)
	}
	d.OnBadShard = func(bad erasure.BadShard) {
		if s.workerLive(m.holder(bad.Block, bad.Shard)) && !unreachable(bad.Err) {
			// A live worker served a bad shard, or said it has none: note
			// it. (Shards of gone workers are the repairer's anyway; a
			// worker that did not answer has not lost the shard.)
			s.reportDamage(m.FileID, m.WriteID, bad.Block, bad.Shard)
		}
	}
	return d, nil
}

// unreachable reports an error of the connection, not the worker's answer:
// it says nothing of the shard.
func unreachable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return true
	}
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

func (s *Service) workerLive(id string) bool {
	_, ok := s.workers.ShardClient(id)
	return ok
}

// shardSource reads a file version's shards from the workers that hold
// them (an erasure.ShardSourceInto).
type shardSource struct {
	s    *Service
	m    *manifest
	info *erasure.FileInfo
}

func (src shardSource) ReadShard(ctx context.Context, b int64, i int) ([]byte, error) {
	return src.ReadShardInto(ctx, b, i, make([]byte, 0, src.info.ShardLen(b)))
}

func (src shardSource) ReadShardInto(ctx context.Context, b int64, i int, buf []byte) ([]byte, error) {
	m := src.m
	return src.s.getShard(ctx, m.holder(b, i), &v1.ShardKey{FileId: m.FileID, WriteId: m.WriteID, Block: b, Shard: int32(i)}, buf)
}

// getShard fetches one shard from a worker into buf, whose capacity is the
// length the shard should have (a shorter one is the Decoder's to find
// bad; a worker that sends more fails the read).
func (s *Service) getShard(ctx context.Context, workerID string, key *v1.ShardKey, buf []byte) ([]byte, error) {
	if workerID == "" {
		return nil, errors.New("no worker holds the shard")
	}
	client, ok := s.workers.ShardClient(workerID)
	if !ok {
		return nil, fmt.Errorf("worker %s is not live", workerID)
	}
	stream, err := client.GetShard(ctx, &v1.GetShardRequest{Key: key}, shardCodecOption)
	if err != nil {
		return nil, err
	}
	r := shardReader{buf: buf}
	for {
		err := stream.RecvMsg(&r)
		if errors.Is(err, io.EOF) {
			return r.buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// reportDamage records a damaged shard in etcd, where the repairer finds
// it even after a pool restart.
func (s *Service) reportDamage(fileID, writeID string, block int64, shard int) {
	ctx, cancel := context.WithTimeout(context.Background(), 5e9)
	defer cancel()
	if _, err := s.cli.Put(ctx, s.keys.damage(fileID, writeID, block, shard), ""); err != nil {
		s.log.Warn("recording a damaged shard", "file", fileID, "block", block, "shard", shard, "err", err)
	}
	s.Kick()
}

// ReportDamage records shards a worker found damaged.
func (s *Service) ReportDamage(ctx context.Context, keys []*v1.ShardKey) error {
	if len(keys) > 10_000 {
		return status.Error(codes.InvalidArgument, "over 10000 shards in one report")
	}
	for _, k := range keys {
		if names.FileID(k.FileId) != nil || names.FileID(k.WriteId) != nil || k.Block < 0 || k.Shard < 0 {
			continue // not one of ours
		}
		if _, err := s.cli.Put(ctx, s.keys.damage(k.FileId, k.WriteId, k.Block, int(k.Shard)), ""); err != nil {
			return serving.EtcdError(err)
		}
	}
	s.Kick()
	return nil
}

func decodeError(fileID string, err error) error {
	var be *erasure.BlockError
	switch {
	case errors.As(err, &be):
		return status.Errorf(codes.Unavailable, "file %s: %v; the file is unreadable until more workers come back", fileID, err)
	case errors.Is(err, erasure.ErrFileChecksum), errors.Is(err, keyring.ErrCorrupt):
		return status.Errorf(codes.DataLoss, "file %s: %v", fileID, err)
	case errors.Is(err, erasure.ErrRange):
		return status.Errorf(codes.OutOfRange, "file %s: %v", fileID, err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Errorf(codes.Internal, "file %s: %v", fileID, err)
}

func (s *Service) Get(ctx context.Context, req *v1.GetRequest) (*v1.GetResponse, error) {
	user, err := s.userFrom(ctx, req.UserId)
	if err != nil {
		return nil, err
	}
	m, err := s.load(ctx, user, req.FileId, req.Version)
	if err != nil {
		return nil, err
	}
	if m.Size > int64(s.cfg.MaxUnaryBytes) {
		return nil, status.Errorf(codes.FailedPrecondition, "file %s is %d bytes, over Get's %d; use Download (taskworker get streams it)", m.FileID, m.Size, s.cfg.MaxUnaryBytes)
	}
	d, err := s.open(m)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.Grow(int(m.Size))
	if _, err := d.Copy(ctx, &buf); err != nil {
		return nil, decodeError(m.FileID, err)
	}
	return &v1.GetResponse{FileData: buf.Bytes(), Filename: m.Filename, Version: m.Version}, nil
}

func (s *Service) Download(req *v1.DownloadRequest, stream v1.FileService_DownloadServer) error {
	ctx := stream.Context()
	user, err := s.userFrom(ctx, req.UserId)
	if err != nil {
		return err
	}
	m, err := s.load(ctx, user, req.FileId, req.Version)
	if err != nil {
		return err
	}
	length := req.Length
	if length == 0 {
		length = m.Size - req.Offset
	}
	if req.Offset < 0 || length < 0 || req.Offset > m.Size || length > m.Size-req.Offset {
		return status.Errorf(codes.OutOfRange, "%d bytes at offset %d are outside file %s of %d bytes", length, req.Offset, m.FileID, m.Size)
	}
	d, err := s.open(m)
	if err != nil {
		return err
	}
	w := &chunkWriter{send: func(data []byte, first bool) error {
		msg := &v1.DownloadResponse{Data: data}
		if first {
			msg.Info = s.withRedundancy(ctx, m)
		}
		return stream.Send(msg)
	}}
	if req.Offset == 0 && length == m.Size {
		_, err = d.Copy(ctx, w) // the whole file: checked whole (fileReader)
	} else {
		_, err = d.CopyRange(ctx, w, req.Offset, length)
	}
	if err == nil {
		err = w.flush()
	}
	if err != nil {
		return decodeError(m.FileID, err)
	}
	return nil
}

// chunkWriter turns writes into messages of at most chunkBytes, the first
// of which is marked.
type chunkWriter struct {
	send func(data []byte, first bool) error
	buf  []byte
	sent bool
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if len(w.buf) == 0 && len(p) >= chunkBytes {
			// A whole message's worth: sent from p itself (Send has
			// encoded it when it returns), not copied into buf first.
			if err := w.send(p[:chunkBytes], !w.sent); err != nil {
				return 0, err
			}
			w.sent = true
			p = p[chunkBytes:]
			continue
		}
		room := chunkBytes - len(w.buf)
		take := min(room, len(p))
		w.buf = append(w.buf, p[:take]...)
		p = p[take:]
		if len(w.buf) == chunkBytes {
			if err := w.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

func (w *chunkWriter) flush() error {
	if len(w.buf) == 0 && w.sent {
		return nil
	}
	err := w.send(w.buf, !w.sent)
	w.sent = true
	w.buf = w.buf[:0]
	return err
}

func (s *Service) Stat(ctx context.Context, req *v1.StatRequest) (*v1.StatResponse, error) {
	user, err := s.userFrom(ctx, req.UserId)
	if err != nil {
		return nil, err
	}
	m, err := s.load(ctx, user, req.FileId, req.Version)
	if err != nil {
		return nil, err
	}
	return &v1.StatResponse{Info: s.withRedundancy(ctx, m)}, nil
}

func (s *Service) FileHistory(ctx context.Context, req *v1.FileHistoryRequest) (*v1.FileHistoryResponse, error) {
	user, err := s.userFrom(ctx, req.UserId)
	if err != nil {
		return nil, err
	}
	if err := checkFileID(req.FileId); err != nil {
		return nil, err
	}
	// The file's record and its manifests in one read: a Delete that
	// commits between two reads would make an existing file look empty.
	txn, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(s.keys.file(user, req.FileId)),
		clientv3.OpGet(s.keys.manifests(req.FileId), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend)),
	).Commit()
	if err != nil {
		return nil, serving.EtcdError(err)
	}
	if len(txn.Responses[0].GetResponseRange().Kvs) == 0 {
		return nil, status.Errorf(codes.NotFound, "no file %s", req.FileId)
	}
	out := &v1.FileHistoryResponse{}
	for _, kv := range txn.Responses[1].GetResponseRange().Kvs {
		if m, err := unmarshalManifest(kv.Value); err == nil && m.Owner == user {
			// The blocks as of the same read, for the redundancy.
			if err := s.loadSegments(ctx, m, txn.Header.Revision); err != nil {
				return nil, segmentsError(m, err)
			}
			out.Versions = append(out.Versions, s.withRedundancy(ctx, m))
		}
	}
	return out, nil
}

func (s *Service) List(ctx context.Context, req *v1.ListRequest) (*v1.ListResponse, error) {
	user, err := s.userFrom(ctx, req.UserId)
	if err != nil {
		return nil, err
	}
	size := int64(req.PageSize)
	if size <= 0 || size > 1000 {
		size = 1000
	}
	prefix := s.keys.userFiles(user)
	from := prefix
	if req.PageToken != "" {
		if err := checkFileID(req.PageToken); err != nil {
			return nil, status.Error(codes.InvalidArgument, "bad page_token: pass the next_page_token of the previous page")
		}
		from = prefix + req.PageToken + "\x00"
	}
	resp, err := s.cli.Get(ctx, from, clientv3.WithRange(clientv3.GetPrefixRangeEnd(prefix)), clientv3.WithLimit(size))
	if err != nil {
		return nil, serving.EtcdError(err)
	}
	out := &v1.ListResponse{}
	damaged, err := s.damage(ctx, "")
	if err != nil {
		return nil, serving.EtcdError(err)
	}
	live := s.liveSet()
	for _, kv := range resp.Kvs {
		var rec fileRecord
		if json.Unmarshal(kv.Value, &rec) != nil {
			continue
		}
		info := rec.proto()
		// The current version's redundancy, as Stat and FileHistory report it.
		if mr, err := s.cli.Get(ctx, s.keys.manifest(rec.FileID, rec.Version)); err == nil && len(mr.Kvs) > 0 {
			if m, err := unmarshalManifest(mr.Kvs[0].Value); err == nil && s.loadSegments(ctx, m, mr.Header.Revision) == nil {
				info.Redundancy = s.redundancy(m, live, damaged)
			}
		}
		out.Files = append(out.Files, info)
	}
	if resp.More && len(out.Files) > 0 {
		out.NextPageToken = out.Files[len(out.Files)-1].FileId
	}
	return out, nil
}

func (s *Service) Delete(ctx context.Context, req *v1.DeleteRequest) (*v1.DeleteResponse, error) {
	user, err := s.userFrom(ctx, req.UserId)
	if err != nil {
		return nil, serving.NotCommitted(err)
	}
	if err := checkFileID(req.FileId); err != nil {
		return nil, serving.NotCommitted(err)
	}
	fileKey := s.keys.file(user, req.FileId)
	for attempt := 0; attempt < maxUsageRetries; attempt++ {
		rec, err := s.cli.Get(ctx, fileKey)
		if err != nil {
			return nil, serving.NotCommitted(serving.EtcdError(err))
		}
		if len(rec.Kvs) == 0 {
			return nil, serving.NotCommitted(status.Errorf(codes.NotFound, "no file %s", req.FileId))
		}
		// The versions as of the record: every change to them but repair's
		// (which changes no size) rewrites the record, which the
		// transaction compares.
		var versions []*manifest
		var freed int64
		if err := s.eachVersion(ctx, req.FileId, func(m *manifest) {
			versions = append(versions, m)
			freed += m.Size
		}); err != nil {
			return nil, serving.NotCommitted(err)
		}
		u, err := s.readUsage(ctx, user, false)
		if err != nil {
			return nil, serving.NotCommitted(err)
		}
		usageCmps, usageOps := u.move(s.keys, -freed)
		// The segments of every version go with the manifests, and so do
		// those of a revision in progress: its commit then finds the file
		// gone.
		txn, err := s.cli.Txn(ctx).If(append(usageCmps, clientv3.Compare(clientv3.ModRevision(fileKey), "=", rec.Kvs[0].ModRevision))...).Then(append(usageOps,
			clientv3.OpDelete(fileKey),
			clientv3.OpDelete(s.keys.manifests(req.FileId), clientv3.WithPrefix()),
			clientv3.OpDelete(s.keys.fileSegments(req.FileId), clientv3.WithPrefix()),
		)...).Commit()
		if err != nil {
			return nil, serving.EtcdError(err) // sent: it may have been applied
		}
		if !txn.Succeeded {
			continue // the file or the user's use changed: read them again
		}
		for _, m := range versions {
			if !m.inline() {
				// The intent lets the collector finish what dropWrite
				// misses (a worker that is away now).
				_, _ = s.cli.Put(ctx, s.keys.write(m.FileID, m.WriteID), fmt.Sprint(time.Now().UnixMilli()))
				s.dropWrite(m)
			}
		}
		return &v1.DeleteResponse{}, nil
	}
	return nil, serving.NotCommitted(status.Errorf(codes.Aborted, "file %s kept changing while it was deleted; delete it again", req.FileId))
}
