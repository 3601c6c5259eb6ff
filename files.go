package taskworker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/wirefields"
)

// File verbs of Client: FileService's Push, Get, Revise and Synchronous,
// plus what a store needs. Files are the caller's own: another
// user's file id answers NotFound. Files of any size stream through
// Upload and Download; Push and Get carry a file in one message.

// FileInfo describes one version of a stored file.
type FileInfo = v1.FileInfo

// FileChange is one change reported by Sync.
type FileChange = v1.FileChange

func (c *Client) files() v1.FileServiceClient { return v1.NewFileServiceClient(c.conn) }

// Push stores a new file and returns its description (file id, version 1).
func (c *Client) Push(ctx context.Context, filename string, data []byte) (*FileInfo, error) {
	if len(data) > unaryFileBytes {
		return c.Upload(ctx, filename, bytes.NewReader(data))
	}
	resp, err := c.files().Push(ctx, &v1.PushRequest{FileData: data, Filename: filename})
	if err != nil {
		return nil, err
	}
	return resp.Info, nil
}

// unaryFileBytes is the largest file Push and Get carry in one message;
// larger ones stream.
const unaryFileBytes = 8 << 20

// Upload stores a new file read from r, of any size.
func (c *Client) Upload(ctx context.Context, filename string, r io.Reader) (*FileInfo, error) {
	return c.upload(ctx, &v1.UploadHeader{Filename: filename}, r)
}

// ReviseFrom stores a new version of a file read from r. With
// expectedVersion non-zero it fails (FailedPrecondition or Aborted) unless
// the file is at that version.
func (c *Client) ReviseFrom(ctx context.Context, fileID string, r io.Reader, expectedVersion int64) (*FileInfo, error) {
	return c.upload(ctx, &v1.UploadHeader{FileId: fileID, ExpectedVersion: expectedVersion}, r)
}

// sizeOf returns what is left to read of r when r knows it (a Len method,
// as bytes.Reader, strings.Reader and bytes.Buffer have, or a regular
// file), else 0: an Upload declares it, so that a file too large is refused
// before its bytes.
func sizeOf(r io.Reader) int64 {
	switch r := r.(type) {
	case interface{ Len() int }:
		return int64(r.Len())
	case *os.File:
		fi, err := r.Stat()
		if err != nil || !fi.Mode().IsRegular() {
			return 0
		}
		if off, err := r.Seek(0, io.SeekCurrent); err == nil && off <= fi.Size() {
			return fi.Size() - off
		}
	}
	return 0
}

func (c *Client) upload(ctx context.Context, h *v1.UploadHeader, r io.Reader) (*FileInfo, error) {
	h.Size = sizeOf(r)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.files().Upload(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&v1.UploadRequest{Part: &v1.UploadRequest_Header{Header: h}}); err != nil {
		_, err = stream.CloseAndRecv()
		return nil, err
	}
	buf := make([]byte, 1<<20)
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			if err := stream.Send(&v1.UploadRequest{Part: &v1.UploadRequest_Data{Data: buf[:n]}}); err != nil {
				_, err = stream.CloseAndRecv()
				return nil, err
			}
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			return nil, rerr // cancel abandons the upload: nothing is stored
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return nil, err
	}
	return resp.Info, nil
}

