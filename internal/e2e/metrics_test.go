package e2e

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// scrape reads one sample of a pool's /metrics: the value of the series
// whose text starts with series (name and labels as Prometheus prints
// them), or -1 when there is none.
func scrape(t *testing.T, url, series string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` ([0-9.e+-]+)$`)
	m := re.FindSubmatch(b)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// A pool's /metrics, scraped while it works: calls, pushes, the workers, and
// a repair after a worker is killed move their series (seven workers: a
// 4+2 file keeps a free one to rebuild on).
func TestPoolMetricsMove(t *testing.T) {
	metricsAddr := freeAddr(t)
	n := &network{t: t, dir: t.TempDir(), poolAddr: freeAddr(t), poolArgs: []string{"--metrics-listen", metricsAddr}}
	n.startPool()
	for i := range 7 {
		n.workers = append(n.workers, n.startWorker(fmt.Sprintf("worker_%03d", i+1)))
	}
	n.waitWorkers(7, 30*time.Second)
	url := "http://" + metricsAddr + "/metrics"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := n.client()
	for range 5 {
		if _, err := c.CallJSON(ctx, "add", []byte("[1, 2]")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.CallJSON(ctx, "no_such_function_a8f3", []byte("[]")); err == nil {
		t.Fatal("a call of a function nobody serves succeeded")
	}
	if _, err := c.Push(ctx, "metrics.bin", randomBytes(256<<10)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		series  string
		atLeast float64
	}{
		{`taskworker_calls_total{code="OK",function="add"}`, 5},
		{`taskworker_calls_total{code="NotFound",function="-"}`, 1},
		{`taskworker_call_duration_seconds_count{function="add"}`, 5},
		{`taskworker_grpc_requests_total{code="OK",method="/taskworker.v1.FileService/Push"}`, 1},
	} {
		if v := scrape(t, url, tc.series); v < tc.atLeast {
			t.Errorf("%s = %v, want at least %v", tc.series, v, tc.atLeast)
		}
	}
	if b := scrapeAll(t, url); strings.Contains(b, "no_such_function_a8f3") {
		t.Error("a name a caller typed became a label")
	}
	waitSeries := func(series string, ok func(float64) bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			v := scrape(t, url, series)
			if ok(v) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s = %v", series, v)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	waitSeries("taskworker_workers", func(v float64) bool { return v == 7 })
	waitSeries(`taskworker_files{redundancy="full"}`, func(v float64) bool { return v >= 1 })
	// Kill a worker that holds a shard of the file.
	victim := -1
	for i := range n.workers {
		// The store's shard files (its directory also holds its LOCK).
		root := filepath.Join(n.dir, "workers", fmt.Sprintf("worker_%03d", i+1), "shards", "shards")
		_ = filepath.WalkDir(root, func(_ string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && victim < 0 {
				victim = i
			}
			return nil
		})
	}
	if victim < 0 {
		t.Fatal("no worker holds a shard")
	}
	n.workers[victim].Kill()
	waitSeries("taskworker_workers", func(v float64) bool { return v == 6 })
	waitSeries("taskworker_repaired_shards_total", func(v float64) bool { return v >= 1 })
}

func scrapeAll(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
