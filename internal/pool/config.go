package pool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/hivemind/taskworker/internal/dnsproxy"
	"github.com/hivemind/taskworker/internal/files"
	"github.com/hivemind/taskworker/internal/metrics"
	"github.com/hivemind/taskworker/internal/quota"
	"github.com/hivemind/taskworker/internal/tasks"
	"github.com/hivemind/taskworker/internal/tracing"
)

// Config configures a pool process.
type Config struct {
	// Listen is the gRPC address for clients and workers.
	Listen string
	// DataDir holds the embedded etcd's data and the bootstrap tokens
	// (admin.token, join.token).
	DataDir string
	// EtcdEndpoints, when set, points at an existing etcd cluster instead of
	// starting an embedded one.
	EtcdEndpoints []string
	// EtcdCA, EtcdCert and EtcdKey are PEM files for the pool's TLS
	// connection to an external etcd (--etcd-endpoints): the CA that signed
	// etcd's certificate, and the pool's client certificate and key. The
	// embedded etcd needs none: the pool makes them from its CA.
	EtcdCA, EtcdCert, EtcdKey string
	// CACert and CAKey are the cluster CA's certificate and key (PEM); empty:
	// the CA in DataDir, made on first start. Every replica of a network
	// needs the same CA (docs/RATIONALE.md, "Why the CA key lives where it
	// does").
	CACert, CAKey string
	// KeyFile holds the master keys that wrap every file version's and
	// secret's data key (package keyring); empty: master.keys in DataDir,
	// made on first start. Every replica of a network needs the same key
	// file (docs/RATIONALE.md, "Why the CA key lives where it does", goes
	// for it too).
	KeyFile string
	// TLSHosts are extra names and addresses the pool's certificate holds,
	// for clients that dial it by a name that is not its listen address.
	TLSHosts []string
	// WorkerCertTTL is how long a worker's certificate is valid (0:
	// pki.WorkerLifetime); workers renew at two thirds of it.
	WorkerCertTTL time.Duration
	// Insecure serves plaintext, with no certificates: workers are then
	// admitted by the join token alone and any peer may call them. For a
	// network on a trusted host only; logged as a warning at every start.
	Insecure bool
	// EtcdTickMs and EtcdElectionMs tune the embedded etcd (0: defaults).
	EtcdTickMs, EtcdElectionMs uint
	// Prefix namespaces every etcd key, so several networks can share an etcd.
	Prefix string
	// LeaseTTL is how long a worker that stopped heartbeating stays listed.
	LeaseTTL time.Duration
	// MaxArgsBytes bounds a call's arguments.
	MaxArgsBytes int
	// CallAttempts bounds the workers tried for one call of an idempotent
	// function.
	CallAttempts int
	// SuspectFor is how long a worker whose connection failed is avoided.
	SuspectFor time.Duration
	// MaxModuleBytes bounds a deployed module.
	MaxModuleBytes int
	// DeployLimits are the defaults and maximums for deployed functions.
	DeployLimits LimitsConfig
	// Checker checks modules at deploy; nil checks only their form.
	Checker ModuleChecker
	// Files configures file storage (its Prefix and Logger are the pool's).
	Files files.Config
	// DNS configures the resolver behind DNSService and the DNS listener.
	DNS dnsproxy.Config
	// DNSListen, when set (host:port; port 0 picks one), serves standard
	// DNS (UDP and TCP) for the network's zone.
	DNSListen string
	// EgressAllowNets are networks outbound requests and DNS answers may
	// reach although the egress policy refuses them (private, loopback,
	// link-local, ...): the operator's explicit exceptions.
	EgressAllowNets []netip.Prefix
	Logger          *slog.Logger
	// Metrics, when set, is fed by the pool: its RPCs, calls, workers and
	// storage (serve it with Metrics.Serve).
	Metrics *metrics.Metrics
	// Tracing, when set, traces every RPC the pool serves, continuing the
	// caller's trace.
	Tracing *tracing.Tracing
	// TaskRetention is how long an ended task's record (its result) is
	// kept in etcd (RATIONALE.md, "Why keep ended tasks for ten
	// minutes?").
	TaskRetention time.Duration
	// Tasks, when set, adjusts the task runner's configuration (tests:
	// shorter leases).
	Tasks func(*tasks.Config)
	// Quotas returns a user's quotas; nil: those kept in etcd and set with
	// QuotaService. It is asked on every deploy and every call, so it should
	// answer from memory. The pool enforces Modules, ModuleBytes and Calls;
	// file storage, StorageBytes and the versions kept.
	Quotas func(ctx context.Context, user string) (quota.Limits, error)
	// EtcdCompactEvery is how often the pool compacts etcd's history (0:
	// 5 minutes; negative: never), keeping the revisions of the last
	// EtcdCompactRetain (0: an hour): what a watch or a change feed may
	// resume from (docs/RATIONALE.md, "Why compact and defragment etcd, and
	// when?").
	EtcdCompactEvery, EtcdCompactRetain time.Duration
	// EtcdDefragEvery is how often the pool looks at its embedded etcd's
	// database (0: 10 minutes; negative: never), and defragments it when at
	// least EtcdDefragMinFree bytes (0: 64 MiB) and half the file are free.
	// An external etcd is its operator's to defragment.
	EtcdDefragEvery   time.Duration
	EtcdDefragMinFree int64
}

