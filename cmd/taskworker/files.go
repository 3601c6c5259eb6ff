package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hivemind/taskworker"
	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
)

// The file commands: push, get, revise, files, history, rm, sync.

func pushCommand(e *env) *cobra.Command {
	var (
		cf   clientFlags
		name string
	)
	cmd := &cobra.Command{
		Use:   "push FILE",
		Short: "Store a file in the network; prints its file id",
		Args:  cobra.ExactArgs(1),
		RunE: cf.run(func(cmd *cobra.Command, args []string, c *taskworker.Client) error {
			f, size, err := openInput(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			if name == "" {
				name = filepath.Base(args[0])
			}
			info, err := c.Upload(cmd.Context(), name, progress(e, f, size))
			if err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, info.FileId)
			return nil
		}),
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&name, "name", "", "the file's name in the network (default: FILE's base name)")
	return cmd
}

func reviseCommand(e *env) *cobra.Command {
	var (
		cf     clientFlags
		expect int64
	)
	cmd := &cobra.Command{
		Use:   "revise FILE_ID FILE",
		Short: "Store a new version of a file; prints the new version",
		Args:  namedArgs(cobra.ExactArgs(2), fileIDArg, nil),
		RunE: cf.run(func(cmd *cobra.Command, args []string, c *taskworker.Client) error {
			f, size, err := openInput(args[1])
			if err != nil {
				return err
			}
			defer f.Close()
			info, err := c.ReviseFrom(cmd.Context(), args[0], progress(e, f, size), expect)
			if err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, info.Version)
			return nil
		}),
	}
	cf.register(cmd)
	cmd.Flags().Int64Var(&expect, "expect-version", 0, "refuse unless the file is at this version (compare-and-swap)")
	return cmd
}

func getCommand(e *env) *cobra.Command {
	var (
		cf      clientFlags
		out     string
		version int64
	)
	cmd := &cobra.Command{
		Use:   "get FILE_ID",
		Short: "Fetch a file (to stdout, or -o FILE)",
		Args:  namedArgs(cobra.ExactArgs(1), fileIDArg),
		RunE: cf.run(func(cmd *cobra.Command, args []string, c *taskworker.Client) error {
			if out == "" || out == "-" {
				_, err := c.Download(cmd.Context(), args[0], version, e.stdout)
				return err
			}
			// Write beside the target and rename, so a failed download
			// never leaves a partial file under the wanted name.
			tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".part-*")
			if err != nil {
				return err
			}
			defer os.Remove(tmp.Name())
			if _, err := c.Download(cmd.Context(), args[0], version, tmp); err != nil {
				tmp.Close()
				return err
			}
			if err := tmp.Close(); err != nil {
				return err
			}
			return os.Rename(tmp.Name(), out)
		}),
	}
	cf.register(cmd)
	cmd.Flags().StringVarP(&out, "output", "o", "", "write to this file instead of stdout")
	cmd.Flags().Int64Var(&version, "version", 0, "the version to fetch (default: the latest)")
	return cmd
}

func filesCommand(e *env) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "files",
		Short: "List your files",
		Args:  cobra.NoArgs,
		RunE: cf.run(func(cmd *cobra.Command, _ []string, c *taskworker.Client) error {
			fs, err := c.List(cmd.Context())
			if err != nil {
				return err
			}
			return printFiles(e, fs, true)
		}),
	}
	cf.register(cmd)
	return cmd
}

func historyFileCommand(e *env) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "history FILE_ID",
		Short: "List a file's versions",
		Args:  namedArgs(cobra.ExactArgs(1), fileIDArg),
		RunE: cf.run(func(cmd *cobra.Command, args []string, c *taskworker.Client) error {
			vs, err := c.History(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printFiles(e, vs, true)
		}),
	}
	cf.register(cmd)
	return cmd
}

func rmCommand(e *env) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "rm FILE_ID...",
		Short: "Delete files and all their versions",
		Args:  namedArgs(cobra.MinimumNArgs(1), fileIDArg),
		RunE: cf.run(func(cmd *cobra.Command, args []string, c *taskworker.Client) error {
			for _, id := range args {
				if err := c.Delete(cmd.Context(), id); err != nil {
					return err
				}
			}
			return nil
		}),
	}
	cf.register(cmd)
	return cmd
}

