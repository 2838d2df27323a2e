package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/autoprune/autoprune/config"
	"github.com/autoprune/autoprune/objectives"
	"github.com/autoprune/autoprune/search"
)

func init() {
	register(&command{name: "compare", summary: "compare samplers (TPE, CMA-ES, random) and uniform pruning on one config", run: runCompare})
}

// compareRow is one study of a comparison.
type compareRow struct {
	Method   string   `json:"method"` // sampler name, or "uniform"
	Seed     int64    `json:"seed"`
	Study    string   `json:"study"`
	Best     optFloat `json:"best_objective"`
	AccAtTgt optFloat `json:"val_acc_at_target"` // best validation accuracy with relative latency <= target (NaN: none)
	RelAtTgt optFloat `json:"rel_latency_of_that"`
	Trials   int      `json:"finished_trials"`
	Wall     float64  `json:"wall_s"`
}

// optFloat is a number that may be missing (NaN), written as null in JSON.
type optFloat float64

// MarshalJSON writes NaN as null.
func (f optFloat) MarshalJSON() ([]byte, error) {
	if math.IsNaN(float64(f)) {
		return []byte("null"), nil
	}
	return json.Marshal(float64(f))
}

// comparison is the outcome of a comparison: one row per study, and the uniform baseline's
// validation accuracy interpolated to the latency target (NaN when its plans do not
// bracket the target).
type comparison struct {
	Target        float64      `json:"target"`
	UniformAtTgt  optFloat     `json:"uniform_val_acc_interpolated_at_target"`
	UniformPoints [][2]float64 `json:"uniform_points"` // (relative latency, validation accuracy)
	Rows          []compareRow `json:"rows"`
}

