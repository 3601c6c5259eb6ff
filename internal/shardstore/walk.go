package shardstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"iter"
	"os"
	"path/filepath"
)

// entry is a file found by walk: a shard (with its key) or a temp file.
type entry struct {
	path string
	key  Key
	temp bool
	de   fs.DirEntry
}

var errStopWalk = errors.New("stop walk")

// walk visits every shard and temp file of the store, or of one file ID if fileID is not empty, in
// lexical order. Names that are neither are left alone: the store never touches what it did not write.
// leave, if not nil, is called after a write ID's or file ID's directory has been visited.
func (s *Store) walk(ctx context.Context, fileID string, visit func(entry) error, leave func(dir string) error) error {
	if err := s.ensureRoot(); err != nil {
		return err
	}
	var fans []string
	if fileID != "" {
		fans = []string{fan(fileID)}
	} else {
		des, err := readDir(s.root)
		if err != nil {
			return err
		}
		for _, de := range des {
			if n := de.Name(); de.IsDir() && len(n) == 2 && isHex(n[0]) && isHex(n[1]) {
				fans = append(fans, n)
			}
		}
	}
	for _, f := range fans {
		fanDir := filepath.Join(s.root, f)
		files, err := s.subdirs(fanDir, fileID)
		if err != nil {
			return err
		}
		for _, file := range files {
			fileDir := filepath.Join(fanDir, file)
			writes, err := s.subdirs(fileDir, "")
			if err != nil {
				return err
			}
			for _, write := range writes {
				if err := ctx.Err(); err != nil {
					return err
				}
				if s.isClosed() {
					return ErrClosed
				}
				writeDir := filepath.Join(fileDir, write)
				des, err := readDir(writeDir)
				if err != nil {
					return err
				}
				for _, de := range des {
					e := entry{path: filepath.Join(writeDir, de.Name()), de: de}
					name := de.Name()
					switch block, shard, ok := parseFileName(name); {
					case len(name) > len(tempPrefix) && name[:len(tempPrefix)] == tempPrefix && de.Type().IsRegular():
						e.temp = true
					case ok && de.Type().IsRegular():
						e.key = Key{FileID: file, WriteID: write, Block: block, Shard: shard}
					default:
						continue
					}
					if err := visit(e); err != nil {
						return err
					}
				}
				if leave != nil {
					if err := leave(writeDir); err != nil {
						return err
					}
				}
			}
			if leave != nil {
				if err := leave(fileDir); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// subdirs lists the directories in dir named by valid IDs (only `only`, if not empty).
func (s *Store) subdirs(dir, only string) ([]string, error) {
	des, err := readDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, de := range des {
		n := de.Name()
		if de.IsDir() && validateID("", n) == nil && (only == "" || n == only) {
			names = append(names, n)
		}
	}
	return names, nil
}

// readDir is os.ReadDir, except that a directory removed meanwhile (by GC or Delete) is simply empty.
func readDir(dir string) ([]fs.DirEntry, error) {
	des, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return des, err
}

func isHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' }

// List yields the keys of the stored shards, of one file if fileID is not empty, in lexical order of their
// file names. It reads directories only; use Stat or Verify for more. An error ends the sequence.
func (s *Store) List(ctx context.Context, fileID string) iter.Seq2[Key, error] {
	return func(yield func(Key, error) bool) {
		if fileID != "" {
			if err := validateID("file ID", fileID); err != nil {
				yield(Key{}, err)
				return
			}
		}
		if err := s.begin(); err != nil {
			yield(Key{}, err)
			return
		}
		defer s.ops.Done()
		err := s.walk(ctx, fileID, func(e entry) error {
			if !e.temp && !yield(e.key, nil) {
				return errStopWalk
			}
			return nil
		}, nil)
		if err != nil && err != errStopWalk {
			yield(Key{}, err)
		}
	}
}

// ensureRoot recreates the shard directory if it was deleted under the store, and logs it: every shard it
// held is gone, which the pool learns from the next listing (it compares listings with its manifests) and
// repairs.
func (s *Store) ensureRoot() error {
	if _, err := os.Stat(s.root); !errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	s.logger.Error("shardstore: the shard directory was deleted under the store; recreating it empty (the pool rebuilds what it held)",
		"dir", s.root)
	if err := os.MkdirAll(s.root, 0o700); err != nil {
		return fmt.Errorf("shardstore: recreating the shard directory %s: %w", s.root, err)
	}
	return syncDir(filepath.Dir(s.root))
}
