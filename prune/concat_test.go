package prune

import (
	"math"
	"strings"
	"testing"

	"github.com/autoprune/autoprune/nn"
)

// concatNet joins branches twice: cat(a, b, a) through a batch norm and a depthwise
// convolution into head, then cat(head, b) through a pooling and a flatten into fc. Batch
// norm shifts are zero and the depthwise convolution has no bias, so a channel whose
// producer is zeroed stays zero all the way to its consumers.
func concatNet(t *testing.T) *nn.Model {
	t.Helper()
	m := &nn.Model{Name: "inception", Input: nn.Shape{C: 1, H: 8, W: 8}, Layers: []*nn.Layer{
		{Name: "stem", Kind: nn.Conv2D, Inputs: []string{nn.InputName}, In: 1, Out: 8, Kernel: 3, Pad: 1, HasBias: true},
		{Name: "stem.relu", Kind: nn.ReLU, Inputs: []string{"stem"}},
		{Name: "a", Kind: nn.Conv2D, Inputs: []string{"stem.relu"}, In: 8, Out: 4, Kernel: 1, HasBias: true},
		{Name: "b", Kind: nn.Conv2D, Inputs: []string{"stem.relu"}, In: 8, Out: 6, Kernel: 3, Pad: 1, HasBias: true},
		{Name: "cat", Kind: nn.Concat, Inputs: []string{"a", "b", "a"}},
		{Name: "cat.bn", Kind: nn.BatchNorm, Inputs: []string{"cat"}},
		{Name: "cat.relu", Kind: nn.ReLU, Inputs: []string{"cat.bn"}},
		{Name: "dw", Kind: nn.Conv2D, Inputs: []string{"cat.relu"}, In: 14, Out: 14, Groups: 14, Kernel: 3, Pad: 1},
		{Name: "head", Kind: nn.Conv2D, Inputs: []string{"dw"}, In: 14, Out: 8, Kernel: 1, HasBias: true},
		{Name: "head.relu", Kind: nn.ReLU, Inputs: []string{"head"}},
		{Name: "cat2", Kind: nn.Concat, Inputs: []string{"head.relu", "b"}},
		{Name: "pool", Kind: nn.MaxPool, Inputs: []string{"cat2"}, Kernel: 2, Stride: 2},
		{Name: "flat", Kind: nn.Flatten, Inputs: []string{"pool"}},
		{Name: "fc", Kind: nn.Linear, Inputs: []string{"flat"}, In: 14 * 16, Out: 10, HasBias: true},
	}}
	if err := m.Init(1); err != nil {
		t.Fatal(err)
	}
	bn := m.Layer("cat.bn")
	for c := range bn.Gamma {
		bn.Gamma[c] = 0.5 + 0.1*float32(c)
		bn.Var[c] = 1 + 0.2*float32(c)
		bn.Beta[c], bn.Mean[c] = 0, 0
	}
	return m
}

