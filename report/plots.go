// Package report draws a study: plots of the trade-off a search found (accuracy against
// measured latency, trial by trial), its history and the winning plan, with
// gonum.org/v1/plot as PNG and SVG, and one self-contained HTML page that holds them with
// the tables a person reads: the best trials, the Pareto front, the config, the device.
//
// Everything here reads a search.Summary: nothing writes to a study.
package report

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"sort"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/autoprune/autoprune/objectives"
	"github.com/autoprune/autoprune/search"
)

// The colours of the marks, one per kind, so that a mark in an SVG tells its kind.
var (
	ColorFeasible = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff} // complete, meets the constraint
	ColorOver     = color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff} // complete, misses the constraint
	ColorStopped  = color.RGBA{R: 0x7f, G: 0x7f, B: 0x7f, A: 0xff} // stopped early
	ColorFailed   = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff} // failed
	ColorDense    = color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff} // the dense model
	ColorBest     = color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff} // the best trial, the winning plan
	colorFront    = color.RGBA{A: 0xff}
	colorTarget   = color.RGBA{R: 0xa0, A: 0xff}
	colorDenseBar = color.RGBA{R: 0xc7, G: 0xc7, B: 0xc7, A: 0xff}
)

// Size of every plot, in the files and in the page.
const (
	Width  = 16 * vg.Centimeter
	Height = 10 * vg.Centimeter
)

// TargetRatio is the study's latency target relative to the dense model, 0 when it has
// none (a target in seconds is divided by the dense model's median latency).
func TargetRatio(s *search.Summary) float64 {
	if s.Constraint.Target == "" {
		return 0
	}
	t, err := objectives.ParseTarget(s.Constraint.Target)
	if err != nil {
		return 0
	}
	if t.Rel > 0 {
		return t.Rel
	}
	if s.Dense.Latency.Median > 0 {
		return float64(t.Abs) / float64(s.Dense.Latency.Median)
	}
	return 0
}

// newPlot returns a plot with its title, axis labels and grid, and its legend.
func newPlot(title, xLabel, yLabel string) (*plot.Plot, *legend) {
	p := plot.New()
	p.Title.Text, p.X.Label.Text, p.Y.Label.Text = title, xLabel, yLabel
	p.Add(plotter.NewGrid())
	return p, &legend{p: p}
}

// TradeOff plots validation accuracy against latency relative to the dense model, one
// mark per trial with measurements: complete trials that meet the constraint, complete
// trials over it, trials stopped early and failed trials each drawn their own way; the
// Pareto front as a line; the dense model and the target marked; the best trial ringed.
func TradeOff(s *search.Summary) (*plot.Plot, error) {
	p, legend := newPlot(fmt.Sprintf("study %s: accuracy against measured latency", s.Study),
		"latency relative to the dense model", "validation accuracy %")

	var feasible, over, stopped, failed plotter.XYs
	for _, t := range s.Trials {
		if t.Metric == nil || !(t.Metric.RelLatency > 0) {
			continue
		}
		pt := plotter.XY{X: t.Metric.RelLatency, Y: 100 * t.Metric.Accuracy}
		switch {
		case t.State == "complete" && t.Miss == "":
			feasible = append(feasible, pt)
		case t.State == "complete":
			over = append(over, pt)
		case t.State == "pruned":
			stopped = append(stopped, pt)
		case t.State == "fail":
			failed = append(failed, pt)
		}
	}
	front := s.Front()
	if len(front) > 1 {
		xy := make(plotter.XYs, len(front))
		for i, t := range front {
			xy[i] = plotter.XY{X: t.Metric.RelLatency, Y: 100 * t.Metric.Accuracy}
		}
		l, err := plotter.NewLine(xy)
		if err != nil {
			return nil, err
		}
		l.Color, l.Width = colorFront, vg.Points(1)
		p.Add(l)
		legend.add("Pareto front", l)
	}
	for _, g := range []struct {
		xy     plotter.XYs
		label  string
		c      color.Color
		shape  draw.GlyphDrawer
		radius vg.Length
	}{
		{stopped, "stopped early", ColorStopped, draw.RingGlyph{}, vg.Points(3)},
		{failed, "failed", ColorFailed, draw.CrossGlyph{}, vg.Points(3)},
		{over, "complete, over the target", ColorOver, draw.CircleGlyph{}, vg.Points(3)},
		{feasible, "complete", ColorFeasible, draw.CircleGlyph{}, vg.Points(3)},
	} {
		if err := legend.scatter(g.xy, fmt.Sprintf("%s (%d)", g.label, len(g.xy)), g.c, g.shape, g.radius); err != nil {
			return nil, err
		}
	}
	if s.Best != nil {
		if err := legend.scatter(plotter.XYs{{X: s.Best.Metric.RelLatency, Y: 100 * s.Best.Metric.Accuracy}},
			fmt.Sprintf("best, trial %d", s.Best.Number), ColorBest, draw.RingGlyph{}, vg.Points(6)); err != nil {
			return nil, err
		}
	}
	if err := legend.scatter(plotter.XYs{{X: 1, Y: 100 * s.Dense.Accuracy}}, "dense model", ColorDense, draw.TriangleGlyph{}, vg.Points(4)); err != nil {
		return nil, err
	}
	var target *plotter.Line
	if r := TargetRatio(s); r > 0 {
		// Drawn from the bottom of the plot to its top, once the legend has made its room.
		l, err := plotter.NewLine(plotter.XYs{{X: r, Y: p.Y.Min}, {X: r, Y: p.Y.Max}})
		if err != nil {
			return nil, err
		}
		l.Color, l.Width, l.Dashes = colorTarget, vg.Points(1), []vg.Length{vg.Points(4), vg.Points(3)}
		p.Add(l)
		legend.add("target "+s.Constraint.Target, l)
		target = l
	}
	legend.below()
	if target != nil {
		target.XYs[0].Y, target.XYs[1].Y = p.Y.Min, p.Y.Max
	}
	p.X.Min, p.X.Max = math.Max(0, p.X.Min-0.03), p.X.Max+0.03
	return p, nil
}

