package taskworker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/taskworker/internal/function"
	"github.com/hivemind/taskworker/internal/worker"
)

// Worker serves registered Go functions to the node pool.
type Worker struct {
	s            *worker.Server
	poolAddr     string
	storageToken string
	storageOpts  []ClientOption // how Storage verifies the pool

	storageOnce sync.Once
	storage     *Client
	storageErr  error
	stopped     atomic.Bool
}

// Option configures a Worker.
type Option func(*options)

type options struct {
	worker.Config
	storageToken string
	caFile       string
}

// WithPool registers the worker with the node pool at addr. The network's
// join token pays for the worker's first certificate (enrolment); with
// WithDataDir the worker keeps it and needs the token no more. Give the
// network's CA too (WithPoolCA). Without WithPool the worker runs
// standalone.
func WithPool(addr, joinToken string) Option {
	return func(c *options) { c.PoolAddr, c.JoinToken = addr, joinToken }
}

// WithPoolCA gives the worker the network's CA certificate (PEM): it
// verifies the pool with it, and admits calls only from the pool's
// certificate. A worker with a pool needs it (or WithInsecurePool).
func WithPoolCA(certPEM []byte) Option {
	return func(c *options) { c.CA, c.CAName = certPEM, "the CA given to the worker" }
}

// WithPoolCAFile is WithPoolCA with the certificate read from a file (by
// New).
func WithPoolCAFile(path string) Option {
	return func(c *options) { c.caFile, c.CAName = path, "the CA in "+path }
}

// WithInsecurePool runs the worker without TLS, for a pool run with
// --insecure: any peer that reaches the worker can call it. For a trusted
// host only.
func WithInsecurePool() Option {
	return func(c *options) { c.Insecure = true }
}

// WithAdvertiseAddr sets the address the pool dials when it is not the one
// the worker listens on (a host behind NAT, in a container).
func WithAdvertiseAddr(addr string) Option {
	return func(c *options) { c.Advertise = addr }
}

// WithLabels attaches labels (zone, hardware, ...) to the worker.
func WithLabels(labels map[string]string) Option {
	return func(c *options) { c.Labels = labels }
}

// WithLogger sets the worker's logger; by default it logs nothing.
func WithLogger(l *slog.Logger) Option {
	return func(c *options) { c.Logger = l }
}

// WithDrainDelay sets how long Stop keeps accepting calls after leaving the
// pool, for pools that have not yet seen it leave (default 200ms).
func WithDrainDelay(d time.Duration) Option {
	return func(c *options) { c.DrainDelay = d }
}

// WithDataDir keeps file shards, deployed modules and the worker's key and
// certificate in dir: the worker then stores files for the network, and
// keeps its identity across restarts (without one, it makes a new key and
// enrols again, with its join token, at every start).
func WithDataDir(dir string) Option {
	return func(c *options) { c.DataDir = dir }
}

// WithStorageToken sets the API token that Storage uses: the user whose
// files the worker's code reads and writes.
func WithStorageToken(token string) Option {
	return func(c *options) { c.storageToken = token }
}

// New returns a worker with the given id, which names it in the network.
func New(id string, opts ...Option) (*Worker, error) {
	o := options{Config: worker.Config{ID: id, DrainDelay: 200 * time.Millisecond}}
	for _, opt := range opts {
		opt(&o)
	}
	if o.caFile != "" {
		ca, err := os.ReadFile(o.caFile)
		if err != nil {
			return nil, fmt.Errorf("taskworker: the network's CA certificate: %w", err)
		}
		o.CA = ca
	}
	s, err := worker.New(o.Config)
	if err != nil {
		return nil, err
	}
	w := &Worker{s: s, poolAddr: o.PoolAddr, storageToken: o.storageToken}
	if o.Insecure {
		w.storageOpts = []ClientOption{WithInsecure()}
	} else if o.CA != nil {
		w.storageOpts = []ClientOption{WithCA(o.CA)}
	}
	return w, nil
}

// errStopped is what Storage answers once the worker has stopped.
var errStopped = errors.New("taskworker: the worker has stopped")

