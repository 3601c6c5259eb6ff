package pool

import clientv3 "go.etcd.io/etcd/client/v3"

// MaxConcurrentStreams is the pool's limit of streams on one connection.
const MaxConcurrentStreams = maxConcurrentStreams

// EtcdClientForTest is the pool's own etcd client.
func (s *Server) EtcdClientForTest() *clientv3.Client { return s.cli }
