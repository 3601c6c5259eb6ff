package benchchart

import (
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// A chart is one PNG: a value of the points of one bench against x, a line
// per series.
type chart struct {
	file, title, xLabel, yLabel string
	bench                       string
	// lines picks, for each series, the lines it draws: a name and a value.
	lines func(p Point) []line
	xTick func(x float64) string
}

type line struct {
	name  string
	value float64
}

var charts = []chart{
	{
		file: "call-throughput.png", title: "Calls/s against concurrency", bench: "call",
		xLabel: "concurrent callers", yLabel: "calls/s",
		lines: func(p Point) []line { return []line{{p.Series, p.Rate}} },
		xTick: func(x float64) string { return strconv.FormatFloat(x, 'f', -1, 64) },
	},
	{
		file: "call-latency.png", title: "Call latency against concurrency", bench: "call",
		xLabel: "concurrent callers", yLabel: "milliseconds",
		lines: func(p Point) []line {
			return []line{{p.Series + " p50", ms(p.P50)}, {p.Series + " p99", ms(p.P99)}}
		},
		xTick: func(x float64) string { return strconv.FormatFloat(x, 'f', -1, 64) },
	},
	{
		file: "files-throughput.png", title: "File throughput against size", bench: "files",
		xLabel: "file size", yLabel: "MiB/s",
		lines: func(p Point) []line { return []line{{p.Series, p.Rate}} },
		xTick: sizeLabel,
	},
}

// Draw writes a PNG per chart that has points into dir and returns the files
// written.
func Draw(points []Point, dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var written []string
	for _, c := range charts {
		series := map[string]map[float64]float64{}
		var xs []float64
		for _, p := range points {
			if p.Bench != c.bench {
				continue
			}
			if !slices.Contains(xs, p.X) {
				xs = append(xs, p.X)
			}
			for _, l := range c.lines(p) {
				if l.value <= 0 {
					continue
				}
				if series[l.name] == nil {
					series[l.name] = map[float64]float64{}
				}
				series[l.name][p.X] = l.value
			}
		}
		if len(series) == 0 {
			continue
		}
		slices.Sort(xs)
		path := filepath.Join(dir, c.file)
		if err := c.draw(series, xs, path); err != nil {
			return written, fmt.Errorf("draw %s: %w", c.file, err)
		}
		written = append(written, path)
	}
	if len(written) == 0 {
		return nil, fmt.Errorf("no point in the record belongs to a chart (benches: call, files)")
	}
	return written, nil
}

var palette = []color.Color{
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
	color.RGBA{R: 0x8c, G: 0x56, B: 0x4b, A: 0xff},
}

func (c chart) draw(series map[string]map[float64]float64, xs []float64, path string) error {
	p := plot.New()
	p.Title.Text = c.title
	p.X.Label.Text = c.xLabel
	p.Y.Label.Text = c.yLabel
	// Load grows geometrically in a sweep: a log x axis spaces the points
	// evenly, with a tick at each measured x.
	p.X.Scale = plot.LogScale{}
	ticks := make([]plot.Tick, len(xs))
	for i, x := range xs {
		ticks[i] = plot.Tick{Value: x, Label: c.xTick(x)}
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	p.X.Min, p.X.Max = xs[0]/1.25, xs[len(xs)-1]*1.25
	p.Y.Min = 0
	p.Add(plotter.NewGrid())
	p.Legend.Top, p.Legend.Left = true, true
	p.Legend.XOffs, p.Legend.YOffs = vg.Points(8), -vg.Points(4)
	names := make([]string, 0, len(series))
	for name := range series {
		names = append(names, name)
	}
	slices.Sort(names)
	for i, name := range names {
		var xys plotter.XYs
		for _, x := range xs {
			if v, ok := series[name][x]; ok {
				xys = append(xys, plotter.XY{X: x, Y: v})
			}
		}
		l, s, err := plotter.NewLinePoints(xys)
		if err != nil {
			return err
		}
		col := palette[i%len(palette)]
		if base, ok := strings.CutSuffix(name, " p99"); ok {
			// A p99 line takes its p50's colour, dashed.
			if j := slices.Index(names, base+" p50"); j >= 0 {
				col = palette[j%len(palette)]
			}
			l.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
		}
		l.Color, s.Color = col, col
		s.Shape = draw.CircleGlyph{}
		p.Add(l, s)
		p.Legend.Add(name, l, s)
	}
	return p.Save(7*vg.Inch, 4.5*vg.Inch, path)
}

func ms(d interface{ Seconds() float64 }) float64 { return d.Seconds() * 1000 }

func sizeLabel(x float64) string {
	for _, u := range []struct {
		name string
		size float64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if x >= u.size {
			return strconv.FormatFloat(x/u.size, 'f', -1, 64) + " " + u.name
		}
	}
	return strconv.FormatFloat(x, 'f', -1, 64) + " B"
}
