package prune_test

import (
	"fmt"

	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/nn/zoo"
	"github.com/autoprune/autoprune/prune"
)

// Structured pruning by hand: find the prunable groups of a model, remove half the
// channels of every group by L1 norm, and compare the sizes. The pruned model is a dense
// model with fewer channels, so it runs faster on any hardware.
func ExampleStructured() {
	m, err := zoo.Build("vgg-small", nn.Shape{C: 1, H: 28, W: 28}, 10, 1)
	if err != nil {
		panic(err)
	}
	groups, err := prune.Groups(m)
	if err != nil {
		panic(err)
	}
	small, err := prune.Structured(m, prune.Uniform(groups, 0.5), prune.L1{})
	if err != nil {
		panic(err)
	}
	for _, g := range groups {
		fmt.Printf("%s: %d -> %d channels\n", g.Name, g.Size, small.Layer(g.Producers[0]).Out)
	}
	_, before, _ := m.Totals()
	_, after, _ := small.Totals()
	fmt.Printf("MACs: %.2f of the dense model\n", float64(after)/float64(before))
	// Output:
	// conv1: 32 -> 16 channels
	// conv2: 32 -> 16 channels
	// conv3: 64 -> 32 channels
	// conv4: 64 -> 32 channels
	// fc1: 128 -> 64 channels
	// MACs: 0.25 of the dense model
}
