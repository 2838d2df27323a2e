package prune

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/autoprune/autoprune/nn"
)

// ErrPlan is wrapped by every error about a bad pruning plan.
var ErrPlan = errors.New("bad pruning plan")

// Plan maps group names to pruning ratios in [0, 1): the fraction of the group's channels to
// remove. Groups not in the plan are kept whole.
type Plan map[string]float64

// Uniform returns a plan that prunes every group of gs by the same ratio.
func Uniform(gs []Group, ratio float64) Plan {
	p := Plan{}
	for _, g := range gs {
		p[g.Name] = ratio
	}
	return p
}

// Keep returns how many of size channels a ratio keeps: size - floor(ratio*size), and never
// fewer than one. Rounding down the removed count means a ratio never removes more than it
// says; small groups keep at least one channel so the network stays connected.
func Keep(size int, ratio float64) int {
	k := size - int(math.Floor(ratio*float64(size)+1e-9))
	return max(k, 1)
}

// Shape returns a copy of the plan whose ratios keep, in every group, at least minKeep
// channels and a multiple of multiple channels (rounded up, never more than the group
// has): hardware that computes channels in vectors of 4 or 8 runs a layer of 27 channels
// as slowly as one of 28, and very narrow layers lose more accuracy than they save time.
// minKeep and multiple of 1 or less leave the plan as it is. Groups absent from gs are
// copied unchanged.
func (p Plan) Shape(gs []Group, minKeep, multiple int) Plan {
	out := make(Plan, len(p))
	size := map[string]int{}
	for _, g := range gs {
		size[g.Name] = g.Size
	}
	for name, r := range p {
		n, ok := size[name]
		if !ok || n == 0 {
			out[name] = r
			continue
		}
		k := Keep(n, r)
		if multiple > 1 {
			k = (k + multiple - 1) / multiple * multiple
		}
		k = min(max(k, minKeep), n)
		if k == Keep(n, r) {
			out[name] = r
			continue
		}
		out[name] = float64(n-k) / float64(n)
	}
	return out
}

// Validate checks a plan against a model's groups: known group names and ratios in [0, 1).
func (p Plan) Validate(gs []Group) error {
	known := map[string]bool{}
	for _, g := range gs {
		known[g.Name] = true
	}
	names := make([]string, 0, len(p))
	for n := range p {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		r := p[n]
		if !known[n] {
			var list []string
			for _, g := range gs {
				list = append(list, g.Name)
			}
			return fmt.Errorf("%w: unknown group %q (groups: %s)", ErrPlan, n, strings.Join(list, ", "))
		}
		if math.IsNaN(r) || r < 0 || r >= 1 {
			return fmt.Errorf("%w: group %q: ratio %v is outside [0, 1)", ErrPlan, n, r)
		}
	}
	return nil
}

// Structured returns a new, smaller model with the channels of each planned group removed:
// for every group it keeps the Keep(size, ratio) channels that the criterion scores highest
// (ties broken by lower index) and slices producer weights and biases, batch-norm parameters,
// depthwise kernels and consumer inputs (expanding a channel to its H*W features after a
// flatten) consistently. The input model is not modified.
func Structured(m *nn.Model, plan Plan, c Criterion) (*nn.Model, error) {
	keep, err := Select(m, plan, c)
	if err != nil {
		return nil, err
	}
	return Slice(m, keep)
}

// Select decides which channels each planned group keeps: the highest-scoring ones under the
// criterion, in increasing index order.
func Select(m *nn.Model, plan Plan, c Criterion) (map[string][]int, error) {
	gs, err := Groups(m)
	if err != nil {
		return nil, err
	}
	if err := plan.Validate(gs); err != nil {
		return nil, err
	}
	keep := map[string][]int{}
	for _, g := range gs {
		r, ok := plan[g.Name]
		if !ok || Keep(g.Size, r) == g.Size {
			continue
		}
		if c == nil {
			return nil, fmt.Errorf("%w: no importance criterion given", ErrPlan)
		}
		scores, err := c.Score(m, g)
		if err != nil {
			return nil, fmt.Errorf("prune: scoring group %q: %w", g.Name, err)
		}
		if len(scores) != g.Size {
			return nil, fmt.Errorf("prune: criterion %s gave %d scores for group %q of %d channels", c.Name(), len(scores), g.Name, g.Size)
		}
		keep[g.Name] = TopK(scores, Keep(g.Size, r))
	}
	return keep, nil
}

// TopK returns the indices of the k largest scores in increasing index order; ties go to
// the lower index, NaN scores rank last.
func TopK(scores []float64, k int) []int {
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool {
		sa, sb := scores[idx[a]], scores[idx[b]]
		if math.IsNaN(sb) {
			return !math.IsNaN(sa)
		}
		return sa > sb
	})
	idx = idx[:k]
	sort.Ints(idx)
	return idx
}

