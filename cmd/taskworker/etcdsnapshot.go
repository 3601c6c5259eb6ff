package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
	clientsnapshot "go.etcd.io/etcd/client/v3/snapshot"
	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"

	"github.com/hivemind/taskworker/internal/pki"
)

// etcdSnapshotCommand backs up and restores the control plane's etcd, so
// that an operator needs no etcdctl of a matching version.
func etcdSnapshotCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Back up a network's etcd to a file, and restore members from one",
	}
	var (
		endpoints     []string
		ca, cert, key string
	)
	save := &cobra.Command{
		Use:   "save FILE --endpoints URL,... --ca F --cert F --key F",
		Short: "Write a consistent snapshot of etcd to FILE",
		Long: `Write a snapshot of the network's etcd (every manifest, deployment, token,
secret and task) to FILE, from one member, with the pools' client
certificate. Workers' shards are not in it: they stay on the workers, and a
restored etcd names them again. Keep master.keys apart from the snapshot:
files and secrets in it are readable only with those keys.`,
		Example: `  taskworker etcd snapshot save /backup/etcd-$(date +%F).db --endpoints https://10.0.0.2:2379 \
    --ca net/etcd/ca.crt --cert net/etcd/pool.crt --key net/etcd/pool.key`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(endpoints) == 0 || ca == "" || cert == "" || key == "" {
				return errors.New("snapshot save needs --endpoints, --ca, --cert and --key: a member's client URL and the pools' etcd certificate from taskworker init")
			}
			tlsConf, err := pki.EtcdClientConfig(ca, cert, key)
			if err != nil {
				return err
			}
			// One endpoint: a snapshot is of one member's database.
			cfg := clientv3.Config{Endpoints: endpoints[:1], TLS: tlsConf, DialTimeout: 10 * time.Second, Logger: zap.NewNop()}
			version, err := clientsnapshot.SaveWithVersion(cmd.Context(), zap.NewNop(), cfg, args[0])
			if err != nil {
				return fmt.Errorf("snapshot of %s: %w", endpoints[0], err)
			}
			st, err := os.Stat(args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "saved %s (%d bytes) from %s, etcd %s\n", args[0], st.Size(), endpoints[0], version)
			return nil
		},
	}
	sf := save.Flags()
	sf.StringSliceVar(&endpoints, "endpoints", nil, "the member to take it from (its client URL)")
	sf.StringVar(&ca, "ca", "", "etcd's CA certificate")
	sf.StringVar(&cert, "cert", "", "the pools' client certificate for etcd")
	sf.StringVar(&key, "key", "", "the key of --cert")

	var (
		rc   snapshot.RestoreConfig
		peer string
	)
	restore := &cobra.Command{
		Use:   "restore FILE --name NAME --data-dir DIR --initial-cluster N1=URL,... --advertise-peer URL",
		Short: "Make a member's data directory from a snapshot",
		Long: `Make a new data directory for one member from a snapshot, as the first member of
a new cluster with the snapshot's contents. Run it for every member, with the
same --initial-cluster, then start each member with 'taskworker etcd' on its
new --data-dir, then the pools. The revision is moved forward by --bump-revision
and everything before it marked compacted, so that no client mistakes the
restored history for the one it watched.`,
		Example: `  taskworker etcd snapshot restore /backup/etcd.db --name etcd1 --data-dir /srv/etcd-restored \
    --initial-cluster etcd1=https://10.0.0.2:2380,etcd2=https://10.0.0.3:2380,etcd3=https://10.0.0.4:2380 \
    --advertise-peer https://10.0.0.2:2380`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if rc.Name == "" || rc.OutputDataDir == "" || rc.InitialCluster == "" || peer == "" {
				return errors.New("snapshot restore needs --name, --data-dir, --initial-cluster and --advertise-peer, as the member will be started with")
			}
			if !strings.Contains(","+rc.InitialCluster, ","+rc.Name+"=") {
				return fmt.Errorf("--initial-cluster %q has no member %s", rc.InitialCluster, rc.Name)
			}
			if _, err := os.Stat(rc.OutputDataDir); err == nil {
				return fmt.Errorf("--data-dir %s exists: restore into a new directory, and keep the old one until the restored cluster works", rc.OutputDataDir)
			}
			rc.SnapshotPath = args[0]
			rc.PeerURLs = []string{peer}
			rc.InitialClusterToken = "taskworker"
			rc.MarkCompacted = rc.RevisionBump > 0
			if err := snapshot.NewV3(zap.NewNop()).Restore(rc); err != nil {
				return fmt.Errorf("restore %s: %w", args[0], err)
			}
			fmt.Fprintf(e.stdout, "restored member %s into %s; start it with taskworker etcd --data-dir %s\n", rc.Name, rc.OutputDataDir, rc.OutputDataDir)
			return nil
		},
	}
	rf := restore.Flags()
	rf.StringVar(&rc.Name, "name", "", "the member's name, as in --initial-cluster")
	rf.StringVar(&rc.OutputDataDir, "data-dir", "", "the member's new data directory (must not exist)")
	rf.StringVar(&rc.InitialCluster, "initial-cluster", "", "every member: NAME=PEER_URL,...")
	rf.StringVar(&peer, "advertise-peer", "", "how peers reach this member")
	rf.Uint64Var(&rc.RevisionBump, "bump-revision", 1_000_000_000, "move the revision forward by this much (0: not)")
	cmd.AddCommand(save, restore)
	return cmd
}
