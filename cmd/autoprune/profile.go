package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/rand"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/autoprune/autoprune/eval"
	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/prune"
)

func init() {
	register(&command{name: "profile", summary: "build a per-layer latency lookup table on a device agent", run: runProfile})
}

const defaultRatios = "0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9"

func runProfile(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("profile", "profile --model FILE|zoo:NAME [--agent URL [--token TOKEN]] [--out device-lut.json] [flags]", `
Builds a latency lookup table (LUT) for one model on one device: for every width that
structured pruning at the given ratios can give each prunable group (prune.Keep(size, r)),
it measures every layer whose shape changes, alone, as a single-layer model, on the agent
(or on this machine without --agent). A convolution between two groups is measured for
every combination of its input and output widths. It then measures the model itself and a
few pruned versions in full and stores the median ratio of measured latency to the sum of
the layers' entries as a scale factor: a layer timed alone keeps its weights and input in
cache, inside the whole model it does not.

Everything is measured --passes times, each pass in a new shuffled order, keeping the
fastest measurement: a device busy with other work now and then (a phone's background
tasks, a shared machine) then disturbs the table less.

A search (or "autoprune bench --lut") then predicts a pruned model's latency as the sum of
its layers' entries times that scale, without running it. A layer whose width was not
profiled is an error, never zero: profile with the ratios the search uses.

--lut-check N measures N random per-group plans directly and prints the prediction error
(with --lut FILE it checks an existing table instead of profiling).

Examples:
  autoprune profile --agent http://127.0.0.1:7070 --model zoo:vgg-small --out pixel7-lut.json
  autoprune profile --model vgg.safetensors --ratios 0,0.25,0.5,0.75 --out here-lut.json
  autoprune profile --agent http://127.0.0.1:7070 --model zoo:vgg-small --lut pixel7-lut.json --lut-check 20`, stderr)
	agentURL := fs.String("agent", "", "URL of a latency agent; default: measure on this machine")
	token := fs.String("token", "", "the agent's token (default $"+tokenEnv+")")
	model := fs.String("model", "", "model file or zoo:NAME whose pruned variants to profile (required)")
	ratiosFlag := fs.String("ratios", defaultRatios, "pruning ratios the search may use, comma separated, each in [0, 1)")
	out := fs.String("out", "device-lut.json", "lookup table to write")
	resume := fs.Bool("resume", false, "keep the entries of an existing --out table and measure only the missing ones")
	lutIn := fs.String("lut", "", "check this existing table instead of profiling (with --lut-check)")
	check := fs.Int("lut-check", 0, "measure this many random per-group plans directly and report the prediction error")
	calib := fs.Int("calibrate", 4, "random plans measured in full (besides the model itself) to fit the scale factor")
	seed := fs.Int64("seed", 1, "seed of the random plans and of the measuring order")
	passes := fs.Int("passes", 3, "measure every shape (and checked plan) this many times, keeping the fastest: steadier on a busy device")
	batch := fs.Int("batch", 1, "samples per forward pass")
	threads := fs.Int("threads", 1, "engine threads")
	warmup := fs.Int("warmup", 5, "untimed passes before each measurement")
	runs := fs.Int("runs", 50, "timed passes per measurement")
	budget := fs.Duration("budget", time.Second, "time limit for the timed passes of one measurement")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("profile: unexpected argument %q (the model goes in --model)", pos[0])
	}
	switch {
	case *model == "":
		return usagef("profile: --model is required (a model file or zoo:NAME)")
	case *batch <= 0 || *threads <= 0 || *runs <= 0 || *warmup < 0 || *budget <= 0:
		return usagef("profile: --batch, --threads, --runs and --budget must be positive and --warmup not negative")
	case *check < 0 || *calib < 0:
		return usagef("profile: --lut-check and --calibrate must not be negative")
	case *passes < 1 || *passes > 100:
		return usagef("profile: --passes %d: want 1..100", *passes)
	case *lutIn != "" && *check == 0:
		return usagef("profile: --lut only makes sense with --lut-check N")
	}
	ratios, err := parseProfileRatios(*ratiosFlag)
	if err != nil {
		return usagef("profile: --ratios: %v", err)
	}
	m, err := loadModelArg(*model)
	if err != nil {
		return asUsage(err)
	}
	gs, err := prune.Groups(m)
	if err != nil {
		return asUsage(fmt.Errorf("profile: %w", err))
	}

	// Every shape is measured once anyway; calibration measures models twice on purpose, so
	// the meter does not cache.
	var meter eval.Meter
	var dev eval.Device
	if *agentURL != "" {
		rm, err := remoteMeter(*agentURL, *token)
		if err != nil {
			return err
		}
		rm.Batch, rm.Threads, rm.Warmup, rm.Runs, rm.Budget = *batch, *threads, *warmup, *runs, *budget
		info, err := rm.Info(ctx)
		if err != nil {
			return err
		}
		dev = info.Device
		meter = eval.MeterFunc(func(ctx context.Context, m *nn.Model) (eval.Latency, error) {
			res, err := rm.MeasureResponse(ctx, m)
			return res.Latency, err
		})
	} else {
		dev = eval.ThisDevice()
		meter = eval.MeterFunc(func(ctx context.Context, m *nn.Model) (eval.Latency, error) {
			return eval.MeasureLocal(ctx, m, *batch, *threads, max(*warmup, 1), *runs, *budget)
		})
	}
	fmt.Fprintf(stderr, "profile: %s on %s, batch %d, %d thread(s)\n", m.Name, dev, *batch, *threads)

	pr := &profiler{meter: meter, m: m, gs: gs, ratios: ratios, dev: dev, batch: *batch, threads: *threads,
		passes: *passes, seed: *seed, stderr: stderr}
	var table *eval.LUT
	if *lutIn != "" {
		if table, err = eval.LoadLUT(*lutIn); err != nil {
			return asUsage(err)
		}
		if table.Batch != *batch || table.Threads != *threads {
			return usagef("profile: %s was profiled at batch %d, %d thread(s); give --batch %d --threads %d",
				*lutIn, table.Batch, table.Threads, table.Batch, table.Threads)
		}
		if table.Device != dev {
			fmt.Fprintf(stderr, "profile: warning: %s was profiled on %s, checking on %s\n", *lutIn, table.Device, dev)
		}
	} else {
		if table, err = pr.build(ctx, *out, *resume, *calib); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s: %d entries, scale %.3f (whole model / sum of layers)\n", *out, len(table.Entries), table.Scale)
	}
	if *check > 0 {
		return pr.check(ctx, stdout, table, *check)
	}
	return nil
}

