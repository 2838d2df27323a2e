package prune

import (
	"bytes"
	"math"
	"testing"
)

func TestMagnitude(t *testing.T) {
	m := build(t, "lenet5")
	before := encode(t, m)
	for _, scope := range []Scope{PerLayer, Global} {
		p, err := Magnitude(m, 0.9, scope)
		if err != nil {
			t.Fatal(err)
		}
		per, total := Sparsity(p)
		if math.Abs(total-0.9) > 0.01 {
			t.Errorf("%s: sparsity %.4f, want 0.90", scope, total)
		}
		for _, s := range per {
			l := p.Layer(s.Layer)
			frac := float64(s.Masked) / float64(s.Weights)
			if scope == PerLayer && math.Abs(frac-0.9) > 1.0/float64(s.Weights)+1e-9 {
				t.Errorf("%s: layer %s sparsity %.4f", scope, s.Layer, frac)
			}
			// Every masked weight is zero, and no kept weight is smaller than a pruned one
			// had been (checked against the original).
			orig := m.Layer(s.Layer)
			var maxPruned, minKept float64 = 0, math.Inf(1)
			for i, k := range l.Mask {
				w := math.Abs(float64(orig.Weight[i]))
				if k == 0 {
					if l.Weight[i] != 0 {
						t.Fatalf("%s: masked weight %s[%d] = %v", scope, s.Layer, i, l.Weight[i])
					}
					maxPruned = math.Max(maxPruned, w)
				} else {
					minKept = math.Min(minKept, w)
				}
			}
			if scope == PerLayer && maxPruned > minKept {
				t.Errorf("%s: layer %s pruned |w|=%g but kept |w|=%g", scope, s.Layer, maxPruned, minKept)
			}
		}
		// Masks only grow.
		q, err := Magnitude(p, 0.5, scope)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range q.Layers {
			for i, k := range l.Mask {
				if k == 1 && p.Layer(l.Name).Mask[i] == 0 {
					t.Fatalf("%s: weight %s[%d] came back", scope, l.Name, i)
				}
			}
		}
	}
	if !bytes.Equal(before, encode(t, m)) {
		t.Error("Magnitude modified its input")
	}
	for _, bad := range []float64{-0.1, 1, math.NaN()} {
		if _, err := Magnitude(m, bad, Global); err == nil {
			t.Errorf("sparsity %v: no error", bad)
		}
	}
	if _, err := Magnitude(m, 0.5, "neuron"); err == nil {
		t.Error("unknown scope: no error")
	}
}

// Masks do not change the shapes, so a dense forward pass does the same work.
func TestMagnitudeKeepsShapes(t *testing.T) {
	m := build(t, "vgg-small")
	p, err := Magnitude(m, 0.9, Global)
	if err != nil {
		t.Fatal(err)
	}
	if m.Hash() != p.Hash() {
		t.Error("unstructured pruning changed the architecture")
	}
	a, _, _ := m.Totals()
	b, _, _ := p.Totals()
	if a != b {
		t.Errorf("params %d -> %d", a, b)
	}
}

func TestSchedules(t *testing.T) {
	agp := Schedule{Kind: "agp", Initial: 0, Final: 0.9, Start: 100, End: 1100, Events: 10}
	if err := agp.Validate(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		s    Schedule
		step int
		want float64
	}{
		{agp, 0, 0},
		{agp, 199, 0},
		{agp, 200, 0.9 - 0.9*math.Pow(0.9, 3)},
		{agp, 650, 0.9 - 0.9*math.Pow(0.5, 3)},
		{agp, 1100, 0.9},
		{agp, 5000, 0.9},
		{Schedule{Kind: "iterative", Final: 0.8, Start: 0, End: 400, Events: 4}, 100, 0.2},
		{Schedule{Kind: "iterative", Final: 0.8, Start: 0, End: 400, Events: 4}, 399, 0.6},
		{Schedule{Kind: "oneshot", Final: 0.7, Start: 50, End: 50}, 49, 0},
		{Schedule{Kind: "oneshot", Final: 0.7, Start: 50, End: 50}, 50, 0.7},
	}
	for _, tc := range tests {
		if got := tc.s.Target(tc.step); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("%s Target(%d) = %v, want %v", tc.s.Kind, tc.step, got, tc.want)
		}
	}
	// AGP prunes fastest early: increments shrink.
	prev, prevInc := 0.0, math.Inf(1)
	events := 0
	for step := 0; step <= 1100; step++ {
		if ok, v := agp.PruneAt(step); ok {
			events++
			if inc := v - prev; inc > prevInc+1e-12 {
				t.Errorf("step %d: increment %v grew from %v", step, inc, prevInc)
			} else {
				prevInc = inc
			}
			prev = v
		}
	}
	if events != 10 || math.Abs(prev-0.9) > 1e-12 {
		t.Errorf("agp: %d events ending at %v, want 10 ending at 0.9", events, prev)
	}
	for _, bad := range []Schedule{
		{Kind: "linear", Final: 0.5},
		{Kind: "agp", Final: 1},
		{Kind: "agp", Initial: 0.5, Final: 0.2},
		{Kind: "agp", Final: 0.5, Start: 10, End: 5},
	} {
		if bad.Validate() == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}

func TestGradual(t *testing.T) {
	m := build(t, "vgg-small")
	s := Schedule{Kind: "iterative", Final: 0.5, Start: 0, End: 40, Events: 2}
	g := &Gradual{Schedule: s, Structured: true}
	cur := m
	var err error
	for step := 1; step <= 40; step++ {
		if g.At(step) {
			if cur, err = g.Apply(step, cur); err != nil {
				t.Fatal(err)
			}
		}
	}
	gs, _ := Groups(cur)
	for _, gr := range gs {
		orig := map[string]int{"conv1": 32, "conv2": 32, "conv3": 64, "conv4": 64, "fc1": 128}[gr.Name]
		if gr.Size != Keep(orig, 0.5) {
			t.Errorf("group %s: %d channels after gradual pruning to 0.5 of %d", gr.Name, gr.Size, orig)
		}
	}
	u := &Gradual{Schedule: Schedule{Kind: "agp", Final: 0.8, Start: 0, End: 100, Events: 5}}
	cur = m
	for step := 1; step <= 100; step++ {
		if u.At(step) {
			if cur, err = u.Apply(step, cur); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, sp := Sparsity(cur); math.Abs(sp-0.8) > 0.01 {
		t.Errorf("unstructured gradual sparsity %.3f, want 0.8", sp)
	}
}
