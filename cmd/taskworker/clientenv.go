package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hivemind/taskworker"
)

// Where client commands find the pool and a token: --pool/--token, else
// TASKWORKER_POOL/TASKWORKER_TOKEN, else the env file `taskworker up` wrote
// in its directory (TASKWORKER_HOME, default ~/.taskworker).
type clientFlags struct {
	pool, token string
}

func (f *clientFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.pool, "pool", "", "pool address host:port (default $TASKWORKER_POOL, or the running `taskworker up`)")
	cmd.Flags().StringVar(&f.token, "token", "", "API token (default $TASKWORKER_TOKEN, or the running `taskworker up`'s)")
}

func (f *clientFlags) dial() (*taskworker.Client, error) {
	pool, token := f.pool, f.token
	if pool == "" {
		pool = os.Getenv("TASKWORKER_POOL")
	}
	if token == "" {
		token = os.Getenv("TASKWORKER_TOKEN")
	}
	if pool == "" || token == "" {
		vars, _ := readEnvFile(filepath.Join(homeDir(), "env"))
		if pool == "" {
			pool = vars["TASKWORKER_POOL"]
		}
		if token == "" {
			token = vars["TASKWORKER_TOKEN"]
		}
	}
	if pool == "" {
		return nil, errors.New("no pool address: pass --pool, set TASKWORKER_POOL, or start a local network with `taskworker up`")
	}
	if token == "" {
		return nil, errors.New("no API token: pass --token or set TASKWORKER_TOKEN")
	}
	return taskworker.Dial(pool, taskworker.WithToken(token))
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
		return body(cmd, args, c)
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
