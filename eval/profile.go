package eval

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/rand"
	"sort"
	"time"

	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/prune"
)

// Profiler builds and checks the lookup table of one model on one device: every layer
// shape that structured pruning at Ratios can give, timed alone (see LUT).
type Profiler struct {
	Meter          Meter // times a model alone; it must not cache (models are timed twice on purpose)
	Model          *nn.Model
	Groups         []prune.Group // Model's groups
	Ratios         []float64     // the ratios a search may use, sorted
	Device         Device        // where Meter measures
	Batch, Threads int
	Passes         int       // rounds over every shape, keeping the fastest of each (at least 1)
	Seed           int64     // of the measuring order and of the random plans
	Log            io.Writer // progress lines
}

// ErrLUTSetting is wrapped by Build's error when the table to resume was profiled in
// another setting (device, batch or threads).
var ErrLUTSetting = errors.New("lookup table of another setting")

// fastest measures every model once per pass, pass after pass, and keeps the measurement
// of each with the lowest median: the one least disturbed by other work on the device.
func (p *Profiler) fastest(ctx context.Context, models []*nn.Model) ([]Latency, error) {
	best := make([]Latency, len(models))
	for pass := 0; pass < max(p.Passes, 1); pass++ {
		for i, m := range models {
			l, err := p.Meter.Measure(ctx, m)
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

// Build profiles every layer width of m's pruned variants in p.Passes passes (each in its
// own shuffled order, keeping the fastest measurement of each shape), fits the scale and
// saves the table.
func (p *Profiler) Build(ctx context.Context, out string, resume bool, calib int) (*LUT, error) {
	table := NewLUT(p.Device, p.Batch, p.Threads)
	if resume {
		old, err := LoadLUT(out)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return nil, err
		case old.Batch != p.Batch || old.Threads != p.Threads || old.Device != p.Device:
			return nil, fmt.Errorf("%w: %s was profiled on %s at batch %d, %d thread(s)", ErrLUTSetting, out, old.Device, old.Batch, old.Threads)
		default:
			table = old
			fmt.Fprintf(p.Log, "lookup table: resuming with the %d entries of %s\n", len(table.Entries), out)
		}
	}
	table.Model, table.Ratios = p.Model.Name, p.Ratios
	all, err := widthVariants(p.Model, p.Groups, p.Ratios, p.Batch, p.Threads)
	if err != nil {
		return nil, err
	}
	var layers []*nn.Model
	for _, l := range all {
		if _, ok := table.Entries[LayerSignature(l.Layers[0], l.Input, p.Batch, p.Threads)]; !ok {
			layers = append(layers, l)
		}
	}
	fmt.Fprintf(p.Log, "lookup table: %d distinct layer shapes over %d groups and %d ratios, %d to measure in %d pass(es)\n",
		len(all), len(p.Groups), len(p.Ratios), len(layers), p.Passes)
	start := time.Now()
	total := len(layers) * p.Passes
	every := max(total/20, 1)
	for pass := 0; pass < p.Passes; pass++ {
		// A shuffled order spreads a slow spell of the device over unrelated shapes, and
		// each pass meets it elsewhere.
		rand.New(rand.NewSource(p.Seed+int64(pass))).Shuffle(len(layers), func(i, j int) { layers[i], layers[j] = layers[j], layers[i] })
		run := NewLUT(p.Device, p.Batch, p.Threads)
		err := run.Profile(ctx, p.Meter, layers, func(pp ProfileProgress) {
			done := pass*len(layers) + pp.Done
			if done%every == 0 || done == total {
				el := time.Since(start)
				eta := time.Duration(float64(el) / float64(done) * float64(total-done))
				fmt.Fprintf(p.Log, "lookup table: pass %d/%d, %d/%d  %s: %.3f ms  (elapsed %s, about %s left)\n", pass+1, p.Passes, pp.Done, pp.Total,
					pp.Signature, lutMS(pp.Latency.Median), el.Round(time.Second), eta.Round(time.Second))
			}
		})
		table.Merge(run)
		if err != nil {
			// Keep what was measured so that --resume can go on from there.
			if len(table.Entries) > 0 {
				if serr := table.Save(out); serr == nil {
					fmt.Fprintf(p.Log, "lookup table: saved the %d entries measured so far in %s (go on with --resume)\n", len(table.Entries), out)
				}
			}
			return nil, err
		}
	}
	cal := []*nn.Model{p.Model}
	more, err := randomProfilePlans(p.Model, p.Groups, p.Ratios, calib, p.Seed)
	if err != nil {
		return nil, err
	}
	cal = append(cal, more...)
	fmt.Fprintf(p.Log, "lookup table: measuring %d models in full to fit the scale factor\n", len(cal))
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

// Check compares the table's predictions with direct measurements of n random plans (the
// fastest of p.Passes rounds over all of them, as the entries are). It also measures the
// model itself in the same rounds and reports the error once more with the table re-anchored
// on it (Fit on the model alone): what remains is the error of the per-layer model, without
// the change of the device's speed since the table was profiled. The same errors follow for
// the minimum latency, which other work on the device disturbs far less than the median.
func (p *Profiler) Check(ctx context.Context, stdout io.Writer, table *LUT, n int) error {
	if n <= 0 {
		return fmt.Errorf("lookup table check: %d plans (want at least 1)", n)
	}
	plans, err := randomProfilePlans(p.Model, p.Groups, p.Ratios, n, p.Seed+1000)
	if err != nil {
		return err
	}
	fmt.Fprintf(p.Log, "lookup table: checking the table on %d random plans (%d round(s))\n", n, p.Passes)
	got, err := p.fastest(ctx, append([]*nn.Model{p.Model}, plans...))
	if err != nil {
		return err
	}
	anchored := *table
	if err := anchored.Fit([]*nn.Model{p.Model}, got[:1]); err != nil {
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
		n, 100*medianSorted(errs), 100*errs[n-1])
	fmt.Fprintf(stdout, "re-anchored on %s measured now (scale %.3f -> %.3f): median %.1f %%, max %.1f %%\n",
		p.Model.Name, table.Scale, anchored.Scale, 100*medianSorted(anchErrs), 100*anchErrs[n-1])
	fmt.Fprintf(stdout, "of the minimum latency (steadier on a busy device): median %.1f %%, re-anchored %.1f %%\n",
		100*medianSorted(minErrs), 100*medianSorted(minAnchErrs))
	return nil
}

func lutMS(d time.Duration) float64 { return float64(d) / 1e6 }

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
		ins, err := LayerInputs(v)
		if err != nil {
			return nil, err
		}
		s := make([]string, len(v.Layers))
		for i, l := range v.Layers {
			s[i] = LayerSignature(l, ins[i], batch, threads)
		}
		return s, nil
	}
	base, err := sigs(m)
	if err != nil {
		return nil, err
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
		ins, err := LayerInputs(v)
		if err != nil {
			return err
		}
		for _, i := range layers {
			if have[s[i]] {
				continue
			}
			have[s[i]] = true
			one, err := SingleLayer(v.Layers[i], ins[i])
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
				return nil, fmt.Errorf("lookup table: layer %q depends on %d groups: over %d width combinations", m.Layers[layers[0]].Name, len(set), maxCombinations)
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
		return nil, fmt.Errorf("lookup table: %w", err)
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
			return nil, fmt.Errorf("lookup table: random plan %d: %w", i+1, err)
		}
		p.Name = fmt.Sprintf("%s-plan%d", m.Name, i+1)
		out = append(out, p)
	}
	return out, nil
}
