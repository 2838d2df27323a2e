package zoo

import (
	"testing"

	"github.com/autoprune/autoprune/nn"
)

var mnist = nn.Shape{C: 1, H: 28, W: 28}

func TestBuildAll(t *testing.T) {
	// Parameter counts in closed form.
	want := map[string]int{
		"mlp":    784*300 + 300 + 300*100 + 100 + 100*10 + 10,
		"lenet5": 6*25 + 6 + 16*6*25 + 16 + 400*120 + 120 + 120*84 + 84 + 84*10 + 10,
		"vgg-small": 32*9 + 2*32 + 32*32*9 + 2*32 + 64*32*9 + 2*64 + 64*64*9 + 2*64 +
			3136*128 + 128 + 128*10 + 10,
	}
	for _, name := range Names {
		t.Run(name, func(t *testing.T) {
			m, err := Build(name, mnist, 10, 1)
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Validate(); err != nil {
				t.Fatal(err)
			}
			shapes, _ := m.Shapes()
			if got := shapes[len(shapes)-1]; got != (nn.Shape{C: 10, H: 1, W: 1}) {
				t.Errorf("output shape %v, want 10x1x1", got)
			}
			params, macs, err := m.Totals()
			if err != nil {
				t.Fatal(err)
			}
			if w, ok := want[name]; ok && params != w {
				t.Errorf("params = %d, want %d", params, w)
			}
			if macs <= 0 {
				t.Errorf("macs = %d", macs)
			}
			if Describe[name] == "" {
				t.Errorf("no description")
			}
			t.Logf("%s: %d layers, %d params, %d MACs", name, len(m.Layers), params, macs)
		})
	}
}

func TestBuildDeterministic(t *testing.T) {
	a, _ := Build("lenet5", mnist, 10, 7)
	b, _ := Build("lenet5", mnist, 10, 7)
	c, _ := Build("lenet5", mnist, 10, 8)
	if a.Layers[0].Weight[3] != b.Layers[0].Weight[3] {
		t.Error("same seed gave different weights")
	}
	if a.Layers[0].Weight[3] == c.Layers[0].Weight[3] {
		t.Error("different seeds gave the same weights")
	}
	if a.Hash() != c.Hash() {
		t.Error("hash depends on weights")
	}
	v, _ := Build("vgg-small", mnist, 10, 7)
	if a.Hash() == v.Hash() {
		t.Error("different architectures share a hash")
	}
}

func TestBuildErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		classes int
	}{{"nope", 10}, {"mlp", 1}} {
		if _, err := Build(tc.name, mnist, tc.classes, 1); err == nil {
			t.Errorf("Build(%q, %d): no error", tc.name, tc.classes)
		}
	}
}