// Slice returns a new model keeping, for each named group, only the listed channel indices
// (sorted, unique, in range, at least one). Groups not listed keep every channel.
func Slice(m *nn.Model, keep map[string][]int) (*nn.Model, error) {
	a, err := analyze(m)
	if err != nil {
		return nil, err
	}
	gs := a.groups()
	// Map each group's union-find root to its kept channels.
	bySet := map[int][]int{}
	for _, g := range gs {
		k, ok := keep[g.Name]
		if !ok {
			continue
		}
		if err := checkKeep(g, k); err != nil {
			return nil, err
		}
		set := a.find(a.out[m.Index(g.Producers[0])].segs[0].set)
		bySet[set] = k
	}
	if len(bySet) != len(keep) {
		for name := range keep {
			found := false
			for _, g := range gs {
				found = found || g.Name == name
			}
			if !found {
				return nil, fmt.Errorf("%w: unknown group %q", ErrPlan, name)
			}
		}
	}
	// kept lists the channels of a flow that stay, run after run (nil: all of them).
	kept := func(f flow) []int {
		pruned := false
		for _, s := range f.segs {
			pruned = pruned || bySet[a.find(s.set)] != nil
		}
		if !pruned {
			return nil
		}
		var out []int
		off := 0
		for _, s := range f.segs {
			if k := bySet[a.find(s.set)]; k != nil {
				for _, c := range k {
					out = append(out, off+c)
				}
			} else {
				for c := 0; c < s.n; c++ {
					out = append(out, off+c)
				}
			}
			off += s.n
		}
		return out
	}

	out := m.Clone()
	for i, l := range out.Layers {
		in, o := a.inFlows[i], a.out[i]
		switch l.Kind {
		case nn.Conv2D:
			g := l.GroupsOrOne()
			kk := l.Kernel * l.Kernel
			if g == 1 {
				if k := kept(in); k != nil { // input channels: weight dim 1
					l.Weight = sliceMid(l.Weight, l.Out, l.In, kk, k)
					l.Mask = sliceMid(l.Mask, l.Out, l.In, kk, k)
					l.In = len(k)
				}
				if k := kept(o); k != nil { // output channels: weight dim 0
					l.Weight = sliceMid(l.Weight, 1, l.Out, l.In*kk, k)
					l.Mask = sliceMid(l.Mask, 1, l.Out, l.In*kk, k)
					l.Bias = sliceMid(l.Bias, 1, l.Out, 1, k)
					l.Out = len(k)
				}
			} else if g == l.In && g == l.Out {
				if k := kept(o); k != nil {
					l.Weight = sliceMid(l.Weight, 1, l.Out, kk, k)
					l.Mask = sliceMid(l.Mask, 1, l.Out, kk, k)
					l.Bias = sliceMid(l.Bias, 1, l.Out, 1, k)
					l.In, l.Out, l.Groups = len(k), len(k), len(k)
				}
			}
		case nn.Linear:
			if k := kept(in); k != nil {
				cols := expand(k, in.factor)
				l.Weight = sliceMid(l.Weight, l.Out, l.In, 1, cols)
				l.Mask = sliceMid(l.Mask, l.Out, l.In, 1, cols)
				l.In = len(cols)
			}
			if k := kept(o); k != nil {
				l.Weight = sliceMid(l.Weight, 1, l.Out, l.In, k)
				l.Mask = sliceMid(l.Mask, 1, l.Out, l.In, k)
				l.Bias = sliceMid(l.Bias, 1, l.Out, 1, k)
				l.Out = len(k)
			}
		case nn.BatchNorm:
			if k := kept(o); k != nil {
				c := len(l.Gamma)
				l.Gamma = sliceMid(l.Gamma, 1, c, 1, k)
				l.Beta = sliceMid(l.Beta, 1, c, 1, k)
				l.Mean = sliceMid(l.Mean, 1, c, 1, k)
				l.Var = sliceMid(l.Var, 1, c, 1, k)
			}
		}
	}
	if err := out.Validate(); err != nil {
		return nil, fmt.Errorf("prune: sliced model is inconsistent: %w", err)
	}
	return out, nil
}

func checkKeep(g Group, k []int) error {
	if len(k) == 0 {
		return fmt.Errorf("%w: group %q would be pruned to nothing (keep at least one of %d channels)", ErrPlan, g.Name, g.Size)
	}
	for i, c := range k {
		if c < 0 || c >= g.Size {
			return fmt.Errorf("%w: group %q: channel %d out of range 0..%d", ErrPlan, g.Name, c, g.Size-1)
		}
		if i > 0 && c <= k[i-1] {
			return fmt.Errorf("%w: group %q: kept channels must be sorted and unique", ErrPlan, g.Name)
		}
	}
	return nil
}

// expand maps channels to their consecutive features: channel c -> c*f .. c*f+f-1.
func expand(k []int, f int) []int {
	if f == 1 {
		return k
	}
	out := make([]int, 0, len(k)*f)
	for _, c := range k {
		for j := 0; j < f; j++ {
			out = append(out, c*f+j)
		}
	}
	return out
}

// sliceMid views s as (outer, mid, inner) and keeps the listed mid indices.
func sliceMid(s []float32, outer, mid, inner int, keep []int) []float32 {
	if s == nil {
		return nil
	}
	out := make([]float32, 0, outer*len(keep)*inner)
	for o := 0; o < outer; o++ {
		base := o * mid * inner
		for _, k := range keep {
			out = append(out, s[base+k*inner:base+(k+1)*inner]...)
		}
	}
	return out
}
