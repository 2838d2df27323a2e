package train

import (
	"fmt"

	"github.com/autoprune/autoprune/data"
	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/prune"
)

// TaylorSamples is how many training samples TaylorCriterion's gradients average over.
const TaylorSamples = 256

// TaylorCriterion returns the first-order Taylor criterion for m (prune.Taylor) from the
// loss gradients on a seeded sample of ds: TaylorSamples samples, at most half of a small
// set, drawn with seed+1 (so not the samples a validation split of the same seed holds
// out). The data must fit the model's input.
func TaylorCriterion(m *nn.Model, ds *data.Dataset, seed int64) (prune.Taylor, error) {
	if in := m.Input; in.C != ds.C || in.H != ds.H || in.W != ds.W {
		return prune.Taylor{}, fmt.Errorf("taylor criterion: model %q expects %v inputs, the data (%s) has %dx%dx%d images", m.Name, in, ds.Name, ds.C, ds.H, ds.W)
	}
	_, sample, err := ds.Split(min(float64(TaylorSamples)/float64(ds.N), 0.5), seed+1)
	if err != nil {
		return prune.Taylor{}, fmt.Errorf("taylor criterion: %w", err)
	}
	_, grads, err := Gradients(m, sample.Images, sample.Labels, sample.N)
	if err != nil {
		return prune.Taylor{}, fmt.Errorf("taylor criterion: %w", err)
	}
	return prune.Taylor{Grads: grads}, nil
}
