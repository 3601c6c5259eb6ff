package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker"
	"github.com/hivemind/taskworker/internal/pools"
)

// Where client commands find the pool, a token and the CA: --pool/--token/
// --ca, else TASKWORKER_POOL/TASKWORKER_TOKEN/TASKWORKER_CA, else the env
// file `taskworker up` wrote in its directory (TASKWORKER_HOME, default
// ~/.taskworker).
type clientFlags struct {
	pool, token, ca string
	insecure        bool
}

func (f *clientFlags) register(cmd *cobra.Command) {
	// No backquotes in flag usage: cobra shows a backquoted word as the
	// flag's value name.
	cmd.Flags().StringVar(&f.pool, "pool", "", "pool address host:port, or the addresses of several pool replicas separated by commas (default $TASKWORKER_POOL, else that of the running 'taskworker up')")
	cmd.Flags().StringVar(&f.token, "token", "", "API token (default $TASKWORKER_TOKEN, else that of the running 'taskworker up')")
	cmd.Flags().StringVar(&f.ca, "ca", "", "the network's CA certificate, to verify the pool (default $TASKWORKER_CA, else that of the running 'taskworker up'; ca.crt in a pool's data directory)")
	cmd.Flags().BoolVar(&f.insecure, "insecure", false, "talk to a pool run with --insecure, in plaintext")
}

func (f *clientFlags) dial() (*taskworker.Client, error) {
	pool, token, ca := fromEnv(f.pool, "TASKWORKER_POOL"), fromEnv(f.token, "TASKWORKER_TOKEN"), fromEnv(f.ca, "TASKWORKER_CA")
	if pool == "" {
		return nil, errors.New("no pool address: pass --pool, set TASKWORKER_POOL, or start a local network with 'taskworker up'")
	}
	if _, err := pools.Parse(pool); err != nil {
		return nil, fmt.Errorf("%w; pass --pool (or TASKWORKER_POOL) like 127.0.0.1:50051, or 10.0.0.1:50051,10.0.0.2:50051 for several pools", err)
	}
	if token == "" {
		return nil, errors.New("no API token: pass --token or set TASKWORKER_TOKEN (the admin token of a pool is in admin.token in its data directory)")
	}
	opts := []taskworker.ClientOption{taskworker.WithToken(token)}
	switch {
	case f.insecure:
		opts = append(opts, taskworker.WithInsecure())
	case ca != "":
		opts = append(opts, taskworker.WithCAFile(ca))
	}
	return taskworker.Dial(pool, opts...)
}

// fromEnv returns flag if set, else the environment variable name, else
// name in the env file of the running 'taskworker up'.
func fromEnv(flag, name string) string {
	if flag != "" {
		return flag
	}
	if v := os.Getenv(name); v != "" {
		return v
	}
	vars, _ := readEnvFile(filepath.Join(homeDir(), "env"))
	return vars[name]
}

// unreachable rewrites an error that means no pool could be reached
// (nothing listening, a name that does not resolve) into one that says so
// and where the address came from; other errors pass unchanged (a pool
// answered: its own message says what is wrong).
func unreachable(err error, pool []string) error {
	if !pools.NeverSent(err) {
		return err
	}
	where := "the pool at " + pool[0]
	if len(pool) > 1 {
		where = "any of the pools at " + strings.Join(pool, ", ")
	}
	return status.Errorf(codes.Unavailable, "cannot reach %s (%s); is it running there? Check --pool, TASKWORKER_POOL or the env file of 'taskworker up'", where, status.Convert(err).Message())
}

// run adapts a command body that needs a client: it dials the pool and
// closes the client after.
func (f *clientFlags) run(body func(cmd *cobra.Command, args []string, c *taskworker.Client) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c, err := f.dial()
		if err != nil {
			return err
		}
		defer c.Close()
		return unreachable(body(cmd, args, c), c.Pools())
	}
}

// homeDir is where `taskworker up` keeps its network by default.
func homeDir() string {
	if d := os.Getenv("TASKWORKER_HOME"); d != "" {
		return d
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".taskworker")
	}
	return ".taskworker"
}

// readEnvFile reads KEY=VALUE lines.
func readEnvFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	vars := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if ok && !strings.HasPrefix(k, "#") {
			vars[k] = v
		}
	}
	return vars, sc.Err()
}

// readSecretFile reads a token from a file, trimmed.
func readSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	return strings.TrimSpace(string(b)), nil
}