// DefaultConfig returns a configuration for a pool with its data in dir.
func DefaultConfig(dir string) Config {
	return Config{
		Listen:         "127.0.0.1:50051",
		DataDir:        dir,
		Prefix:         "/taskworker/",
		LeaseTTL:       5 * time.Second,
		TaskRetention:  DefaultTaskRetention,
		MaxArgsBytes:   4 << 20,
		CallAttempts:   3,
		SuspectFor:     2 * time.Second,
		MaxModuleBytes: 12 << 20,
		DeployLimits:   DefaultLimits(),
		Files:          files.DefaultConfig(""),
		DNS:            dnsproxy.DefaultConfig(),
	}
}

// Validate reports a configuration that cannot work, saying what to change.
func (c Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("pool: no data directory: set --data-dir")
	}
	if c.Listen == "" {
		return errors.New("pool: no listen address: set --listen (host:port; port 0 picks one)")
	}
	if c.Prefix == "" || c.Prefix[len(c.Prefix)-1] != '/' {
		return fmt.Errorf("pool: etcd key prefix %q must end in '/'", c.Prefix)
	}
	if c.LeaseTTL < time.Second {
		return fmt.Errorf("pool: lease TTL %s is below etcd's minimum of about 1s; raise --lease-ttl", c.LeaseTTL)
	}
	if c.TaskRetention < time.Second {
		return fmt.Errorf("pool: ended tasks kept %s: give --task-retention of at least 1s (default %s)", c.TaskRetention, DefaultTaskRetention)
	}
	if c.MaxArgsBytes <= 0 || c.MaxArgsBytes > maxMessageBytes/2 {
		return fmt.Errorf("pool: max call arguments %d must be between 1 and %d bytes", c.MaxArgsBytes, maxMessageBytes/2)
	}
	if c.MaxModuleBytes <= 0 || c.MaxModuleBytes > maxMessageBytes-(1<<20) {
		return fmt.Errorf("pool: max module size %d must be between 1 and %d bytes", c.MaxModuleBytes, maxMessageBytes-(1<<20))
	}
	if c.DeployLimits.Default == nil || c.DeployLimits.Max == nil {
		return errors.New("pool: deploy limits are unset; start from DefaultLimits()")
	}
	if err := c.Files.Validate(); err != nil {
		return err
	}
	if (c.CACert == "") != (c.CAKey == "") {
		return errors.New("pool: give both --ca-cert and --ca-key (the cluster CA's certificate and key), or neither to use the CA in the data directory")
	}
	if c.EtcdCA != "" || c.EtcdCert != "" || c.EtcdKey != "" {
		if len(c.EtcdEndpoints) == 0 {
			return errors.New("pool: --etcd-ca, --etcd-cert and --etcd-key are for an external etcd; give --etcd-endpoints too, or drop them (the embedded etcd needs none)")
		}
		if c.EtcdCA == "" || c.EtcdCert == "" || c.EtcdKey == "" {
			return errors.New("pool: an external etcd over TLS needs all of --etcd-ca, --etcd-cert and --etcd-key")
		}
	} else if len(c.EtcdEndpoints) > 0 && !c.Insecure {
		return errors.New("pool: an external etcd needs TLS with a client certificate: give --etcd-ca, --etcd-cert and --etcd-key (or --insecure, for plaintext on a trusted host)")
	}
	if c.WorkerCertTTL < 0 || (c.WorkerCertTTL > 0 && c.WorkerCertTTL < 10*time.Second) {
		return fmt.Errorf("pool: worker certificate lifetime %s is too short; give at least 10s (default 24h)", c.WorkerCertTTL)
	}
	if c.EtcdCompactRetain < 0 {
		return fmt.Errorf("pool: etcd history kept %s is negative; give a duration (0: an hour)", c.EtcdCompactRetain)
	}
	if c.EtcdDefragMinFree < 0 {
		return fmt.Errorf("pool: etcd defragmentation threshold %d bytes is negative; give a size (0: 64 MiB)", c.EtcdDefragMinFree)
	}
	if c.CallAttempts < 1 {
		return fmt.Errorf("pool: call attempts %d must be at least 1", c.CallAttempts)
	}
	return nil
}

// DefaultTaskRetention is how long ended tasks are kept by default.
const DefaultTaskRetention = 10 * time.Minute

// heartbeatInterval is how often workers are told to heartbeat: three tries
// before the lease runs out.
func (c Config) heartbeatInterval() time.Duration { return c.LeaseTTL / 3 }

// maxMessageBytes bounds every gRPC message the pool accepts.
const maxMessageBytes = 16 << 20

// streamWorkers is how many goroutines the pool's gRPC server keeps to run
// handlers on. A call's handler waits for its worker's answer, so it holds
// one for the call's length: enough for the calls in flight under load; a
// call that finds them all busy gets a goroutine of its own, as without
// them.
const streamWorkers = 256
