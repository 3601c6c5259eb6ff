package files_test

import (
	"context"
	"io"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/cluster"
	"github.com/hivemind/taskworker/internal/files"
)

// BenchmarkPushSmall pushes 1 KiB files through a pool to six in-process
// workers (4+2), 16 at a time, and reports the etcd transactions (Txn
// requests etcd served) and WAL fsyncs per push.
func BenchmarkPushSmall(b *testing.B) {
	c := cluster.New(b, cluster.Options{Workers: 6})
	cl := c.Client(0)
	data := make([]byte, 1024)
	b.SetParallelism(8)
	txns, fsyncs := etcdCounter(b, "grpc_server_handled_total", "grpc_method", "Txn"), etcdCounter(b, "etcd_disk_wal_fsync_duration_seconds", "", "")
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := cl.Push(context.Background(), "small", data); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(txns()/float64(b.N), "etcd-txns/op")
	b.ReportMetric(fsyncs()/float64(b.N), "wal-fsyncs/op")
}

// etcdCounter returns a function that tells how much the in-process etcd's
// metric name (a counter, or a histogram's count), restricted to the label
// given, has grown since etcdCounter was called.
func etcdCounter(b *testing.B, name, label, value string) func() float64 {
	read := func() float64 {
		mfs, err := prometheus.DefaultGatherer.Gather()
		if err != nil {
			b.Fatal(err)
		}
		var total float64
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, m := range mf.GetMetric() {
				if label != "" && !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == label && l.GetValue() == value }) {
					continue
				}
				total += m.GetCounter().GetValue() + float64(m.GetHistogram().GetSampleCount())
			}
		}
		return total
	}
	start := read()
	return func() float64 { return read() - start }
}

// largeCluster is six in-process workers (4+2) behind a pool with the
// pool's own file configuration (8 MiB blocks).
func largeCluster(b *testing.B) *cluster.Cluster {
	cfg := files.DefaultConfig("")
	cfg.RepairGrace = 0
	return cluster.New(b, cluster.Options{Workers: 6, Files: &cfg})
}

// benchFileBytes is the size of the file the large benchmarks move.
const benchFileBytes = 256 << 20

// randomReader yields n bytes that neither compress nor repeat within a
// block.
func randomReader(n int64) io.Reader {
	return io.LimitReader(rand.NewChaCha8([32]byte{1}), n)
}

// BenchmarkUploadLarge uploads a 256 MiB file through the pool: sealing,
// hashing, coding and six workers' disks, on the machine's cores.
func BenchmarkUploadLarge(b *testing.B) {
	c := largeCluster(b)
	cl := c.Client(0)
	b.SetBytes(benchFileBytes)
	b.ResetTimer()
	for range b.N {
		if _, err := cl.Upload(context.Background(), "large", randomReader(benchFileBytes)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDownloadLarge downloads a 256 MiB file through the pool.
func BenchmarkDownloadLarge(b *testing.B) {
	c := largeCluster(b)
	cl := c.Client(0)
	info, err := cl.Upload(context.Background(), "large", randomReader(benchFileBytes))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(benchFileBytes)
	b.ResetTimer()
	for range b.N {
		if _, err := cl.Download(context.Background(), info.FileId, 0, io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRepair uploads a 256 MiB file to seven in-process workers (4+2,
// 8 MiB blocks), kills one, and times the repair from the first shard
// rebuilt to every file back at full redundancy; it reports seconds per
// GiB rebuilt. (The wait for the lease to expire is not counted.)
func BenchmarkRepair(b *testing.B) {
	for range b.N {
		b.StopTimer()
		cfg := files.DefaultConfig("")
		cfg.RepairGrace = 0
		c := cluster.New(b, cluster.Options{Workers: 7, Files: &cfg})
		cl := c.Client(0)
		ctx := context.Background()
		if _, err := cl.Upload(ctx, "large", randomReader(benchFileBytes)); err != nil {
			b.Fatal(err)
		}
		status := func() *v1.StatusResponse {
			st, err := v1.NewAdminServiceClient(cl.Conn()).Status(ctx, &v1.StatusRequest{})
			if err != nil {
				b.Fatal(err)
			}
			return st
		}
		c.KillWorker(3)
		b.StartTimer()
		var start time.Time
		deadline := time.Now().Add(5 * time.Minute)
		for {
			st := status()
			if start.IsZero() && st.BytesRebuilt > 0 {
				start = time.Now()
			}
			if st.Workers == 6 && st.FilesFull == 1 && st.RepairsPending == 0 && st.BytesRebuilt > 0 {
				took := time.Since(start)
				b.ReportMetric(took.Seconds()/(float64(st.BytesRebuilt)/(1<<30)), "s/GiB")
				b.ReportMetric(float64(st.BytesRebuilt)/(1<<20), "MiB-rebuilt")
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("no full redundancy after 5 minutes: %+v", st)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
