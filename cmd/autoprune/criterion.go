package main

import (
	"fmt"
	"strings"

	"github.com/autoprune/autoprune/data"
	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/prune"
	"github.com/autoprune/autoprune/train"
)

// taylorSamples is how many training samples the Taylor criterion's gradients average over.
const taylorSamples = 256

// criterionHelp lists the criteria for flag help texts.
var criterionHelp = strings.Join(prune.AllCriteria, ", ")

// newCriterion returns the named criterion. "taylor" is data-driven: it needs the gradients
// of the loss on a few training batches, computed here on the given dataset.
func newCriterion(name string, seed int64, m *nn.Model, dataset, dir string) (prune.Criterion, error) {
	if name != "taylor" {
		return prune.NewCriterion(name, seed)
	}
	full, _, err := data.Load(dataset, dir)
	if err != nil {
		return nil, err
	}
	// A seeded sample of the training set, like the validation split's complement; at most
	// half of a small one.
	_, sample, err := full.Split(min(float64(taylorSamples)/float64(full.N), 0.5), seed+1)
	if err != nil {
		return nil, err
	}
	if in := m.Input; in.C != sample.C || in.H != sample.H || in.W != sample.W {
		return nil, fmt.Errorf("taylor criterion: model %q expects %v inputs, dataset %s has %dx%dx%d", m.Name, in, dataset, sample.C, sample.H, sample.W)
	}
	_, grads, err := train.Gradients(m, sample.Images, sample.Labels, sample.N)
	if err != nil {
		return nil, fmt.Errorf("taylor criterion: %w", err)
	}
	return prune.Taylor{Grads: grads}, nil
}
