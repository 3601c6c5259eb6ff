package benchchart

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// Point is one measurement of one series at one load.
type Point struct {
	// Bench names the chart family: "call" (x is the concurrency) or
	// "files" (x is the file size in bytes).
	Bench string `json:"bench"`
	// Series is the line the point belongs to: "pool", "direct", "push",
	// "get", "dd".
	Series string  `json:"series"`
	X      float64 `json:"x"`
	// Rate is calls/s for "call" and MiB/s for "files".
	Rate float64 `json:"rate"`
	// Latency percentiles, where the bench measures them.
	P50 time.Duration `json:"p50,omitempty"`
	P99 time.Duration `json:"p99,omitempty"`
	// When is the time of the measurement.
	When time.Time `json:"when"`
}

// Append adds points to the record at path, creating it.
func Append(path string, points ...Point) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("open the bench record: %w", err)
	}
	enc := json.NewEncoder(f)
	for _, p := range points {
		if p.When.IsZero() {
			p.When = time.Now().UTC()
		}
		if err := enc.Encode(p); err != nil {
			f.Close()
			return fmt.Errorf("write the bench record %s: %w", path, err)
		}
	}
	return f.Close()
}

// Read parses a record written by Append.
func Read(r io.Reader) ([]Point, error) {
	var points []Point
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var p Point
		if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
			return nil, fmt.Errorf("bench record line %d: %w", line, err)
		}
		if p.Bench == "" || p.Series == "" || p.X <= 0 {
			return nil, fmt.Errorf("bench record line %d: a point needs bench, series and a positive x", line)
		}
		points = append(points, p)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(points) == 0 {
		return nil, errors.New("the bench record holds no points: run `taskworker bench call --record FILE` first")
	}
	return points, nil
}
