package erasure

import (
	"errors"
	"fmt"
	"testing"
)

func TestLayoutFor(t *testing.T) {
	for _, tc := range []struct {
		workers   int
		want      string
		tolerates int
	}{
		{1, "1+0", 0}, {2, "1+1", 1}, {3, "2+1", 1}, {4, "2+2", 2}, {5, "3+2", 2}, {6, "4+2", 2}, {100, "4+2", 2},
	} {
		t.Run(fmt.Sprint(tc.workers), func(t *testing.T) {
			l, err := LayoutFor(tc.workers)
			if err != nil {
				t.Fatal(err)
			}
			if l.String() != tc.want || l.Tolerates() != tc.tolerates {
				t.Fatalf("got %s tolerating %d, want %s tolerating %d", l, l.Tolerates(), tc.want, tc.tolerates)
			}
			if l.Shards() > tc.workers {
				t.Fatalf("%s needs %d workers, only %d exist", l, l.Shards(), tc.workers)
			}
			if tc.workers >= 2 && l.Tolerates() < 1 {
				t.Fatal("less than two copies' worth of safety with two or more workers")
			}
			if l.Overhead() > 2 {
				t.Fatalf("overhead %.2f above two copies", l.Overhead())
			}
		})
	}
	for _, n := range []int{0, -1} {
		if _, err := LayoutFor(n); !errors.Is(err, ErrLayout) {
			t.Fatalf("LayoutFor(%d) = %v, want ErrLayout", n, err)
		}
	}
}

func TestParseLayout(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Layout
		ok   bool
	}{
		{"4+2", Layout{4, 2}, true},
		{"1+0", Layout{1, 0}, true},
		{"10+4", Layout{10, 4}, true},
		{"128+128", Layout{128, 128}, true},
		{"200+57", Layout{}, false},
		{"0+2", Layout{}, false},
		{"4", Layout{}, false},
		{"4+", Layout{}, false},
		{"+2", Layout{}, false},
		{"4+-2", Layout{}, false},
		{"+4+2", Layout{}, false},
		{" 4+2", Layout{}, false},
		{"4+2+1", Layout{}, false},
		{"0004+2", Layout{}, false},
		{"", Layout{}, false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseLayout(tc.in)
			if (err == nil) != tc.ok || got != tc.want {
				t.Fatalf("got %v, %v; want %v, ok=%v", got, err, tc.want, tc.ok)
			}
		})
	}
}

func FuzzParseLayout(f *testing.F) {
	for _, s := range []string{"4+2", "1+0", "", "+", "256+0", "-1+2", "4+2+", "99999999999999999999+1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLayout(s)
		if err != nil {
			return
		}
		if err := l.Validate(); err != nil {
			t.Fatalf("ParseLayout(%q) returned invalid %v: %v", s, l, err)
		}
		if l.String() != s {
			t.Fatalf("ParseLayout(%q).String() = %q", s, l.String())
		}
	})
}

func ExampleLayoutFor() {
	for _, n := range []int{1, 2, 3, 4, 5, 6, 12} {
		l, _ := LayoutFor(n)
		fmt.Printf("%2d workers: %s, survives %d lost, stores %.2fx\n", n, l, l.Tolerates(), l.Overhead())
	}
	// Output:
	//  1 workers: 1+0, survives 0 lost, stores 1.00x
	//  2 workers: 1+1, survives 1 lost, stores 2.00x
	//  3 workers: 2+1, survives 1 lost, stores 1.50x
	//  4 workers: 2+2, survives 2 lost, stores 2.00x
	//  5 workers: 3+2, survives 2 lost, stores 1.67x
	//  6 workers: 4+2, survives 2 lost, stores 1.50x
	// 12 workers: 4+2, survives 2 lost, stores 1.50x
}
