package starlarkrun

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/hivemind/taskworker/internal/childproc"
)

func TestConfigValidate(t *testing.T) {
	valid := DefaultConfig()
	valid.Command = []string{"/usr/local/bin/taskworker", ChildArg}
	if err := valid.Validate(); err != nil {
		t.Fatalf("default config with a command: %v", err)
	}
	for _, tc := range []struct {
		name   string
		change func(*Config)
		msg    string
	}{
		{"no command", func(c *Config) { c.Command = nil }, "Command is empty"},
		{"relative command", func(c *Config) { c.Command = []string{"taskworker", ChildArg} }, `Command[0] ("taskworker") must be an absolute path`},
		{"no children", func(c *Config) { c.MaxChildren = 0 }, "MaxChildren (0) must be positive"},
		{"caller cap over the children", func(c *Config) { c.MaxChildrenPerCaller = 9 }, "MaxChildrenPerCaller (9) must be between 0 (all but one) and MaxChildren (8)"},
		{"too many warm", func(c *Config) { c.WarmChildren = 9 }, "WarmChildren (9) must be between 0 and MaxChildren (8)"},
		{"tiny memory", func(c *Config) { c.MaxMemory = MiB }, "MaxMemory (1048576 bytes) must be at least 16 MiB"},
		{"no timeout", func(c *Config) { c.MaxTimeout = 0 }, "MaxTimeout (0s) must be positive"},
		{"huge output", func(c *Config) { c.MaxOutput = GiB }, "MaxOutput (1073741824) must be between 1 and"},
		{"default over maximum", func(c *Config) { c.Defaults.Timeout = time.Hour },
			"Defaults: timeout 1h0m0s must be positive and at most 5m0s (the operator's MaxTimeout)"},
		{"default memory under minimum", func(c *Config) { c.Defaults.Memory = 8 * MiB },
			"Defaults: memory 8 MiB must be between 16 MiB and 1 GiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := valid
			tc.change(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("got %v, want an error containing %q", err, tc.msg)
			}
		})
	}
}

func TestGRPCCode(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code codes.Code
	}{
		{nil, codes.OK},
		{fmt.Errorf("%w: x", ErrTimeout), codes.DeadlineExceeded},
		{fmt.Errorf("%w: x", ErrMemoryLimit), codes.ResourceExhausted},
		{fmt.Errorf("%w: x", ErrOutputTooLarge), codes.ResourceExhausted},
		{fmt.Errorf("%w: x", ErrBusy), codes.ResourceExhausted},
		{fmt.Errorf("%w: x", ErrInputTooLarge), codes.InvalidArgument},
		{fmt.Errorf("%w: x", ErrInvalidArgs), codes.InvalidArgument},
		{fmt.Errorf("%w: x", ErrInvalidLimits), codes.InvalidArgument},
		{fmt.Errorf("%w: %w", ErrInvalidScript, &ScriptError{Script: "a.star", Line: 1, Message: "m"}), codes.InvalidArgument},
		{fmt.Errorf("%w: %w", ErrScript, &ScriptError{Script: "a.star", Line: 1, Message: "m"}), codes.Unknown},
		{fmt.Errorf("%w: x", ErrCrashed), codes.Aborted},
		{fmt.Errorf("%w: x", ErrCanceled), codes.Canceled},
		{context.Canceled, codes.Canceled},
		{fmt.Errorf("%w: x", ErrStart), codes.Unavailable},
		{ErrClosed, codes.Unavailable},
		{errors.New("other"), codes.Unknown},
	} {
		if got := childproc.GRPCCode(tc.err); got != tc.code {
			t.Errorf("childproc.GRPCCode(%v) = %s, want %s", tc.err, got, tc.code)
		}
		if st := childproc.GRPCStatus(tc.err); st.Code() != tc.code || (tc.err != nil && st.Message() != tc.err.Error()) {
			t.Errorf("childproc.GRPCStatus(%v) = %v", tc.err, st)
		}
	}
}