// profiler holds the settings of one profile run.
type profiler struct {
	meter          eval.Meter // does not cache
	m              *nn.Model
	gs             []prune.Group
	ratios         []float64
	dev            eval.Device
	batch, threads int
	passes         int
	seed           int64
	stderr         io.Writer
}

// fastest measures every model once per pass, pass after pass, and keeps the measurement
// of each with the lowest median: the one least disturbed by other work on the device.
func (p *profiler) fastest(ctx context.Context, models []*nn.Model) ([]eval.Latency, error) {
	best := make([]eval.Latency, len(models))
	for pass := 0; pass < max(p.passes, 1); pass++ {
		for i, m := range models {
			l, err := p.meter.Measure(ctx, m)
			if err != nil {
				return nil, err
			}
			if pass == 0 || l.Median < best[i].Median {
				best[i] = l
			}
		}
	}
	return best, nil
}

// build profiles every layer width of m's pruned variants in p.passes passes (each in its
// own shuffled order, keeping the fastest measurement of each shape), fits the scale and
// saves the table.
func (p *profiler) build(ctx context.Context, out string, resume bool, calib int) (*eval.LUT, error) {
	table := eval.NewLUT(p.dev, p.batch, p.threads)
	if resume {
		old, err := eval.LoadLUT(out)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return nil, asUsage(err)
		case old.Batch != p.batch || old.Threads != p.threads || old.Device != p.dev:
			return nil, usagef("profile: --resume: %s was profiled on %s at batch %d, %d thread(s); not the same setting",
				out, old.Device, old.Batch, old.Threads)
		default:
			table = old
			fmt.Fprintf(p.stderr, "profile: resuming with the %d entries of %s\n", len(table.Entries), out)
		}
	}
	table.Model, table.Ratios = p.m.Name, p.ratios
	all, err := widthVariants(p.m, p.gs, p.ratios, p.batch, p.threads)
	if err != nil {
		return nil, err
	}
	var layers []*nn.Model
	for _, l := range all {
		if _, ok := table.Entries[eval.LayerSignature(l.Layers[0], l.Input, p.batch, p.threads)]; !ok {
			layers = append(layers, l)
		}
	}
	fmt.Fprintf(p.stderr, "profile: %d distinct layer shapes over %d groups and %d ratios, %d to measure in %d pass(es)\n",
		len(all), len(p.gs), len(p.ratios), len(layers), p.passes)
	start := time.Now()
	total := len(layers) * p.passes
	every := max(total/20, 1)
	for pass := 0; pass < p.passes; pass++ {
		// A shuffled order spreads a slow spell of the device over unrelated shapes, and
		// each pass meets it elsewhere.
		rand.New(rand.NewSource(p.seed+int64(pass))).Shuffle(len(layers), func(i, j int) { layers[i], layers[j] = layers[j], layers[i] })
		run := eval.NewLUT(p.dev, p.batch, p.threads)
		err := run.Profile(ctx, p.meter, layers, func(pp eval.ProfileProgress) {
			done := pass*len(layers) + pp.Done
			if done%every == 0 || done == total {
				el := time.Since(start)
				eta := time.Duration(float64(el) / float64(done) * float64(total-done))
				fmt.Fprintf(p.stderr, "profile: pass %d/%d, %d/%d  %s: %.3f ms  (elapsed %s, about %s left)\n", pass+1, p.passes, pp.Done, pp.Total,
					pp.Signature, lutMS(pp.Latency.Median), el.Round(time.Second), eta.Round(time.Second))
			}
		})
		table.Merge(run)
		if err != nil {
			// Keep what was measured so that --resume can go on from there.
			if len(table.Entries) > 0 {
				if serr := table.Save(out); serr == nil {
					fmt.Fprintf(p.stderr, "profile: saved the %d entries measured so far in %s (go on with --resume)\n", len(table.Entries), out)
				}
			}
			return nil, err
		}
	}
	cal := []*nn.Model{p.m}
	more, err := randomProfilePlans(p.m, p.gs, p.ratios, calib, p.seed)
	if err != nil {
		return nil, err
	}
	cal = append(cal, more...)
	fmt.Fprintf(p.stderr, "profile: measuring %d models in full to fit the scale factor\n", len(cal))
	lats, err := p.fastest(ctx, cal)
	if err != nil {
		return nil, err
	}
	if err := table.Fit(cal, lats); err != nil {
		return nil, err
	}
	if err := table.Save(out); err != nil {
		return nil, err
	}
	return table, nil
}

