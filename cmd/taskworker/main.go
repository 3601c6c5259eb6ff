package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker/internal/sandbox"
	"github.com/hivemind/taskworker/internal/starlarkrun"
)

func main() {
	// A child process of a worker, for Starlark or WebAssembly: nothing
	// else may run first.
	if len(os.Args) > 1 && os.Args[1] == starlarkrun.ChildArg {
		os.Exit(starlarkrun.Main())
	}
	if len(os.Args) > 1 && os.Args[1] == sandbox.ChildArg {
		os.Exit(sandbox.ChildMain())
	}
	os.Exit(doMain(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// commands is the table of subcommands; each lives in its own file.
var commands = []func(*env) *cobra.Command{
	upCommand,
	poolCommand,
	workerCommand,
	callCommand,
	workersCommand,
	drainCommand,
	functionsCommand,
	deployCommand,
	undeployCommand,
	grantCommand,
	revokeCommand,
	pushCommand,
	getCommand,
	reviseCommand,
	filesCommand,
	historyFileCommand,
	rmCommand,
	syncCommand,
	statusCommand,
	resolveCommand,
	tokenCommand,
	secretCommand,
	auditCommand,
	keysCommand,
	fetchCommand,
	quotaCommand,
	initCommand,
	etcdCommand,
	submitCommand,
	taskCommand,
	tasksCommand,
	scheduleCommand,
	benchCommand,
	genDocsCommand,
}

// env is what every command shares: its output streams and global flags.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	logLevel       string
	logFormat      string
}

// logger logs at --log-level in --log-format, which checkLogFlags has
// validated before any command ran.
func (e *env) logger() *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(e.logLevel))
	opts := &slog.HandlerOptions{Level: level}
	if e.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(e.stderr, opts))
	}
	return slog.New(slog.NewTextHandler(e.stderr, opts))
}

// checkLogFlags refuses a --log-level slog does not know, or a --log-format
// other than text and json, instead of logging some other way without a
// word.
func (e *env) checkLogFlags(*cobra.Command, []string) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(e.logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: use debug, info, warn or error", e.logLevel)
	}
	if e.logFormat != "text" && e.logFormat != "json" {
		return fmt.Errorf("--log-format %q: use text or json", e.logFormat)
	}
	return nil
}

// doMain runs the command line and returns the exit code; only main exits.
func doMain(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := rootCommand(&env{stdin: stdin, stdout: stdout, stderr: stderr})
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.Execute(); err != nil {
		fmt.Fprintf(stderr, "taskworker: %s\n", oneLine(err))
		var ee exitError
		if errors.As(err, &ee) {
			return int(ee)
		}
		return 1
	}
	return 0
}

// rootCommand builds the command tree from the table.
func rootCommand(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:           "taskworker",
		Short:         "Run and use a TaskWorker network: remote functions on a pool of workers",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&e.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	root.PersistentFlags().StringVar(&e.logFormat, "log-format", "text", "log format: text (key=value) or json (one object a line)")
	root.PersistentPreRunE = e.checkLogFlags
	for _, c := range commands {
		root.AddCommand(c(e))
	}
	refuseUnknownSubcommands(root)
	return root
}

// refuseUnknownSubcommands makes a command that only groups others (token,
// bench) fail on a word that names none of them, as the root does, instead
// of printing its help and exiting 0; with no word it prints its help.
func refuseUnknownSubcommands(cmd *cobra.Command) {
	for _, sub := range cmd.Commands() {
		refuseUnknownSubcommands(sub)
	}
	if cmd.Runnable() || !cmd.HasSubCommands() || !cmd.HasParent() {
		return
	}
	cmd.Args = cobra.NoArgs
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		return cmd.Help()
	}
}

// oneLine renders an error for a person: a gRPC status as "Code: message".
func oneLine(err error) string {
	if st, ok := status.FromError(err); ok {
		return st.Code().String() + ": " + strings.ReplaceAll(st.Message(), "\n", " ")
	}
	return strings.ReplaceAll(err.Error(), "\n", " ")
}

// exitError carries a specific exit code.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }
