package prune

import (
	"fmt"
	"math"
	"sort"

	"github.com/autoprune/autoprune/nn"
)

// Scope says how unstructured pruning ranks weights.
type Scope string

// Scopes of magnitude pruning.
const (
	// PerLayer prunes the same fraction of every layer.
	PerLayer Scope = "layer"
	// Global ranks all weights of all layers together, so layers with many small weights
	// lose more (per-layer adaptive sparsity from one threshold).
	Global Scope = "global"
)

// Magnitude returns a new model in which the given fraction of the weights of every Conv2D
// and Linear layer (the output layer included) is masked: the weights of smallest absolute
// value, either within each layer or across all of them. Masks only grow: weights masked
// already stay masked and count towards the sparsity. Masked weights are set to zero. Ties
// are broken by position, so the result is deterministic.
//
// Masks make the model smaller to store once compressed, but a dense forward pass does the
// same work: only structured pruning makes dense hardware faster.
func Magnitude(m *nn.Model, sparsity float64, scope Scope) (*nn.Model, error) {
	if math.IsNaN(sparsity) || sparsity < 0 || sparsity >= 1 {
		return nil, fmt.Errorf("%w: sparsity %v is outside [0, 1)", ErrPlan, sparsity)
	}
	if scope != PerLayer && scope != Global {
		return nil, fmt.Errorf("%w: unknown scope %q (want %q or %q)", ErrPlan, scope, PerLayer, Global)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	out := m.Clone()
	var layers []*nn.Layer
	for _, l := range out.Layers {
		if l.Kind == nn.Conv2D || l.Kind == nn.Linear {
			layers = append(layers, l)
			if l.Mask == nil {
				l.Mask = make([]float32, len(l.Weight))
				for i := range l.Mask {
					l.Mask[i] = 1
				}
			}
		}
	}
	type ref struct {
		l   int
		i   int
		mag float32
	}
	mags := func(ls []int) []ref {
		var rs []ref
		for _, li := range ls {
			l := layers[li]
			for i, w := range l.Weight {
				rs = append(rs, ref{li, i, float32(math.Abs(float64(w * l.Mask[i])))})
			}
		}
		return rs
	}
	prune := func(rs []ref) {
		n := int(math.Floor(sparsity*float64(len(rs)) + 1e-9))
		sort.SliceStable(rs, func(a, b int) bool { return rs[a].mag < rs[b].mag })
		for _, r := range rs[:n] {
			layers[r.l].Mask[r.i] = 0
		}
	}
	if scope == Global {
		all := make([]int, len(layers))
		for i := range all {
			all[i] = i
		}
		prune(mags(all))
	} else {
		for i := range layers {
			prune(mags([]int{i}))
		}
	}
	for _, l := range layers {
		for i, k := range l.Mask {
			if k == 0 {
				l.Weight[i] = 0
			}
		}
	}
	return out, nil
}

// LayerSparsity is the fraction of masked weights of one layer.
type LayerSparsity struct {
	Layer   string
	Masked  int
	Weights int
}

// Sparsity returns per-layer masked counts of the Conv2D and Linear layers, and the overall
// fraction of masked weights.
func Sparsity(m *nn.Model) ([]LayerSparsity, float64) {
	var out []LayerSparsity
	var masked, total int
	for _, l := range m.Layers {
		if l.Kind != nn.Conv2D && l.Kind != nn.Linear {
			continue
		}
		s := LayerSparsity{Layer: l.Name, Weights: len(l.Weight)}
		for _, k := range l.Mask {
			if k == 0 {
				s.Masked++
			}
		}
		masked += s.Masked
		total += s.Weights
		out = append(out, s)
	}
	if total == 0 {
		return out, 0
	}
	return out, float64(masked) / float64(total)
}
