package report

import (
	"bytes"
	"fmt"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/autoprune/autoprune/eval"
	"github.com/autoprune/autoprune/prune"
	"github.com/autoprune/autoprune/search"
)

// study is a fixed study: three complete trials that meet the 0.5x target, one over it,
// two stopped early and two failed (one with measurements).
func study() *search.Summary {
	m := func(acc, rel float64) *eval.Metrics {
		return &eval.Metrics{Accuracy: acc, RelLatency: rel, Latency: eval.Latency{Median: time.Duration(rel * 1e6), N: 10, Batch: 1, Threads: 1},
			MACs: int64(rel * 1000), Params: int(rel * 500), Bytes: int64(rel * 2000)}
	}
	s := &search.Summary{
		Study:      "fixed",
		Dense:      *m(0.90, 1),
		Groups:     []prune.Group{{Name: "conv1", Size: 16}, {Name: "conv2", Size: 32}},
		Constraint: search.Constraint{Target: "0.5x"},
		Counts:     map[string]int{"complete": 4, "pruned": 2, "fail": 2},
		Feasible:   3,
		Config:     "[study]\nname = \"fixed\" # <b>not markup</b>\n",
	}
	s.Dense.Latency.Device = eval.Device{OS: "linux", Arch: "amd64", CPU: "Test CPU", Cores: 2}
	s.Trials = []search.TrialResult{
		{Number: 0, State: "complete", Value: 0.85, Metric: m(0.85, 0.50), Plan: prune.Plan{"conv1": 0.5, "conv2": 0.5}},
		{Number: 1, State: "complete", Value: 0.87, Metric: m(0.87, 0.49), Plan: prune.Plan{"conv1": 0.25, "conv2": 0.75}, Pareto: true, Worker: "a:1"},
		{Number: 2, State: "complete", Value: 0.80, Metric: m(0.80, 0.40), Plan: prune.Plan{"conv1": 0.75, "conv2": 0.5}, Pareto: true},
		{Number: 3, State: "complete", Value: 0.88, Metric: m(0.88, 0.60), Miss: "latency 0.600x over the target 0.5x", Pareto: true},
		{Number: 4, State: "pruned", Value: 0.70, Metric: m(0.70, 0.45)},
		{Number: 5, State: "pruned", Value: 0.72, Metric: m(0.72, 0.47)},
		{Number: 6, State: "fail", Metric: m(0.10, 0.50), Error: "numerical trouble"},
		{Number: 7, State: "fail", Error: "out of memory <oops>"},
	}
	s.Best = &s.Trials[1]
	return s
}

