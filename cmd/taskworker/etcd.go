package main

import (
	"errors"
	"fmt"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/hivemind/taskworker/internal/etcdserver"
	"github.com/hivemind/taskworker/internal/keyring"
	"github.com/hivemind/taskworker/internal/pki"
)

func initCommand(e *env) *cobra.Command {
	var (
		dir      string
		members  []string
		validity time.Duration
	)
	cmd := &cobra.Command{
		Use:   "init --dir DIR --etcd NAME=HOST[+HOST...] ...",
		Short: "Make the shared material of a network on several machines: CA, master keys, etcd's certificates",
		Long: `Make, in DIR, what the machines of a network that outgrows 'taskworker up'
share, and print who needs which file:

  ca.crt, ca.key       the network's CA: every pool replica (--ca-cert, --ca-key);
                       ca.crt alone for workers and clients (--ca)
  master.keys          the master keys that wrap files' and secrets' data keys:
                       every pool replica (--key-file); back it up apart from etcd
  etcd/ca.crt, ca.key  etcd's own CA, apart from the network's, so that no
                       worker certificate can open etcd
  etcd/NAME.crt, .key  each etcd member's certificate (--etcd NAME=HOST), valid
                       for NAME and its HOSTs, for clients and peers
  etcd/pool.crt, .key  the pools' client certificate for etcd (--etcd-cert, --etcd-key)

Files that exist are kept (the CAs, the master keys); certificates are issued
again, so running it again after adding an etcd member is safe. Keys are
written owner-only.`,
		Example: `  taskworker init --dir ./net --etcd etcd1=10.0.0.2 --etcd etcd2=10.0.0.3 --etcd etcd3=10.0.0.4
  taskworker init --dir ./net --etcd etcd1=etcd1.internal+10.0.0.2`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return errors.New("--dir is required: where to write the network's material")
			}
			type member struct {
				name  string
				hosts []string
			}
			var ms []member
			for _, m := range members {
				name, hosts, ok := strings.Cut(m, "=")
				if !ok || name == "" || strings.ContainsAny(name, "/. ") {
					return fmt.Errorf("--etcd %q: give NAME=HOST[+HOST...], e.g. etcd1=10.0.0.2", m)
				}
				hs := []string{name}
				for _, h := range strings.Split(hosts, "+") {
					if h != "" {
						hs = append(hs, h)
					}
				}
				ms = append(ms, member{name, hs})
			}
			if validity < time.Hour {
				return fmt.Errorf("--validity %s: give at least 1h", validity)
			}
			ca, err := pki.LoadOrCreateCA(dir)
			if err != nil {
				return err
			}
			if _, err := keyring.Open(filepath.Join(dir, keyring.FileName)); err != nil {
				return err
			}
			etcdDir := filepath.Join(dir, "etcd")
			etcdCA, err := pki.LoadOrCreateCA(etcdDir)
			if err != nil {
				return err
			}
			for _, m := range ms {
				if _, _, err := pki.WriteEtcdMember(etcdCA, etcdDir, m.name, m.hosts, validity); err != nil {
					return fmt.Errorf("etcd member %s: %w", m.name, err)
				}
			}
			if _, _, err := pki.WriteEtcdClient(etcdCA, etcdDir, validity); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "network CA %q and master keys in %s; etcd's CA and certificates in %s\n", ca.Name(), dir, etcdDir)
			for _, m := range ms {
				fmt.Fprintf(e.stdout, "  etcd member %s: --cert %s --key %s --ca %s\n", m.name,
					filepath.Join(etcdDir, m.name+".crt"), filepath.Join(etcdDir, m.name+".key"), filepath.Join(etcdDir, pki.CACertFile))
			}
			fmt.Fprintf(e.stdout, "  pools: --ca-cert %s --ca-key %s --key-file %s --etcd-ca %s --etcd-cert %s --etcd-key %s\n",
				filepath.Join(dir, pki.CACertFile), filepath.Join(dir, pki.CAKeyFile), filepath.Join(dir, keyring.FileName),
				filepath.Join(etcdDir, pki.CACertFile), filepath.Join(etcdDir, "pool.crt"), filepath.Join(etcdDir, "pool.key"))
			fmt.Fprintf(e.stdout, "  workers and clients: --ca %s, and --pool (TASKWORKER_POOL) with every pool replica: POOL1:PORT,POOL2:PORT\n", filepath.Join(dir, pki.CACertFile))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "directory for the network's material (required)")
	f.StringArrayVar(&members, "etcd", nil, "an etcd member: NAME=HOST[+HOST...] (repeat for each)")
	f.DurationVar(&validity, "validity", pki.EtcdLifetime, "lifetime of etcd's certificates")
	return cmd
}

