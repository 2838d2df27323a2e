package eval

import (
	"testing"

	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/nn/zoo"
	"github.com/autoprune/autoprune/prune"
)

// Every layer shape of 10 random per-group plans is among the profiled variants.
func TestWidthVariantsCoverRandomPlans(t *testing.T) {
	m, err := zoo.Build("vgg-small", nn.Shape{C: 1, H: 28, W: 28}, 10, 1)
	if err != nil {
		t.Fatal(err)
	}
	gs, err := prune.Groups(m)
	if err != nil {
		t.Fatal(err)
	}
	ratios := []float64{0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9}
	layers, err := widthVariants(m, gs, ratios, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	convs := 0
	for _, l := range layers {
		sig := LayerSignature(l.Layers[0], l.Input, 1, 1)
		if have[sig] {
			t.Errorf("signature %q twice", sig)
		}
		have[sig] = true
		if l.Layers[0].Kind == "conv2d" {
			convs++
		}
	}
	// conv1 reads the fixed input: 10 widths; conv2, conv3 and conv4 sit between two groups:
	// 10 x 10 each, but conv3 and conv4 both run at 14x14 and share the 50 shapes whose
	// input width is one of the 5 that a 32- and a 64-channel group both can have.
	if want := 10 + 100 + 2*100 - 50; convs != want {
		t.Errorf("%d convolution shapes, want %d", convs, want)
	}
	plans, err := randomProfilePlans(m, gs, ratios, 10, 3)
	if err != nil {
		t.Fatal(err)
	}
	table := NewLUT(ThisDevice(), 1, 1)
	for _, p := range plans {
		sigs, err := table.Signatures(p)
		if err != nil {
			t.Fatal(err)
		}
		for i, s := range sigs {
			if !have[s] {
				t.Errorf("plan %s: layer %s (%s) not profiled", p.Name, p.Layers[i].Name, s)
			}
		}
	}
}