func runCompare(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("compare", "compare CONFIG.toml [flags]", `
Runs the same study with several samplers and seeds, plus a uniform-pruning baseline (the
same ratio for every group, fine-tuned the same way), and prints the best objective and the
best validation accuracy at the latency target for each. All studies go into one database
beside the config (NAME-compare.db), so an interrupted comparison resumes where it stopped.
Warm starts are switched off so every sampler starts from scratch.

The latency target is the config's objective.target, relative to the dense model (e.g. 0.5x).

Examples:
  autoprune compare configs/fashion-compare.toml --seeds 1,2,3      # about 30 min on 2 cores
  autoprune compare configs/mobile.toml --samplers tpe,random --seeds 1 --json cmp.json`, stderr)
	samplers := fs.String("samplers", "tpe,cmaes,random", "comma-separated samplers")
	seedList := fs.String("seeds", "1,2,3", "comma-separated seeds")
	uniform := fs.String("uniform", "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8", "uniform ratios of the baseline (empty: none)")
	trials := fs.Int("trials", 0, "trials per study (default: the config's)")
	jsonOut := fs.String("json", "", "also write the rows as JSON to this file")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return usagef("compare: want exactly one config file, got %d arguments", len(pos))
	}
	base, err := config.Load(pos[0])
	if err != nil {
		return asUsage(err)
	}
	target, err := relTarget(base.Objective.Target)
	if err != nil {
		return asUsage(fmt.Errorf("compare: %s: objective.target: %w", pos[0], err))
	}
	var seeds []int64
	for _, f := range strings.Split(*seedList, ",") {
		v, err := strconv.ParseInt(strings.TrimSpace(f), 10, 64)
		if err != nil {
			return usagef("compare: --seeds: %q is not an integer", f)
		}
		seeds = append(seeds, v)
	}
	var ratios []float64
	if strings.TrimSpace(*uniform) != "" {
		for _, f := range strings.Split(*uniform, ",") {
			v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
			if err != nil || !(v >= 0 && v < 1) {
				return usagef("compare: --uniform: %q is not a ratio in [0, 1)", f)
			}
			ratios = append(ratios, v)
		}
	}
	methods := strings.Split(*samplers, ",")
	for _, m := range methods {
		if m != "tpe" && m != "cmaes" && m != "cmaes-ipop" && m != "random" {
			return usagef("compare: --samplers: %q is not one of tpe, cmaes, cmaes-ipop, random", m)
		}
	}
	storage := base.Study.Name + "-compare.db"
	var rows []compareRow
	var uniformPts [][2]float64
	runOne := func(method string, seed int64) error {
		cfg := *base
		cfg.Study.Seed = seed
		cfg.Study.Storage = storage
		cfg.Study.TimeLimit = config.Duration{}
		if *trials > 0 {
			cfg.Study.Trials = *trials
		}
		if method == "uniform" {
			cfg.Study.Name = fmt.Sprintf("%s-uniform", base.Study.Name)
			cfg.Study.Sampler = "random"
			cfg.Study.Warmstart = ratios
			cfg.Study.Trials = len(ratios)
			cfg.Stopper.Kind = "none"
		} else {
			cfg.Study.Name = fmt.Sprintf("%s-%s-s%d", base.Study.Name, method, seed)
			cfg.Study.Sampler = method
			cfg.Study.Warmstart = []float64{}
		}
		fmt.Fprintf(stderr, "== %s\n", cfg.Study.Name)
		start := time.Now()
		s, err := search.Open(ctx, &cfg, search.Options{Log: stderr})
		if err != nil {
			return classify(err)
		}
		defer s.Close()
		if err := s.Run(ctx); err != nil {
			return err
		}
		sum, err := s.Summary()
		if err != nil {
			return err
		}
		row := compareRow{Method: method, Seed: seed, Study: cfg.Study.Name, Best: optFloat(math.NaN()),
			AccAtTgt: optFloat(math.NaN()), RelAtTgt: optFloat(math.NaN()), Wall: time.Since(start).Seconds()}
		if sum.Best != nil {
			row.Best = optFloat(sum.Best.Value)
		}
		for _, t := range sum.Trials {
			if t.State == "complete" || t.State == "pruned" {
				row.Trials++
			}
			if t.State != "complete" || t.Metric == nil {
				continue
			}
			if method == "uniform" {
				uniformPts = append(uniformPts, [2]float64{t.Metric.RelLatency, t.Metric.Accuracy})
			}
			if t.Metric.RelLatency <= target && (math.IsNaN(float64(row.AccAtTgt)) || t.Metric.Accuracy > float64(row.AccAtTgt)) {
				row.AccAtTgt, row.RelAtTgt = optFloat(t.Metric.Accuracy), optFloat(t.Metric.RelLatency)
			}
		}
		rows = append(rows, row)
		return nil
	}
	if len(ratios) > 0 {
		if err := runOne("uniform", base.Study.Seed); err != nil {
			return err
		}
	}
	for _, m := range methods {
		for _, seed := range seeds {
			if err := runOne(m, seed); err != nil {
				return err
			}
		}
	}
	cmp := comparison{Target: target, UniformAtTgt: optFloat(interpolateAt(uniformPts, target)), UniformPoints: uniformPts, Rows: rows}
	writeCompare(stdout, cmp)
	if *jsonOut != "" {
		b, err := json.MarshalIndent(cmp, "", "  ")
		if err != nil {
			return fmt.Errorf("compare: %w", err)
		}
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// interpolateAt returns the accuracy of a latency-accuracy curve at relative latency x,
// linearly between the closest measured points on either side of it (NaN when the points
// do not bracket x).
func interpolateAt(pts [][2]float64, x float64) float64 {
	lo, hi := -1, -1
	for i, p := range pts {
		if p[0] <= x && (lo < 0 || p[0] > pts[lo][0]) {
			lo = i
		}
		if p[0] >= x && (hi < 0 || p[0] < pts[hi][0]) {
			hi = i
		}
	}
	switch {
	case lo < 0 || hi < 0:
		return math.NaN()
	case pts[hi][0] == pts[lo][0]:
		return math.Max(pts[lo][1], pts[hi][1])
	}
	f := (x - pts[lo][0]) / (pts[hi][0] - pts[lo][0])
	return pts[lo][1] + f*(pts[hi][1]-pts[lo][1])
}

// relTarget reads a latency target that is relative to the dense model, such as "0.5x".
func relTarget(s string) (float64, error) {
	t, err := objectives.ParseTarget(s)
	if err != nil || t.Rel == 0 {
		return 0, fmt.Errorf("%q: the comparison needs a target relative to the dense model, such as 0.5x", s)
	}
	return t.Rel, nil
}

func writeCompare(w io.Writer, c comparison) {
	pct := func(v optFloat) string {
		if math.IsNaN(float64(v)) {
			return "—"
		}
		return fmt.Sprintf("%.2f", 100*float64(v))
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "method\tseed\tbest objective\tval acc %% at <= %.2fx\tits latency\ttrials\ttime s\t\n", c.Target)
	type agg struct {
		best, acc []float64
		reached   int
	}
	by := map[string]*agg{}
	var order []string
	for _, r := range c.Rows {
		rel := "—"
		if !math.IsNaN(float64(r.RelAtTgt)) {
			rel = fmt.Sprintf("%.2fx", float64(r.RelAtTgt))
		}
		fmt.Fprintf(tw, "%s\t%d\t%.4f\t%s\t%s\t%d\t%.0f\t\n", r.Method, r.Seed, float64(r.Best), pct(r.AccAtTgt), rel, r.Trials, r.Wall)
		a, ok := by[r.Method]
		if !ok {
			a = &agg{}
			by[r.Method] = a
			order = append(order, r.Method)
		}
		a.best = append(a.best, float64(r.Best))
		a.acc = append(a.acc, float64(r.AccAtTgt))
		if !math.IsNaN(float64(r.AccAtTgt)) {
			a.reached++
		}
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "method\truns\tbest objective (mean ± sd)\truns with a model at target\tval acc %% at target (mean ± sd of those)\t\n")
	for _, m := range order {
		a := by[m]
		bm, bs := meanSD(a.best)
		am, as := meanSD(a.acc)
		acc := "—"
		if a.reached > 0 {
			acc = fmt.Sprintf("%.2f ± %.2f", 100*am, 100*as)
		}
		fmt.Fprintf(tw, "%s\t%d\t%.4f ± %.4f\t%d of %d\t%s\t\n", m, len(a.best), bm, bs, a.reached, len(a.best), acc)
	}
	tw.Flush()
	if len(c.UniformPoints) > 0 {
		fmt.Fprintf(w, "\nuniform pruning interpolated to %.2fx the dense latency: val acc %s %%\n", c.Target, pct(c.UniformAtTgt))
	}
}

func meanSD(v []float64) (float64, float64) {
	var n, s, ss float64
	for _, x := range v {
		if !math.IsNaN(x) {
			n++
			s += x
			ss += x * x
		}
	}
	if n == 0 {
		return math.NaN(), math.NaN()
	}
	m := s / n
	if n < 2 {
		return m, 0
	}
	return m, math.Sqrt(math.Max(0, (ss-n*m*m)/(n-1)))
}