func etcdCommand(e *env) *cobra.Command {
	var (
		m                  etcdserver.Member
		dataDir            string
		cert, key, ca      string
		quota              int64
		tickMs, electionMs uint
	)
	cmd := &cobra.Command{
		Use:   "etcd --name NAME --initial-cluster N1=URL,... --cert F --key F --ca F",
		Short: "Run one member of an etcd cluster for the network's control plane",
		Long: `Run one member of an etcd cluster, for pools that outgrow their embedded etcd
(taskworker pool --etcd-endpoints). It is etcd itself, built into this
binary, locked as the embedded one is: clients and peers over TLS, clients
admitted only with the pools' certificate and peers only with members'
(both from 'taskworker init', signed by etcd's own CA).

Start every member of --initial-cluster; each waits for a quorum. Stop with
SIGTERM. Any etcd 3.5 or later cluster works as well.`,
		Example: `  taskworker etcd --name etcd1 --data-dir /srv/etcd \
    --listen-client https://0.0.0.0:2379 --advertise-client https://10.0.0.2:2379 \
    --listen-peer https://0.0.0.0:2380 --advertise-peer https://10.0.0.2:2380 \
    --initial-cluster etcd1=https://10.0.0.2:2380,etcd2=https://10.0.0.3:2380,etcd3=https://10.0.0.4:2380 \
    --cert net/etcd/etcd1.crt --key net/etcd/etcd1.key --ca net/etcd/ca.crt`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dataDir == "" {
				return errors.New("--data-dir is required: where this member keeps its data")
			}
			m.PeerCN = pki.EtcdMemberCN
			cfg := etcdserver.DefaultConfig(dataDir)
			cfg.Member = &m
			cfg.TLS = &etcdserver.TLS{CertFile: cert, KeyFile: key, TrustedCAFile: ca, AllowedCN: pki.PoolCommonName}
			cfg.QuotaBackendBytes = quota
			cfg.TickMs, cfg.ElectionMs = tickMs, electionMs
			cfg.StartTimeout = 24 * time.Hour // until the others come
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			log := e.logger()
			log.Info("etcd member starting; waiting for a quorum of its cluster", "name", m.Name, "cluster", m.InitialCluster)
			srv, err := etcdserver.Start(ctx, cfg)
			if err != nil {
				return err
			}
			defer srv.Close()
			log.Info("etcd member ready", "name", m.Name, "clients", m.AdvertiseClient)
			select {
			case <-ctx.Done():
				return nil
			case err := <-srv.Err():
				return fmt.Errorf("etcd: %w", err)
			}
		},
	}
	f := cmd.Flags()
	f.StringVar(&m.Name, "name", "", "this member's name, as in --initial-cluster (required)")
	f.StringVar(&dataDir, "data-dir", "", "this member's data directory (required)")
	f.StringVar(&m.ListenClient, "listen-client", "https://127.0.0.1:2379", "where to serve clients")
	f.StringVar(&m.AdvertiseClient, "advertise-client", "https://127.0.0.1:2379", "how clients reach this member")
	f.StringVar(&m.ListenPeer, "listen-peer", "https://127.0.0.1:2380", "where to serve peers")
	f.StringVar(&m.AdvertisePeer, "advertise-peer", "https://127.0.0.1:2380", "how peers reach this member")
	f.StringVar(&m.InitialCluster, "initial-cluster", "", "every member: NAME=PEER_URL,... (required)")
	f.StringVar(&cert, "cert", "", "this member's certificate, from taskworker init (required)")
	f.StringVar(&key, "key", "", "the key of --cert (required)")
	f.StringVar(&ca, "ca", "", "etcd's CA certificate, from taskworker init (required)")
	f.Int64Var(&quota, "quota-bytes", 2<<30, "the database's size limit (etcd's maximum is 8 GiB)")
	f.UintVar(&tickMs, "heartbeat-ms", 100, "heartbeat interval")
	f.UintVar(&electionMs, "election-ms", 1000, "election timeout (at least 5 heartbeats)")
	cmd.AddCommand(etcdSnapshotCommand(e))
	return cmd
}