// Pruning through concatenations: every branch is its own group, the layers after a
// concatenation are sliced run by run (batch norm, depthwise, a 1x1 convolution, a linear
// layer after a flatten), and the pruned model computes what the dense model computes with
// the removed channels' filters zeroed.
func TestPruneThroughConcat(t *testing.T) {
	m := concatNet(t)
	gs, err := Groups(m)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, g := range gs {
		names = append(names, g.String())
	}
	want := "stem (8 channels: stem),a (4 channels: a),b (6 channels: b),head (8 channels: head)"
	if strings.Join(names, ",") != want {
		t.Fatalf("groups\n %s\nwant\n %s", strings.Join(names, ","), want)
	}
	for _, g := range gs {
		if g.Name != "stem" && len(g.Carriers) != 0 {
			t.Errorf("group %s: carriers %v; a batch norm after a concatenation spans several groups", g.Name, g.Carriers)
		}
	}
	if whole, err := KeptWhole(m); err != nil || len(whole) != 0 {
		t.Errorf("KeptWhole: %q, %v", whole, err)
	}

	plan := Plan{"stem": 0.5, "a": 0.5, "b": 0.5, "head": 0.25}
	keep, err := Select(m, plan, L2{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := Slice(m, keep)
	if err != nil {
		t.Fatal(err)
	}
	// cat: a (2) + b (3) + a (2) = 7 channels; cat2: head (6) + b (3) = 9.
	for _, c := range []struct {
		layer   string
		in, out int
	}{{"a", 4, 2}, {"b", 4, 3}, {"dw", 7, 7}, {"head", 7, 6}, {"fc", 9 * 16, 10}} {
		if l := p.Layer(c.layer); l.In != c.in || l.Out != c.out {
			t.Errorf("%s: %d -> %d, want %d -> %d", c.layer, l.In, l.Out, c.in, c.out)
		}
	}
	if n := len(p.Layer("cat.bn").Gamma); n != 7 {
		t.Errorf("cat.bn has %d channels, want 7", n)
	}

	// The reference: the dense model with the removed filters (and biases) zeroed.
	ref := m.Clone()
	for name, k := range keep {
		l := ref.Layer(name)
		per := len(l.Weight) / l.Out
		kept := map[int]bool{}
		for _, c := range k {
			kept[c] = true
		}
		for c := 0; c < l.Out; c++ {
			if kept[c] {
				continue
			}
			clear(l.Weight[c*per : (c+1)*per])
			l.Bias[c] = 0
		}
	}
	x := make([]float32, 3*64)
	for i := range x {
		x[i] = float32(math.Sin(float64(i) * 0.37))
	}
	got, want2 := forward(t, p, x, 3), forward(t, ref, x, 3)
	for i := range got {
		if d := math.Abs(float64(got[i] - want2[i])); d > 1e-5 {
			t.Fatalf("output %d: pruned %v, zeroed dense %v", i, got[i], want2[i])
		}
	}
}

// A concatenation added to a tensor that is not joined the same way cannot be followed:
// both sides are kept whole, and said so; the groups elsewhere still prune.
func TestConcatAddedToPlainKeptWhole(t *testing.T) {
	m := &nn.Model{Name: "mixed", Input: nn.Shape{C: 1, H: 8, W: 8}, Layers: []*nn.Layer{
		{Name: "stem", Kind: nn.Conv2D, Inputs: []string{nn.InputName}, In: 1, Out: 8, Kernel: 3, Pad: 1},
		{Name: "a", Kind: nn.Conv2D, Inputs: []string{"stem"}, In: 8, Out: 4, Kernel: 1},
		{Name: "b", Kind: nn.Conv2D, Inputs: []string{"stem"}, In: 8, Out: 4, Kernel: 1},
		{Name: "cat", Kind: nn.Concat, Inputs: []string{"a", "b"}},
		{Name: "c", Kind: nn.Conv2D, Inputs: []string{"stem"}, In: 8, Out: 8, Kernel: 1},
		{Name: "sum", Kind: nn.Add, Inputs: []string{"cat", "c"}},
		{Name: "gap", Kind: nn.GlobalAvgPool, Inputs: []string{"sum"}},
		{Name: "fc", Kind: nn.Linear, Inputs: []string{"gap"}, In: 8, Out: 10},
	}}
	if err := m.Init(1); err != nil {
		t.Fatal(err)
	}
	gs, err := Groups(m)
	if err != nil {
		t.Fatal(err)
	}
	if len(gs) != 1 || gs[0].Name != "stem" {
		t.Fatalf("groups %v, want stem only", gs)
	}
	whole, err := KeptWhole(m)
	if err != nil || len(whole) != 1 || !strings.Contains(whole[0], "add sum: the channels of cat, c are kept whole") {
		t.Errorf("KeptWhole: %q, %v", whole, err)
	}
	p, err := Structured(m, Uniform(gs, 0.5), L1{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Layer("stem").Out != 4 || p.Layer("a").In != 4 || p.Layer("c").In != 4 || p.Layer("fc").In != 8 {
		t.Errorf("pruned widths: stem %d, a in %d, c in %d, fc in %d", p.Layer("stem").Out, p.Layer("a").In, p.Layer("c").In, p.Layer("fc").In)
	}
	forward(t, p, make([]float32, 64), 1)
}
