package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker"
)

func callCommand(e *env) *cobra.Command {
	var (
		cf       clientFlags
		timeout  time.Duration
		argsFile string
		strict   bool
	)
	cmd := &cobra.Command{
		Use:   "call [flags] NAME [ARG...]",
		Short: "Call a function and print its JSON result",
		Long: `Call a function through the pool and print its result as JSON.

Each ARG is taken as JSON when it parses (1, -1, true, [1,2], {"a":1},
"quoted"), else as a string: taskworker call add 1 2 prints 3. An ARG that
starts like JSON ([, { or ") but does not parse is refused rather than sent
as a string; with --json every ARG must be JSON.

Flags go before NAME: every word after NAME is an argument, so negative
numbers need no escaping (taskworker call add -1 5).

--args-file reads the whole argument array as JSON from a file, or from
standard input with -, for input too long or too awkward for a command line.

NAME is a native function, or one you deployed; another user's deployed
function is OWNER/NAME, callable once its owner made it public or granted it
to you (see "taskworker grant").`,
		Example: `  taskworker call add 1 2
  taskworker call add -1 5
  taskworker call bob/reports
  taskworker call echo '{"x": [1, 2]}'
  taskworker call --json echo '"a string"'
  echo '[1, 2]' | taskworker call --args-file - add
  taskworker call --timeout 2m slow_report`,
		Args: namedArgs(cobra.MinimumNArgs(1), qualifiedFunctionArg, nil),
		RunE: cf.run(func(cmd *cobra.Command, args []string, c *taskworker.Client) error {
			callArgs, err := argsOf(args[1:], argsFile, strict, e.stdin)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			result, err := c.CallJSON(ctx, args[0], callArgs)
			if err != nil {
				return tooLarge(err, len(callArgs)+len(args[0]))
			}
			fmt.Fprintln(e.stdout, string(result))
			return nil
		}),
	}
	// Everything after NAME is an argument, never a flag: "-1" is a number.
	cmd.Flags().SetInterspersed(false)
	cf.register(cmd)
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "give up after this long (the function sees the deadline)")
	cmd.Flags().StringVar(&argsFile, "args-file", "", "read the arguments as one JSON array from this file (- for standard input)")
	cmd.Flags().BoolVar(&strict, "json", false, "require every ARG to be valid JSON (a string then needs its quotes: '\"text\"')")
	return cmd
}

// argsOf returns a call's arguments as a JSON array: from --args-file, or
// from the words after the function's name.
func argsOf(words []string, argsFile string, strict bool, stdin io.Reader) ([]byte, error) {
	if argsFile == "" {
		return cliArgs(words, strict)
	}
	if len(words) > 0 {
		return nil, errors.New("--args-file and ARGs on the command line: pass the arguments one way")
	}
	return readArgsFile(argsFile, stdin)
}

// maxArgsFile bounds what --args-file reads: well over what a pool accepts
// (16 MiB in one message), so the pool's own limit is what a caller meets.
const maxArgsFile = 64 << 20

// readArgsFile reads a JSON array of arguments from path, or from stdin when
// path is "-".
func readArgsFile(path string, stdin io.Reader) ([]byte, error) {
	r := stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("--args-file: %w", err)
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxArgsFile+1))
	if err != nil {
		return nil, fmt.Errorf("--args-file %s: %w", path, err)
	}
	if len(b) > maxArgsFile {
		return nil, fmt.Errorf("--args-file %s is over %d MiB; pass large data as a file instead (taskworker push FILE, then its file id)", path, maxArgsFile>>20)
	}
	b = bytes.TrimSpace(b)
	var arr []json.RawMessage
	if err := json.Unmarshal(b, &arr); err != nil {
		return nil, fmt.Errorf("--args-file %s must hold one JSON array of arguments, like [1, 2]: %v", path, err)
	}
	return b, nil
}

// cliArgs turns command-line words into a JSON array: each word as JSON when
// it is valid JSON, else as a string. A word that starts like JSON but does
// not parse is an error, and so is any word that is not JSON when strict.
func cliArgs(words []string, strict bool) ([]byte, error) {
	vals := make([]json.RawMessage, len(words))
	for i, w := range words {
		var probe any
		err := json.Unmarshal([]byte(w), &probe)
		switch {
		case err == nil:
			vals[i] = json.RawMessage(w)
		case strict:
			return nil, fmt.Errorf("argument %d (%s) is not valid JSON (%v); with --json a string needs its quotes: '\"text\"'", i+1, clip(w), err)
		case len(w) > 0 && (w[0] == '[' || w[0] == '{' || w[0] == '"'):
			return nil, fmt.Errorf("argument %d (%s) starts like JSON but is not valid JSON (%v); fix it, or pass it as a JSON string", i+1, clip(w), err)
		default:
			vals[i], _ = json.Marshal(w)
		}
	}
	return json.Marshal(vals)
}

// clip shortens a word for an error message.
func clip(w string) string {
	if len(w) > 40 {
		return w[:37] + "..."
	}
	return w
}

// tooLarge rewrites gRPC's own "received message larger than max" into what
// to do about it, as the pool's message for arguments over its limit does.
// sent is about the size of the request.
func tooLarge(err error, sent int) error {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.ResourceExhausted {
		return err
	}
	var got, limit int
	if _, scanErr := fmt.Sscanf(st.Message(), "grpc: received message larger than max (%d vs. %d)", &got, &limit); scanErr != nil {
		return err // the pool's own message, which says what to do
	}
	if got <= sent+1024 {
		return status.Errorf(codes.ResourceExhausted, "arguments are %d bytes; the pool accepts at most %d in one message (pass large data as a file: taskworker push FILE, then its file id)", got, limit)
	}
	return status.Errorf(codes.ResourceExhausted, "the result is %d bytes, over the %d this client accepts in one message; have the function store large output as a file and return its file id", got, limit)
}
