package prune

import (
	"strings"
	"testing"

	"github.com/autoprune/autoprune/nn"
)

// Channels that meet in a concatenation are kept whole, and said so; the groups around it
// still prune, and the pruned model runs.
func TestConcatKeptWhole(t *testing.T) {
	m := &nn.Model{Name: "inception", Input: nn.Shape{C: 1, H: 8, W: 8}, Layers: []*nn.Layer{
		{Name: "stem", Kind: nn.Conv2D, Inputs: []string{nn.InputName}, In: 1, Out: 8, Kernel: 3, Pad: 1},
		{Name: "stem.relu", Kind: nn.ReLU, Inputs: []string{"stem"}},
		{Name: "a", Kind: nn.Conv2D, Inputs: []string{"stem.relu"}, In: 8, Out: 4, Kernel: 1},
		{Name: "b", Kind: nn.Conv2D, Inputs: []string{"stem.relu"}, In: 8, Out: 4, Kernel: 3, Pad: 1},
		{Name: "cat", Kind: nn.Concat, Inputs: []string{"a", "b"}},
		{Name: "head", Kind: nn.Conv2D, Inputs: []string{"cat"}, In: 8, Out: 16, Kernel: 3, Pad: 1},
		{Name: "head.relu", Kind: nn.ReLU, Inputs: []string{"head"}},
		{Name: "gap", Kind: nn.GlobalAvgPool, Inputs: []string{"head.relu"}},
		{Name: "fc", Kind: nn.Linear, Inputs: []string{"gap"}, In: 16, Out: 10},
	}}
	if err := m.Init(1); err != nil {
		t.Fatal(err)
	}
	gs, err := Groups(m)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, g := range gs {
		names = append(names, g.Name)
	}
	if strings.Join(names, ",") != "stem,head" {
		t.Fatalf("groups %v, want stem and head (a and b feed the concatenation)", names)
	}
	whole, err := KeptWhole(m)
	if err != nil || len(whole) != 1 || !strings.Contains(whole[0], "concat cat: the channels of a, b") {
		t.Errorf("KeptWhole: %q, %v", whole, err)
	}
	p, err := Structured(m, Uniform(gs, 0.5), L1{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Layer("stem").Out != 4 || p.Layer("a").In != 4 || p.Layer("head").Out != 8 || p.Layer("head").In != 8 || p.Layer("fc").In != 8 {
		t.Errorf("pruned widths: stem %d, a in %d, head %d->%d, fc in %d", p.Layer("stem").Out, p.Layer("a").In, p.Layer("head").In, p.Layer("head").Out, p.Layer("fc").In)
	}
	e, err := nn.NewExecutor(p, 2, nn.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Forward(make([]float32, 2*64)); err != nil {
		t.Fatal(err)
	}
}