func svgOf(t *testing.T, p *plot.Plot) string {
	t.Helper()
	w, err := p.WriterTo(Width, Height, "svg")
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if _, err := w.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// marks counts the SVG elements drawn in colour c.
func marks(svg string, c color.RGBA) int {
	re := regexp.MustCompile(fmt.Sprintf(`(fill|stroke):#%02X%02X%02X[;"]`, c.R, c.G, c.B))
	return len(re.FindAllString(svg, -1))
}

func TestTradeOffHasOneMarkPerTrial(t *testing.T) {
	p, err := TradeOff(study())
	if err != nil {
		t.Fatal(err)
	}
	svg := svgOf(t, p)
	// One mark per trial of each kind, and one more in the legend; a cross is two strokes.
	for _, c := range []struct {
		what string
		c    color.RGBA
		want int
	}{
		{"complete, meets the target", ColorFeasible, 3 + 1},
		{"complete, over the target", ColorOver, 1 + 1},
		{"stopped early", ColorStopped, 2 + 1},
		{"failed, with measurements", ColorFailed, 2 * (1 + 1)},
		{"best ring", ColorBest, 1 + 1},
		{"dense model", ColorDense, 1 + 1},
	} {
		if got := marks(svg, c.c); got != c.want {
			t.Errorf("%s: %d marks, want %d", c.what, got, c.want)
		}
	}
	for _, label := range []string{"complete (3)", "stopped early (2)", "failed (1)", "target 0.5x", "Pareto front"} {
		if !strings.Contains(svg, label) {
			t.Errorf("legend lacks %q", label)
		}
	}
}

func TestHistoryMarksCompleteTrials(t *testing.T) {
	p, err := History(study())
	if err != nil {
		t.Fatal(err)
	}
	svg := svgOf(t, p)
	if got := marks(svg, ColorFeasible); got != 3+1 {
		t.Errorf("%d marks of complete trials, want 3 and the legend's", got)
	}
	if got := marks(svg, ColorOver); got != 1+1 {
		t.Errorf("%d marks of trials over the target, want 1 and the legend's", got)
	}
}

func TestPlanBarsAreTheKeptWidths(t *testing.T) {
	s := study()
	p, err := Plan(s)
	if err != nil || p == nil {
		t.Fatalf("plan: %v, %v", p, err)
	}
	// Trial 1 removes 25 % of conv1's 16 channels and 75 % of conv2's 32.
	ws := s.Widths(s.Best.Plan)
	if len(ws) != 2 || ws[0].Kept != 12 || ws[1].Kept != 8 || ws[0].Size != 16 || ws[1].Size != 32 {
		t.Errorf("widths %+v, want conv1 12 of 16 and conv2 8 of 32", ws)
	}
	svg := svgOf(t, p)
	if got := marks(svg, ColorBest); got != 2+1 {
		t.Errorf("%d kept-width bars, want one per group and the legend's", got)
	}
	s.Best = nil
	if p, err := Plan(s); p != nil || err != nil {
		t.Errorf("a study without a best trial has a plan plot: %v, %v", p, err)
	}
}

func TestWritePlotsDecode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "plots")
	files, err := WritePlots(study(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 6 {
		t.Fatalf("wrote %v, want three plots as PNG and SVG", files)
	}
	wantW, wantH := int(Width.Dots(vgimg.DefaultDPI)+0.5), int(Height.Dots(vgimg.DefaultDPI)+0.5)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		switch filepath.Ext(f) {
		case ".png":
			img, err := png.Decode(bytes.NewReader(b))
			if err != nil {
				t.Errorf("%s: %v", f, err)
				continue
			}
			if r := img.Bounds(); r.Dx() != wantW || r.Dy() != wantH {
				t.Errorf("%s is %dx%d, want %dx%d", f, r.Dx(), r.Dy(), wantW, wantH)
			}
		case ".svg":
			if !bytes.Contains(b, []byte("<svg")) || !bytes.HasSuffix(bytes.TrimSpace(b), []byte("</svg>")) {
				t.Errorf("%s is not a whole SVG document", f)
			}
		}
	}
}

func TestCurves(t *testing.T) {
	p, err := Curves("t", "x", "y", []Series{
		{Name: "tpe", Points: []XY{{X: 0.5, Y: 80}, {X: 0.25, Y: 70}}},
		{Name: "uniform", Points: []XY{{X: 0.3, Y: 72}, {X: 0.6, Y: 82}, {X: 0.2, Y: 60}}, Dashed: true},
		{Name: "empty"},
	})
	if err != nil {
		t.Fatal(err)
	}
	svg := svgOf(t, p)
	for _, name := range []string{"tpe", "uniform"} {
		if !strings.Contains(svg, ">"+name+"<") {
			t.Errorf("legend lacks %s", name)
		}
	}
	if strings.Contains(svg, ">empty<") {
		t.Error("a series without points is in the legend")
	}
	if got := marks(svg, ColorFeasible); got != 1+2+2 {
		t.Errorf("first series: %d elements, want its line, two marks and the legend's line and mark", got)
	}
}

func TestHTMLIsSelfContained(t *testing.T) {
	var b bytes.Buffer
	if err := HTML(&b, study(), Page{Source: "fixed.db"}); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	if n := strings.Count(page, "<svg"); n != 3 {
		t.Errorf("%d inline SVG plots, want 3", n)
	}
	if strings.Contains(page, "<?xml") || strings.Contains(page, "<!DOCTYPE svg") {
		t.Error("an SVG file prolog is left inside the page")
	}
	for _, want := range []string{"<table class=\"trials\">", "<table id=\"plan\">", "Test CPU", "a:1 (1 trials)",
		"latency 0.600x over the target 0.5x", "&lt;b&gt;not markup&lt;/b&gt;", "out of memory &lt;oops&gt;", "fixed.db"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for _, bad := range []string{"<script", "src=\"http", "href=\"http", "<b>not markup"} {
		if strings.Contains(page, bad) {
			t.Errorf("page holds %q", bad)
		}
	}
	if strings.Contains(page, "http-equiv=\"refresh\"") {
		t.Error("a file report reloads itself")
	}
	b.Reset()
	if err := HTML(&b, study(), Page{Refresh: 10 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), `http-equiv="refresh" content="10"`) {
		t.Error("a live page does not reload itself")
	}
}