// check compares the table's predictions with direct measurements of n random plans (the
// fastest of p.passes rounds over all of them, as the entries are). It also measures the
// model itself in the same rounds and reports the error once more with the table re-anchored
// on it (Fit on the model alone): what remains is the error of the per-layer model, without
// the change of the device's speed since the table was profiled. The same errors follow for
// the minimum latency, which other work on the device disturbs far less than the median.
func (p *profiler) check(ctx context.Context, stdout io.Writer, table *eval.LUT, n int) error {
	plans, err := randomProfilePlans(p.m, p.gs, p.ratios, n, p.seed+1000)
	if err != nil {
		return err
	}
	fmt.Fprintf(p.stderr, "profile: checking the table on %d random plans (%d round(s))\n", n, p.passes)
	got, err := p.fastest(ctx, append([]*nn.Model{p.m}, plans...))
	if err != nil {
		return err
	}
	anchored := *table
	if err := anchored.Fit([]*nn.Model{p.m}, got[:1]); err != nil {
		return err
	}
	got = got[1:]
	rel := func(p, m time.Duration) float64 { return float64(p-m) / float64(max(m, 1)) }
	fmt.Fprintf(stdout, "%-4s %10s %12s %12s %8s %8s   %10s %10s %8s %8s\n", "plan", "MACs", "pred median", "meas median",
		"error", "anchored", "pred min", "meas min", "error", "anchored")
	var errs, anchErrs, minErrs, minAnchErrs []float64
	for i, plan := range plans {
		pred, err := table.Predict(plan)
		if err != nil {
			return err
		}
		apred, err := anchored.Predict(plan)
		if err != nil {
			return err
		}
		_, macs, _ := plan.Totals()
		e, ea := rel(pred.Median, got[i].Median), rel(apred.Median, got[i].Median)
		em, ema := rel(pred.Min, got[i].Min), rel(apred.Min, got[i].Min)
		errs, anchErrs = append(errs, math.Abs(e)), append(anchErrs, math.Abs(ea))
		minErrs, minAnchErrs = append(minErrs, math.Abs(em)), append(minAnchErrs, math.Abs(ema))
		fmt.Fprintf(stdout, "%-4d %9.2fM %9.3f ms %9.3f ms %+7.1f%% %+7.1f%%   %7.3f ms %7.3f ms %+7.1f%% %+7.1f%%\n", i+1, float64(macs)/1e6,
			lutMS(pred.Median), lutMS(got[i].Median), 100*e, 100*ea, lutMS(pred.Min), lutMS(got[i].Min), 100*em, 100*ema)
	}
	for _, s := range [][]float64{errs, anchErrs, minErrs, minAnchErrs} {
		sort.Float64s(s)
	}
	fmt.Fprintf(stdout, "LUT error over %d plans: median %.1f %%, max %.1f %% (absolute, of the median latency)\n",
		n, 100*lutMedian(errs), 100*errs[n-1])
	fmt.Fprintf(stdout, "re-anchored on %s measured now (scale %.3f -> %.3f): median %.1f %%, max %.1f %%\n",
		p.m.Name, table.Scale, anchored.Scale, 100*lutMedian(anchErrs), 100*anchErrs[n-1])
	fmt.Fprintf(stdout, "of the minimum latency (steadier on a busy device): median %.1f %%, re-anchored %.1f %%\n",
		100*lutMedian(minErrs), 100*lutMedian(minAnchErrs))
	return nil
}

