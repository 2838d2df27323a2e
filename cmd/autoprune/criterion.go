package main

import (
	"strings"

	"github.com/autoprune/autoprune/data"
	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/prune"
	"github.com/autoprune/autoprune/train"
)

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
	return train.TaylorCriterion(m, full, seed)
}