func syncCommand(e *env) *cobra.Command {
	var (
		cf     clientFlags
		cursor string
		follow bool
	)
	cmd := &cobra.Command{
		Use:   "sync",
		Short: "Print the changes to your files since --cursor, then the new cursor",
		Long: `Print one line per change since --cursor (every file, without one): the kind,
the file id, the version and the name; then "cursor N", to pass next time.
With --follow, keep printing changes as they happen.`,
		Args: cobra.NoArgs,
		RunE: cf.run(func(cmd *cobra.Command, _ []string, c *taskworker.Client) error {
			print := func(changes []*taskworker.FileChange, cursor string) {
				for _, ch := range changes {
					fmt.Fprintf(e.stdout, "%s %s %d %s\n", kindName(ch.Kind), ch.FileId, ch.Version, ch.Filename)
				}
				fmt.Fprintf(e.stdout, "cursor %s\n", cursor)
			}
			if !follow {
				changes, next, err := c.Sync(cmd.Context(), cursor)
				if err != nil {
					return err
				}
				print(changes, next)
				return nil
			}
			stream, err := v1.NewFileServiceClient(c.Conn()).WatchChanges(cmd.Context(), &v1.SynchronousRequest{Cursor: cursor})
			if err != nil {
				return err
			}
			for {
				msg, err := stream.Recv()
				if err != nil {
					return err
				}
				print(msg.Changes, msg.Cursor)
			}
		}),
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&cursor, "cursor", "", "the cursor the last sync printed")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing changes as they happen")
	return cmd
}

func kindName(k v1.FileChange_Kind) string {
	switch k {
	case v1.FileChange_KIND_CREATED:
		return "created"
	case v1.FileChange_KIND_REVISED:
		return "revised"
	case v1.FileChange_KIND_DELETED:
		return "deleted"
	}
	return "unknown"
}

func printFiles(e *env, fs []*taskworker.FileInfo, withRedundancy bool) error {
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FILE_ID\tVERSION\tSIZE\tLAYOUT\tMODIFIED\tREDUNDANCY\tNAME")
	for _, f := range fs {
		red := "-"
		if withRedundancy || f.Redundancy != v1.Redundancy_REDUNDANCY_UNSPECIFIED {
			red = redundancyName(f.Redundancy)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\n", f.FileId, f.Version, f.Size, f.Layout,
			time.UnixMilli(f.ModifiedAtMs).Format(time.DateTime), red, f.Filename)
	}
	return tw.Flush()
}

func redundancyName(r v1.Redundancy) string {
	switch r {
	case v1.Redundancy_REDUNDANCY_FULL:
		return "full"
	case v1.Redundancy_REDUNDANCY_REDUCED:
		return "reduced"
	case v1.Redundancy_REDUNDANCY_LOST:
		return "lost"
	case v1.Redundancy_REDUNDANCY_SINGLE_COPY:
		return "single copy"
	}
	return "unknown"
}

// openInput opens a file to upload ("-" is stdin) and returns its size, or
// -1 when unknown.
func openInput(path string) (io.ReadCloser, int64, error) {
	if path == "-" {
		return io.NopCloser(os.Stdin), -1, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return f, -1, nil
	}
	return f, fi.Size(), nil
}

// progress wraps r to draw a progress line on stderr when stderr is a
// terminal.
func progress(e *env, r io.Reader, size int64) io.Reader {
	f, ok := e.stderr.(*os.File)
	if !ok {
		return r
	}
	if fi, err := f.Stat(); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return r
	}
	return &progressReader{r: r, size: size, w: f, start: time.Now()}
}

type progressReader struct {
	r     io.Reader
	w     io.Writer
	size  int64
	done  int64
	start time.Time
	last  time.Time
}

// Len is what is left to send, declared to the pool (0: unknown).
func (p *progressReader) Len() int { return int(max(p.size-p.done, 0)) }

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.done += int64(n)
	if now := time.Now(); now.Sub(p.last) > 100*time.Millisecond || err != nil {
		p.last = now
		rate := float64(p.done) / now.Sub(p.start).Seconds() / (1 << 20)
		if p.size > 0 {
			fmt.Fprintf(p.w, "\r%.1f / %.1f MiB (%d%%) %.1f MiB/s   ", float64(p.done)/(1<<20), float64(p.size)/(1<<20), p.done*100/max(p.size, 1), rate)
		} else {
			fmt.Fprintf(p.w, "\r%.1f MiB %.1f MiB/s   ", float64(p.done)/(1<<20), rate)
		}
		if err != nil {
			fmt.Fprintln(p.w)
		}
	}
	return n, err
}