// Storage returns a client of the network's FileService (Push, Get,
// Revise, Sync, ...) acting as the user of WithStorageToken. The client is
// made on first use and closed by Stop, after the calls in flight are done.
func (w *Worker) Storage() (*Client, error) {
	if w.stopped.Load() {
		return nil, errStopped
	}
	w.storageOnce.Do(func() {
		switch {
		case w.poolAddr == "":
			w.storageErr = errors.New("taskworker: Storage needs a pool: use WithPool")
		case w.storageToken == "":
			w.storageErr = errors.New("taskworker: Storage needs a user's API token: use WithStorageToken")
		default:
			w.storage, w.storageErr = Dial(w.poolAddr, append([]ClientOption{WithToken(w.storageToken)}, w.storageOpts...)...)
		}
	})
	return w.storage, w.storageErr
}

// Raw is the escape from JSON for a function's arguments and result: a
// function whose only parameter (after the context) is a Raw receives the
// call's arguments unparsed, and a Raw result reaches the caller as it is,
// unencoded. WebAssembly functions have the same type (guest.Raw).
type Raw = function.Raw

// FunctionOption configures one function.
type FunctionOption func(*functionConfig)

type functionConfig struct {
	idempotent bool
}

// Idempotent declares that calling the function twice with the same
// arguments is harmless, so the pool may retry a call on another worker
// when its worker dies mid-call. Without it such a call fails with
// Unavailable and an unknown outcome.
func Idempotent() FunctionOption {
	return func(c *functionConfig) { c.idempotent = true }
}

// Function registers fn under name. fn is any Go func of the shape
//
//	func([ctx context.Context,] params...) [result] [error]
//
// Callers pass the arguments as a JSON array bound by position to params (a
// function taking one struct also accepts a JSON object); the result travels
// back as JSON (docs/ABI.md, "Arguments and results", holds the rules, the
// same for WebAssembly functions). The context is cancelled when the caller
// gives up, and carries the caller's deadline. Functions may be added after
// Start.
//
// The error fn returns reaches the caller as a gRPC status: the status
// itself when it is one (made with [Errorf] or status.Error, or wrapping
// one), so the caller's status.Code sees its code; otherwise the code
// Unknown with the error's message.
//
// Function fails at once, with an error that says what to change, when name
// is not a valid function name (1 to 200 letters, digits, '_', '.', ':' or
// '-', starting with a letter or '_'), is already registered, or fn has
// another shape.
func (w *Worker) Function(name string, fn any, opts ...FunctionOption) error {
	var c functionConfig
	for _, o := range opts {
		o(&c)
	}
	return w.s.Register(name, fn, c.idempotent)
}

// RegisterFunction is Function under another name.
func (w *Worker) RegisterFunction(name string, fn any, opts ...FunctionOption) error {
	return w.Function(name, fn, opts...)
}

// Errorf returns an error that reaches the caller of a function with the
// gRPC code c and the formatted message, as status.Errorf does.
func Errorf(c codes.Code, format string, a ...any) error {
	return status.Errorf(c, format, a...)
}

// Start serves on addr (":50052" when empty) and, with WithPool, registers
// with the pool in the background, re-registering by itself after the pool
// or etcd comes back. It returns once the worker serves.
func (w *Worker) Start(ctx context.Context, addr string) error {
	return w.s.Start(ctx, addr)
}

// WaitRegistered waits until the pool lists the worker.
func (w *Worker) WaitRegistered(ctx context.Context) error { return w.s.WaitRegistered(ctx) }

// Addr returns the address the worker serves on, once started.
func (w *Worker) Addr() string { return w.s.Addr() }

// Stop leaves the pool, waits for the calls in flight to finish (until ctx
// ends, when it drops them) and stops serving; then it closes the Storage
// client, which those calls may have been using.
func (w *Worker) Stop(ctx context.Context) error {
	err := w.s.Stop(ctx)
	w.stopped.Store(true)
	// After this Do, no one writes w.storage.
	w.storageOnce.Do(func() {})
	if w.storage != nil {
		w.storage.Close()
	}
	return err
}
