package benchchart

import (
	"bytes"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRecordAndDraw(t *testing.T) {
	dir := t.TempDir()
	record := filepath.Join(dir, "record.jsonl")
	for _, c := range []int{1, 4, 16, 64} {
		err := Append(record,
			Point{Bench: "call", Series: "pool", X: float64(c), Rate: 1000 * float64(c), P50: time.Duration(c) * time.Millisecond, P99: 2 * time.Duration(c) * time.Millisecond},
			Point{Bench: "call", Series: "direct", X: float64(c), Rate: 1500 * float64(c), P50: time.Millisecond, P99: 3 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, size := range []float64{1 << 20, 64 << 20} {
		if err := Append(record, Point{Bench: "files", Series: "push", X: size, Rate: 200}, Point{Bench: "files", Series: "dd", X: size, Rate: 300}); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open(record)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	points, err := Read(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(points) != 12 {
		t.Fatalf("read %d points, want 12", len(points))
	}
	out := filepath.Join(dir, "charts")
	written, err := Draw(points, out)
	if err != nil {
		t.Fatal(err)
	}
	if len(written) != 3 {
		t.Fatalf("wrote %v, want the three charts", written)
	}
	for _, path := range written {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s is not a PNG: %v", path, err)
		}
		if r := img.Bounds(); r.Dx() < 300 || r.Dy() < 200 {
			t.Errorf("%s is %v, too small to read", path, r)
		}
	}
}

func TestReadRejects(t *testing.T) {
	for _, tc := range []struct{ name, record, want string }{
		{"empty", "", "no points"},
		{"not JSON", "{", "line 1"},
		{"no bench", `{"series":"pool","x":1}`, "needs bench"},
		{"zero x", `{"bench":"call","series":"pool","x":0}`, "positive x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Read(strings.NewReader(tc.record))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Read = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestDrawNeedsAChartsBench(t *testing.T) {
	if _, err := Draw([]Point{{Bench: "other", Series: "x", X: 1, Rate: 1}}, t.TempDir()); err == nil {
		t.Fatal("Draw of points of no chart succeeded")
	}
}