// legend counts the entries it adds to its plot's legend.
type legend struct {
	p *plot.Plot
	n int
}

func (l *legend) add(label string, th ...plot.Thumbnailer) {
	l.p.Legend.Add(label, th...)
	l.n++
}

// scatter adds the points xy, drawn with one glyph, to the plot and the legend; no points
// add nothing.
func (l *legend) scatter(xy plotter.XYs, label string, c color.Color, shape draw.GlyphDrawer, radius vg.Length) error {
	if len(xy) == 0 {
		return nil
	}
	sc, err := plotter.NewScatter(xy)
	if err != nil {
		return err
	}
	sc.GlyphStyle = draw.GlyphStyle{Color: c, Shape: shape, Radius: radius}
	l.p.Add(sc)
	l.add(label, sc)
	return nil
}

// below makes room under the data for the legend in the bottom right corner, and a little
// above the data, so that no mark sits under the legend or on the frame.
func (l *legend) below() {
	p, n := l.p, l.n
	span := p.Y.Max - p.Y.Min
	if span <= 0 {
		span = math.Max(math.Abs(p.Y.Max)*0.1, 1)
	}
	p.Y.Min -= span * (0.04 + 0.075*float64(n))
	p.Y.Max += span * 0.05
	p.Legend.Top, p.Legend.Left = false, false
	p.Legend.YPosition = draw.PosBottom
}

// History plots the score of every complete trial in trial order and the best score so far
// among the trials that meet the constraint.
func History(s *search.Summary) (*plot.Plot, error) {
	p, legend := newPlot(fmt.Sprintf("study %s: optimisation history", s.Study), "trial", "score")
	var scores, over, best plotter.XYs
	bestSoFar := math.Inf(-1)
	for _, t := range s.Trials {
		if t.State != "complete" || t.Metric == nil {
			continue
		}
		pt := plotter.XY{X: float64(t.Number), Y: t.Value}
		if t.Miss != "" {
			over = append(over, pt)
			continue
		}
		scores = append(scores, pt)
		bestSoFar = math.Max(bestSoFar, t.Value)
		best = append(best, plotter.XY{X: float64(t.Number), Y: bestSoFar})
	}
	if len(best) > 0 {
		last := float64(best[len(best)-1].X)
		for _, t := range s.Trials {
			last = math.Max(last, float64(t.Number))
		}
		best = append(best, plotter.XY{X: last, Y: bestSoFar})
		st, err := plotter.NewLine(best)
		if err != nil {
			return nil, err
		}
		st.StepStyle, st.Color, st.Width = plotter.PostStep, ColorBest, vg.Points(1.5)
		p.Add(st)
		legend.add("best that meets the constraint, so far", st)
	}
	for _, g := range []struct {
		xy    plotter.XYs
		label string
		c     color.Color
	}{{over, "complete, over the target", ColorOver}, {scores, "complete", ColorFeasible}} {
		if err := legend.scatter(g.xy, fmt.Sprintf("%s (%d)", g.label, len(g.xy)), g.c, draw.CircleGlyph{}, vg.Points(3)); err != nil {
			return nil, err
		}
	}
	legend.below()
	p.X.Min, p.X.Max = p.X.Min-0.5, p.X.Max+0.5
	return p, nil
}