func lutMS(d time.Duration) float64 { return float64(d) / 1e6 }

func lutMedian(s []float64) float64 {
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// parseProfileRatios reads a comma-separated list of ratios in [0, 1), sorted and without repeats.
func parseProfileRatios(s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		r, err := strconv.ParseFloat(f, 64)
		if err != nil || !(r >= 0 && r < 1) {
			return nil, fmt.Errorf("%q is not a ratio in [0, 1)", f)
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, errors.New("no ratios")
	}
	sort.Float64s(out)
	j := 0
	for i, r := range out {
		if i == 0 || r != out[j-1] {
			out[j] = r
			j++
		}
	}
	return out[:j], nil
}

// maxCombinations bounds the width combinations enumerated for the layers depending on the
// same groups.
const maxCombinations = 100000

// widthVariants returns one single-layer model for every distinct layer signature that
// structured pruning of m at the given ratios can produce. It finds which groups each
// layer's signature depends on (by pruning one group at a time), then enumerates every
// combination of widths of those groups: a convolution between two groups gets every pair
// of input and output widths, a batch norm every width of its group.
func widthVariants(m *nn.Model, gs []prune.Group, ratios []float64, batch, threads int) ([]*nn.Model, error) {
	sigs := func(v *nn.Model) ([]string, error) {
		ins, err := eval.LayerInputs(v)
		if err != nil {
			return nil, err
		}
		s := make([]string, len(v.Layers))
		for i, l := range v.Layers {
			s[i] = eval.LayerSignature(l, ins[i], batch, threads)
		}
		return s, nil
	}
	base, err := sigs(m)
	if err != nil {
		return nil, asUsage(err)
	}
	widths := make([][]int, len(gs))
	for gi, g := range gs {
		seen := map[int]bool{}
		for _, r := range ratios {
			if k := prune.Keep(g.Size, r); !seen[k] {
				seen[k] = true
				widths[gi] = append(widths[gi], k)
			}
		}
	}
	deps := make([][]int, len(m.Layers))
	for gi, g := range gs {
		k := prune.Keep(g.Size, 0.5)
		if k == g.Size {
			continue
		}
		v, err := sliceWidths(m, gs, map[int]int{gi: k})
		if err != nil {
			return nil, err
		}
		s, err := sigs(v)
		if err != nil {
			return nil, err
		}
		for i := range s {
			if s[i] != base[i] {
				deps[i] = append(deps[i], gi)
			}
		}
	}
	bySet := map[string][]int{} // dependency set -> layers
	var order []string
	for i, d := range deps {
		key := fmt.Sprint(d)
		if _, ok := bySet[key]; !ok {
			order = append(order, key)
		}
		bySet[key] = append(bySet[key], i)
	}
	var out []*nn.Model
	have := map[string]bool{}
	add := func(v *nn.Model, s []string, layers []int) error {
		ins, err := eval.LayerInputs(v)
		if err != nil {
			return err
		}
		for _, i := range layers {
			if have[s[i]] {
				continue
			}
			have[s[i]] = true
			one, err := eval.SingleLayer(v.Layers[i], ins[i])
			if err != nil {
				return err
			}
			out = append(out, one)
		}
		return nil
	}
	for _, key := range order {
		layers := bySet[key]
		set := deps[layers[0]]
		n := 1
		for _, gi := range set {
			n *= len(widths[gi])
			if n > maxCombinations {
				return nil, fmt.Errorf("profile: layer %q depends on %d groups: over %d width combinations", m.Layers[layers[0]].Name, len(set), maxCombinations)
			}
		}
		for c := 0; c < n; c++ {
			w := map[int]int{}
			rest := c
			for _, gi := range set {
				w[gi] = widths[gi][rest%len(widths[gi])]
				rest /= len(widths[gi])
			}
			v, err := sliceWidths(m, gs, w)
			if err != nil {
				return nil, err
			}
			s, err := sigs(v)
			if err != nil {
				return nil, err
			}
			if err := add(v, s, layers); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// sliceWidths keeps the first k channels of each listed group (by index into gs): the
// latency of a pruned model depends only on how many channels remain.
func sliceWidths(m *nn.Model, gs []prune.Group, widths map[int]int) (*nn.Model, error) {
	keep := map[string][]int{}
	for gi, k := range widths {
		if k == gs[gi].Size {
			continue
		}
		idx := make([]int, k)
		for i := range idx {
			idx[i] = i
		}
		keep[gs[gi].Name] = idx
	}
	v, err := prune.Slice(m, keep)
	if err != nil {
		return nil, fmt.Errorf("profile: %w", err)
	}
	return v, nil
}

// randomProfilePlans returns n models pruned with prune.Structured and the L1 criterion, each
// group at a ratio drawn from ratios.
func randomProfilePlans(m *nn.Model, gs []prune.Group, ratios []float64, n int, seed int64) ([]*nn.Model, error) {
	rng := rand.New(rand.NewSource(seed))
	out := make([]*nn.Model, 0, n)
	for i := 0; i < n; i++ {
		plan := prune.Plan{}
		for _, g := range gs {
			plan[g.Name] = ratios[rng.Intn(len(ratios))]
		}
		p, err := prune.Structured(m, plan, prune.L1{})
		if err != nil {
			return nil, fmt.Errorf("profile: random plan %d: %w", i+1, err)
		}
		p.Name = fmt.Sprintf("%s-plan%d", m.Name, i+1)
		out = append(out, p)
	}
	return out, nil
}
