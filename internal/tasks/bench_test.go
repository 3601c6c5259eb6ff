package tasks_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	v1 "github.com/hivemind/taskworker/api/taskworker/v1"
	"github.com/hivemind/taskworker/internal/tasks"
)

// requests counts a client's etcd requests by method; watch events are
// not requests and are not counted.
type requests struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *requests) interceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	r.mu.Lock()
	r.n[method]++
	r.mu.Unlock()
	return invoker(ctx, method, req, reply, cc, opts...)
}

func (r *requests) count(method string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[method]
}

func (r *requests) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.n {
		n += c
	}
	return n
}

// cpuTime is the CPU time this process (etcd included) has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func countingClient(tb testing.TB, endpoints []string) (*clientv3.Client, *requests) {
	tb.Helper()
	r := &requests{n: map[string]int{}}
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(r.interceptor)}})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cli.Close() })
	return cli, r
}

// BenchmarkSubmitToResult submits trivial tasks and waits for each, at
// several concurrencies, through one store and one runner over a real
// etcd: the etcd side of `taskworker bench tasks` without the pool's RPCs.
// It reports tasks/s and the etcd requests (transactions and reads, of
// submitters and runner together) per task.
func BenchmarkSubmitToResult(b *testing.B) {
	endpoints := startEtcd(b)
	cli, reqs := countingClient(b, endpoints)
	s := tasks.NewStore(cli, config("p1"))
	runnerOn(b, s, echo)
	for _, conc := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			var next atomic.Int64
			before, cpu := reqs.total(), cpuTime()
			b.ResetTimer()
			var wg sync.WaitGroup
			for range conc {
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						task := submit(b, s, "bob", &v1.SubmitRequest{FunctionName: "f"})
						if got := wait(b, s, "bob", task.Id); got.State != v1.TaskState_TASK_STATE_SUCCEEDED {
							b.Errorf("task %s ended %v", task.Id, got.State)
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
			b.ReportMetric(float64(reqs.total()-before)/float64(b.N), "etcd-requests/task")
			b.ReportMetric(float64((cpuTime()-cpu).Microseconds())/float64(b.N), "cpu-µs/task")
		})
	}
}

// BenchmarkEtcdPut is the baseline of the machine's etcd: single-key puts
// at several concurrencies, each its own transaction.
func BenchmarkEtcdPut(b *testing.B) {
	cli := client(b, startEtcd(b))
	for _, conc := range []int{1, 32} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			var next atomic.Int64
			var wg sync.WaitGroup
			for range conc {
				wg.Go(func() {
					for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
						if _, err := cli.Put(context.Background(), fmt.Sprintf("/bench/%d", i%1000), "x"); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "puts/s")
		})
	}
}