// Plan plots the best trial's plan as channels kept per group beside the dense model's,
// in layer order; nil when the study has no best trial yet.
func Plan(s *search.Summary) (*plot.Plot, error) {
	if s.Best == nil || len(s.Groups) == 0 {
		return nil, nil
	}
	ws := s.Widths(s.Best.Plan)
	dense, kept := make(plotter.Values, len(ws)), make(plotter.Values, len(ws))
	names := make([]string, len(ws))
	for i, w := range ws {
		dense[i], kept[i], names[i] = float64(w.Size), float64(w.Kept), w.Group
	}
	p := plot.New()
	legend := &legend{p: p}
	p.Title.Text = fmt.Sprintf("study %s: channels kept by trial %d", s.Study, s.Best.Number)
	p.Y.Label.Text = "channels"
	w := vg.Points(math.Max(3, math.Min(40, 0.35*380/float64(len(ws)))))
	bd, err := plotter.NewBarChart(dense, w)
	if err != nil {
		return nil, err
	}
	bd.Color, bd.LineStyle.Width, bd.Offset = colorDenseBar, 0, -w/2
	bk, err := plotter.NewBarChart(kept, w)
	if err != nil {
		return nil, err
	}
	bk.Color, bk.LineStyle.Width, bk.Offset = ColorBest, 0, w/2
	p.Add(bd, bk)
	legend.add("dense", bd)
	legend.add(fmt.Sprintf("trial %d", s.Best.Number), bk)
	p.Legend.Top = true
	p.NominalX(names...)
	p.X.Min, p.X.Max = -0.6, float64(len(ws))-0.4
	p.Y.Min, p.Y.Max = 0, p.Y.Max*1.15
	if len(names) > 6 {
		p.X.Tick.Label.Rotation = math.Pi / 4
		p.X.Tick.Label.XAlign, p.X.Tick.Label.YAlign = draw.XRight, draw.YCenter
	}
	return p, nil
}

// XY is one point of a Series.
type XY = plotter.XY

// Series is one named curve of Curves.
type Series struct {
	Name   string
	Points []XY
	// Dashed draws the line dashed (a baseline).
	Dashed bool
}

// Curves plots named curves, each sorted by x, with a mark per point.
func Curves(title, xLabel, yLabel string, series []Series) (*plot.Plot, error) {
	p, legend := newPlot(title, xLabel, yLabel)
	for i, s := range series {
		if len(s.Points) == 0 {
			continue
		}
		xy := append(plotter.XYs(nil), s.Points...)
		sort.Slice(xy, func(a, b int) bool { return xy[a].X < xy[b].X })
		l, pts, err := plotter.NewLinePoints(xy)
		if err != nil {
			return nil, err
		}
		c := palette[i%len(palette)]
		l.Color, pts.Color, pts.Shape = c, c, shapes[i%len(shapes)]
		if s.Dashed {
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		}
		p.Add(l, pts)
		legend.add(s.Name, l, pts)
	}
	legend.below()
	return p, nil
}

var (
	palette = []color.Color{ColorFeasible, ColorOver, ColorDense, ColorFailed, ColorBest,
		color.RGBA{R: 0x8c, G: 0x56, B: 0x4b, A: 0xff}, color.RGBA{R: 0xe3, G: 0x77, B: 0xc2, A: 0xff},
		ColorStopped, color.RGBA{R: 0xbc, G: 0xbd, B: 0x22, A: 0xff}, color.RGBA{R: 0x17, G: 0xbe, B: 0xcf, A: 0xff}}
	shapes = []draw.GlyphDrawer{draw.CircleGlyph{}, draw.SquareGlyph{}, draw.TriangleGlyph{},
		draw.CrossGlyph{}, draw.PlusGlyph{}, draw.RingGlyph{}, draw.BoxGlyph{}, draw.PyramidGlyph{}}
)

// Save writes p as DIR/NAME.png and DIR/NAME.svg, Width by Height, and returns the paths.
func Save(p *plot.Plot, dir, name string) ([]string, error) {
	var out []string
	for _, ext := range []string{".png", ".svg"} {
		path := filepath.Join(dir, name+ext)
		if err := p.Save(Width, Height, path); err != nil {
			return out, fmt.Errorf("writing plot %s: %w", path, err)
		}
		out = append(out, path)
	}
	return out, nil
}

// WritePlots writes the study's plots into dir (made if missing): tradeoff, history and,
// once there is a best trial, plan; as PNG and SVG. It returns the files written.
func WritePlots(s *search.Summary, dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("plots folder: %w", err)
	}
	var out []string
	for _, d := range drawings {
		p, err := d.draw(s)
		if err != nil {
			return out, fmt.Errorf("plot %s: %w", d.name, err)
		}
		if p == nil {
			continue
		}
		files, err := Save(p, dir, d.name)
		out = append(out, files...)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

type drawing struct {
	name string
	draw func(*search.Summary) (*plot.Plot, error)
}

// drawings are the plots of a study, in the order a report shows them.
var drawings = []drawing{{"tradeoff", TradeOff}, {"history", History}, {"plan", Plan}}
