package prune

import (
	"fmt"

	"github.com/autoprune/autoprune/nn"
)

// Gradual prunes during training by a schedule (dynamic pruning). It satisfies the training
// loop's pruning hook: At tells whether a step is a pruning event, Apply prunes the current
// model to the schedule's target.
//
// Unstructured: masks the smallest weights up to the target sparsity (masks only grow).
// Structured: removes channels so that every group keeps Keep(original size, target) of its
// original channels, choosing by the criterion on the current weights; the model shrinks
// step by step while training adapts the rest.
type Gradual struct {
	Schedule   Schedule
	Structured bool
	Scope      Scope     // unstructured: PerLayer or Global (default Global)
	Criterion  Criterion // structured: channel importance (default L1)

	sizes map[string]int // structured: original group sizes
}

// At reports whether step is a pruning event.
func (g *Gradual) At(step int) bool {
	ok, _ := g.Schedule.PruneAt(step)
	return ok
}

// Apply prunes m to the schedule's target at step.
func (g *Gradual) Apply(step int, m *nn.Model) (*nn.Model, error) {
	target := g.Schedule.Target(step)
	if !g.Structured {
		scope := g.Scope
		if scope == "" {
			scope = Global
		}
		return Magnitude(m, target, scope)
	}
	gs, err := Groups(m)
	if err != nil {
		return nil, err
	}
	if g.sizes == nil {
		g.sizes = map[string]int{}
		for _, gr := range gs {
			g.sizes[gr.Name] = gr.Size
		}
	}
	c := g.Criterion
	if c == nil {
		c = L1{}
	}
	keep := map[string][]int{}
	for _, gr := range gs {
		orig, ok := g.sizes[gr.Name]
		if !ok {
			return nil, fmt.Errorf("prune: group %q appeared during gradual pruning", gr.Name)
		}
		k := min(gr.Size, Keep(orig, target))
		if k == gr.Size {
			continue
		}
		scores, err := c.Score(m, gr)
		if err != nil {
			return nil, err
		}
		keep[gr.Name] = TopK(scores, k)
	}
	return Slice(m, keep)
}

// Target returns the fraction (of weights, or of each group's original channels) the
// schedule asks for at step.
func (g *Gradual) Target(step int) float64 { return g.Schedule.Target(step) }
