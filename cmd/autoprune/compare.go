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
	"github.com/autoprune/autoprune/search"
)

func init() {
	register(&command{name: "compare", summary: "compare samplers (TPE, CMA-ES, random) and uniform pruning on one config", run: runCompare})
}

// compareRow is one study of a comparison.
type compareRow struct {
	Method   string  `json:"method"` // sampler name, or "uniform"
	Seed     int64   `json:"seed"`
	Study    string  `json:"study"`
	Best     float64 `json:"best_objective"`
	AccAtTgt float64 `json:"val_acc_at_target"` // best validation accuracy with relative latency <= target (NaN: none)
	RelAtTgt float64 `json:"rel_latency_of_that"`
	Trials   int     `json:"finished_trials"`
	Wall     float64 `json:"wall_s"`
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
  autoprune compare configs/fashion-mobile.toml --trials 30 --seeds 1,2,3
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
		row := compareRow{Method: method, Seed: seed, Study: cfg.Study.Name, Best: math.NaN(), AccAtTgt: math.NaN(),
			Wall: time.Since(start).Seconds()}
		if sum.Best != nil {
			row.Best = sum.Best.Value
		}
		for _, t := range sum.Trials {
			if t.State == "complete" || t.State == "pruned" {
				row.Trials++
			}
			if t.State == "complete" && t.Metric != nil && t.Metric.RelLatency <= target &&
				(math.IsNaN(row.AccAtTgt) || t.Metric.Accuracy > row.AccAtTgt) {
				row.AccAtTgt, row.RelAtTgt = t.Metric.Accuracy, t.Metric.RelLatency
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
	writeCompare(stdout, rows, target)
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(rows, "", "  ")
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// relTarget reads a relative latency target such as "0.5x".
func relTarget(s string) (float64, error) {
	r, ok := strings.CutSuffix(strings.TrimSpace(s), "x")
	v, err := strconv.ParseFloat(r, 64)
	if !ok || err != nil || !(v > 0) {
		return 0, fmt.Errorf("%q: the comparison needs a target relative to the dense model, such as 0.5x", s)
	}
	return v, nil
}

func writeCompare(w io.Writer, rows []compareRow, target float64) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "method\tseed\tbest objective\tval acc %% at <= %.2fx\tits latency\ttrials\ttime s\t\n", target)
	type agg struct{ best, acc []float64 }
	by := map[string]*agg{}
	var order []string
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%.4f\t%.2f\t%.2fx\t%d\t%.0f\t\n", r.Method, r.Seed, r.Best, 100*r.AccAtTgt, r.RelAtTgt, r.Trials, r.Wall)
		a, ok := by[r.Method]
		if !ok {
			a = &agg{}
			by[r.Method] = a
			order = append(order, r.Method)
		}
		a.best = append(a.best, r.Best)
		a.acc = append(a.acc, r.AccAtTgt)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "method\truns\tbest objective (mean ± sd)\tval acc %% at target (mean ± sd)\t\n")
	for _, m := range order {
		a := by[m]
		bm, bs := meanSD(a.best)
		am, as := meanSD(a.acc)
		fmt.Fprintf(tw, "%s\t%d\t%.4f ± %.4f\t%.2f ± %.2f\t\n", m, len(a.best), bm, bs, 100*am, 100*as)
	}
	tw.Flush()
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