// Get returns a file's bytes at its latest version.
func (c *Client) Get(ctx context.Context, fileID string) ([]byte, error) {
	var buf bytes.Buffer
	if _, err := c.Download(ctx, fileID, 0, &buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Download writes a file's bytes (version 0: the latest) to w and returns
// its description.
func (c *Client) Download(ctx context.Context, fileID string, version int64, w io.Writer) (*FileInfo, error) {
	return c.DownloadRange(ctx, fileID, version, 0, 0, w)
}

// DownloadRange writes length bytes (0: to the end) from offset of a file
// to w. The bytes w is given are gRPC's receive buffers: as io.Writer
// says, w must not keep them after Write returns.
func (c *Client) DownloadRange(ctx context.Context, fileID string, version, offset, length int64, w io.Writer) (*FileInfo, error) {
	stream, err := c.files().Download(ctx, &v1.DownloadRequest{FileId: fileID, Version: version, Offset: offset, Length: length}, wirefields.CallOption())
	if err != nil {
		return nil, err
	}
	chunk := downloadChunk{w: w}
	for {
		err := stream.RecvMsg(&chunk)
		switch {
		case chunk.writeErr != nil:
			return nil, chunk.writeErr
		case errors.Is(err, io.EOF):
			return chunk.info, nil
		case err != nil:
			return nil, err
		}
	}
}

// Field numbers of DownloadResponse.
const (
	downloadInfoField = 1
	downloadDataField = 2
)

// downloadChunk decodes Download's messages (a wirefields.Message): each
// chunk's data goes from gRPC's receive buffers to w, rather than into a
// whole message, then into its decoded field, first.
type downloadChunk struct {
	w        io.Writer
	writeErr error // w's, which ends the download
	info     *FileInfo
	seen     bool // a data field in the message being decoded
}

func (d *downloadChunk) BeginMessage() { d.seen = false }

func (d *downloadChunk) BytesField(num protowire.Number, n int, f *wirefields.Field) error {
	switch num {
	case downloadInfoField:
		b := make([]byte, n)
		if _, err := io.ReadFull(f, b); err != nil {
			return err
		}
		info := &FileInfo{}
		if err := proto.Unmarshal(b, info); err != nil {
			return err
		}
		d.info = info
	case downloadDataField:
		if d.seen {
			return fmt.Errorf("%w: two data fields in one Download message", wirefields.ErrMalformed)
		}
		d.seen = true
		if _, err := f.WriteTo(d.w); err != nil {
			d.writeErr = err
			return err
		}
	}
	return nil
}

// Revise stores a new version of a file; see ReviseFrom.
func (c *Client) Revise(ctx context.Context, fileID string, data []byte, expectedVersion int64) (*FileInfo, error) {
	if len(data) > unaryFileBytes {
		return c.ReviseFrom(ctx, fileID, bytes.NewReader(data), expectedVersion)
	}
	resp, err := c.files().Revise(ctx, &v1.ReviseRequest{FileId: fileID, FileData: data, ExpectedVersion: expectedVersion})
	if err != nil {
		return nil, err
	}
	return resp.Info, nil
}

// Sync returns the changes to the caller's files since cursor ("" for every
// file) and the cursor to pass next time.
func (c *Client) Sync(ctx context.Context, cursor string) ([]*FileChange, string, error) {
	resp, err := c.files().Synchronous(ctx, &v1.SynchronousRequest{Cursor: cursor})
	if err != nil {
		return nil, "", err
	}
	return resp.Changes, resp.Cursor, nil
}

// Stat describes a file (version 0: the latest), with its redundancy now.
func (c *Client) Stat(ctx context.Context, fileID string, version int64) (*FileInfo, error) {
	resp, err := c.files().Stat(ctx, &v1.StatRequest{FileId: fileID, Version: version})
	if err != nil {
		return nil, err
	}
	return resp.Info, nil
}

// History lists a file's versions, newest first.
func (c *Client) History(ctx context.Context, fileID string) ([]*FileInfo, error) {
	resp, err := c.files().FileHistory(ctx, &v1.FileHistoryRequest{FileId: fileID})
	if err != nil {
		return nil, err
	}
	return resp.Versions, nil
}

// List lists the caller's files.
func (c *Client) List(ctx context.Context) ([]*FileInfo, error) {
	var out []*FileInfo
	token := ""
	for {
		resp, err := c.files().List(ctx, &v1.ListRequest{PageToken: token})
		if err != nil {
			return nil, err
		}
		out = append(out, resp.Files...)
		if resp.NextPageToken == "" {
			return out, nil
		}
		token = resp.NextPageToken
	}
}

// Delete removes a file and all its versions.
func (c *Client) Delete(ctx context.Context, fileID string) error {
	_, err := c.files().Delete(ctx, &v1.DeleteRequest{FileId: fileID})
	return err
}
