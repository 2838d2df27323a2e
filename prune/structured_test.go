package prune

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"strconv"
	"strings"
	"testing"

	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/nn/zoo"
)

var mnist = nn.Shape{C: 1, H: 28, W: 28}

func build(t *testing.T, name string) *nn.Model {
	t.Helper()
	m, err := zoo.Build(name, mnist, 10, 1)
	if err != nil {
		t.Fatal(err)
	}
	randomizeBN(m, 2)
	return m
}

// randomizeBN gives batch norms non-trivial parameters so slicing mistakes show.
func randomizeBN(m *nn.Model, seed int64) {
	rng := rand.New(rand.NewSource(seed))
	for _, l := range m.Layers {
		if l.Kind == nn.BatchNorm {
			for c := range l.Gamma {
				l.Gamma[c] = 0.5 + rng.Float32()
				l.Beta[c] = rng.Float32() - 0.5
				l.Mean[c] = rng.Float32() - 0.5
				l.Var[c] = 0.5 + rng.Float32()
			}
		}
		for i := range l.Bias {
			l.Bias[i] = rng.Float32() - 0.5
		}
	}
}

func forward(t *testing.T, m *nn.Model, x []float32, n int) []float32 {
	t.Helper()
	ex, err := nn.NewExecutor(m, n, nn.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	out, err := ex.Forward(x)
	if err != nil {
		t.Fatal(err)
	}
	return append([]float32(nil), out...)
}

func input(n int, seed int64) []float32 {
	rng := rand.New(rand.NewSource(seed))
	x := make([]float32, n*mnist.Size())
	for i := range x {
		x[i] = rng.Float32()
	}
	return x
}

func encode(t *testing.T, m *nn.Model) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := nn.Encode(&b, m); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestGroups(t *testing.T) {
	tests := []struct {
		model string
		want  []string // name:size[:producers]
	}{
		{"mlp", []string{"fc1:300", "fc2:100"}},
		{"lenet5", []string{"conv1:6", "conv2:16", "fc1:120", "fc2:84"}},
		{"vgg-small", []string{"conv1:32", "conv2:32", "conv3:64", "conv4:64", "fc1:128"}},
		{"resnet-small", []string{
			"stem:16:stem,layer1.conv2", "layer1.conv1:16", "layer2.conv1:32",
			"layer2.conv2:32:layer2.conv2,layer2.down", "layer3.conv1:64",
			"layer3.conv2:64:layer3.conv2,layer3.down"}},
		{"mobilenet-small", []string{"stem:16", "block1.pw:32", "block2.pw:64", "block3.pw:64", "block4.pw:128"}},
	}
	for _, tc := range tests {
		t.Run(tc.model, func(t *testing.T) {
			gs, err := Groups(build(t, tc.model))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, g := range gs {
				s := g.Name + ":" + itoa(g.Size)
				if len(g.Producers) > 1 {
					s += ":" + strings.Join(g.Producers, ",")
				}
				got = append(got, s)
			}
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Errorf("groups\n got %v\nwant %v", got, tc.want)
			}
		})
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestZeroPlanIsIdentity(t *testing.T) {
	for _, name := range zoo.Names {
		t.Run(name, func(t *testing.T) {
			m := build(t, name)
			gs, _ := Groups(m)
			p, err := Structured(m, Uniform(gs, 0), L1{})
			if err != nil {
				t.Fatal(err)
			}
			x := input(2, 3)
			a, b := forward(t, m, x, 2), forward(t, p, x, 2)
			for i := range a {
				if a[i] != b[i] {
					t.Fatalf("output %d: %v != %v", i, a[i], b[i])
				}
			}
			if !bytes.Equal(encode(t, m), encode(t, p)) {
				t.Error("zero plan changed the model")
			}
		})
	}
}

// makeInert zeroes the given channels of a group so that removing them cannot change the
// output: producer filters and biases are zero, and batch norms map zero to zero.
func makeInert(m *nn.Model, g Group, drop []int) {
	for _, name := range g.Producers {
		l := m.Layer(name)
		per := len(l.Weight) / l.Out
		for _, c := range drop {
			for j := c * per; j < (c+1)*per; j++ {
				l.Weight[j] = 0
			}
			if l.Bias != nil {
				l.Bias[c] = 0
			}
		}
	}
	for _, name := range g.Carriers {
		l := m.Layer(name)
		for _, c := range drop {
			if l.Kind == nn.BatchNorm {
				l.Mean[c], l.Beta[c] = 0, 0
			}
		}
	}
}

func TestRemovingInertChannelsKeepsOutput(t *testing.T) {
	for _, name := range zoo.Names {
		t.Run(name, func(t *testing.T) {
			m := build(t, name)
			gs, err := Groups(m)
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewSource(4))
			keep := map[string][]int{}
			for _, g := range gs {
				var k, drop []int
				for c := 0; c < g.Size; c++ {
					if rng.Intn(2) == 0 || c == 0 {
						k = append(k, c)
					} else {
						drop = append(drop, c)
					}
				}
				makeInert(m, g, drop)
				keep[g.Name] = k
			}
			before := encode(t, m)
			p, err := Slice(m, keep)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(before, encode(t, m)) {
				t.Fatal("Slice modified its input")
			}
			pg, _ := Groups(p)
			for i, g := range pg {
				if g.Size != len(keep[gs[i].Name]) {
					t.Errorf("group %s: size %d, want %d", g.Name, g.Size, len(keep[gs[i].Name]))
				}
			}
			x := input(3, 5)
			a, b := forward(t, m, x, 3), forward(t, p, x, 3)
			for i := range a {
				if d := math.Abs(float64(a[i] - b[i])); d > 1e-6*math.Max(1, math.Abs(float64(a[i]))) {
					t.Fatalf("output %d: %v vs %v (diff %g)", i, a[i], b[i], d)
				}
			}
		})
	}
}

func TestClosedFormSizes(t *testing.T) {
	m := build(t, "vgg-small")
	gs, _ := Groups(m)
	p, err := Structured(m, Uniform(gs, 0.5), L1{})
	if err != nil {
		t.Fatal(err)
	}
	// Widths 16-16-32-32, FC 64.
	want := 16*9 + 2*16 + 16*16*9 + 2*16 + 32*16*9 + 2*32 + 32*32*9 + 2*32 + 32*49*64 + 64 + 64*10 + 10
	wantMACs := int64(28*28*16*9 + 28*28*16*16*9 + 14*14*32*16*9 + 14*14*32*32*9 + 32*49*64 + 64*10)
	params, macs, err := p.Totals()
	if err != nil {
		t.Fatal(err)
	}
	if params != want || macs != wantMACs {
		t.Errorf("params %d macs %d, want %d %d", params, macs, want, wantMACs)
	}
	for _, tc := range []struct {
		size  int
		ratio float64
		keep  int
	}{{32, 0.5, 16}, {6, 0.5, 3}, {6, 0.99, 1}, {10, 0.25, 8}, {10, 0.3, 7}, {1, 0.9, 1}, {84, 0.75, 21}} {
		if k := Keep(tc.size, tc.ratio); k != tc.keep {
			t.Errorf("Keep(%d, %v) = %d, want %d", tc.size, tc.ratio, k, tc.keep)
		}
	}
}

func TestStructuredDeterministic(t *testing.T) {
	m := build(t, "resnet-small")
	gs, _ := Groups(m)
	plan := Uniform(gs, 0.4)
	for _, c := range []Criterion{L1{}, L2{}, BNScale{}, Random{Seed: 9}} {
		a, err := Structured(m, plan, c)
		if err != nil {
			t.Fatal(c.Name(), err)
		}
		b, _ := Structured(m, plan, c)
		if !bytes.Equal(encode(t, a), encode(t, b)) {
			t.Errorf("%s: same inputs gave different models", c.Name())
		}
	}
	a, _ := Structured(m, plan, Random{Seed: 1})
	b, _ := Structured(m, plan, Random{Seed: 2})
	if bytes.Equal(encode(t, a), encode(t, b)) {
		t.Error("random criterion ignores its seed")
	}
}

func TestBadPlans(t *testing.T) {
	m := build(t, "lenet5")
	tests := []struct {
		name string
		plan Plan
		want string
	}{
		{"unknown group", Plan{"conv9": 0.5}, `unknown group "conv9"`},
		{"negative", Plan{"conv1": -0.1}, "outside [0, 1)"},
		{"one", Plan{"conv1": 1}, "outside [0, 1)"},
		{"nan", Plan{"fc1": math.NaN()}, "outside [0, 1)"},
		{"output layer", Plan{"fc3": 0.5}, `unknown group "fc3"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Structured(m, tc.plan, L1{})
			if err == nil || !errors.Is(err, ErrPlan) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want ErrPlan containing %q", err, tc.want)
			}
		})
	}
	if _, err := Slice(m, map[string][]int{"conv1": {}}); err == nil || !strings.Contains(err.Error(), "pruned to nothing") {
		t.Errorf("empty keep: err = %v", err)
	}
	if _, err := Slice(m, map[string][]int{"conv1": {2, 1}}); err == nil || !strings.Contains(err.Error(), "sorted") {
		t.Errorf("unsorted keep: err = %v", err)
	}
}

func TestCriteriaPreferLargeFilters(t *testing.T) {
	m := build(t, "vgg-small")
	gs, _ := Groups(m)
	g := gs[0]
	l := m.Layer(g.Producers[0])
	per := len(l.Weight) / l.Out
	for j := 0; j < per; j++ {
		l.Weight[5*per+j] *= 100 // channel 5 has the largest filter
		l.Weight[7*per+j] = 0    // channel 7 the smallest
	}
	bn := m.Layer(g.Carriers[0])
	bn.Gamma[5], bn.Gamma[7] = 100, 0
	for _, c := range []Criterion{L1{}, L2{}, BNScale{}} {
		k, err := Select(m, Plan{g.Name: 0.9}, c)
		if err != nil {
			t.Fatal(err)
		}
		has := map[int]bool{}
		for _, i := range k[g.Name] {
			has[i] = true
		}
		if !has[5] || has[7] {
			t.Errorf("%s kept %v: want channel 5 and not 7", c.Name(), k[g.Name])
		}
	}
}

func TestTaylor(t *testing.T) {
	m := build(t, "lenet5")
	gs, _ := Groups(m)
	g := gs[0] // conv1: no batch norm, weight-based Taylor
	l := m.Layer("conv1")
	grads := map[string][]float32{"conv1.weight": make([]float32, len(l.Weight))}
	per := len(l.Weight) / l.Out
	for j := 0; j < per; j++ {
		grads["conv1.weight"][2*per+j] = 10 * l.Weight[2*per+j] // channel 2 matters most
	}
	k, err := Select(m, Plan{g.Name: 0.8}, Taylor{Grads: grads})
	if err != nil {
		t.Fatal(err)
	}
	// Channel 2 scores highest; the others tie at zero and the lowest index wins.
	if fmt.Sprint(k[g.Name]) != "[0 2]" {
		t.Errorf("kept %v, want [0 2]", k[g.Name])
	}
	if _, err := Select(m, Plan{"conv2": 0.5}, Taylor{Grads: grads}); err == nil || !strings.Contains(err.Error(), "no weight gradients for layer \"conv2\"") {
		t.Errorf("missing gradients: %v", err)
	}
	// With batch norm, the scale and shift gradients decide.
	v := build(t, "vgg-small")
	bn := v.Layer("conv1.bn")
	gg := make([]float32, 32)
	gb := make([]float32, 32)
	gg[7] = 5
	k, err = Select(v, Plan{"conv1": 0.9}, Taylor{Grads: map[string][]float32{"conv1.bn.gamma": gg, "conv1.bn.beta": gb}})
	if err != nil {
		t.Fatal(err)
	}
	has := false
	for _, c := range k["conv1"] {
		has = has || c == 7
	}
	if !has || bn.Gamma[7] == 0 {
		t.Errorf("kept %v, want channel 7", k["conv1"])
	}
}

func TestPlanShape(t *testing.T) {
	gs := []Group{{Name: "a", Size: 32}, {Name: "b", Size: 6}, {Name: "c", Size: 10}}
	tests := []struct {
		plan              Plan
		minKeep, multiple int
		keep              map[string]int
	}{
		{Plan{"a": 0.5, "b": 0.5}, 1, 1, map[string]int{"a": 16, "b": 3}},
		{Plan{"a": 0.6, "b": 0.9}, 1, 1, map[string]int{"a": 13, "b": 1}},
		{Plan{"a": 0.6, "b": 0.9}, 4, 1, map[string]int{"a": 13, "b": 4}},
		{Plan{"a": 0.6, "b": 0.9}, 1, 4, map[string]int{"a": 16, "b": 4}},
		{Plan{"a": 0.6, "b": 0.2}, 1, 8, map[string]int{"a": 16, "b": 6}}, // never more than the group has
		{Plan{"a": 0.95, "c": 0.55}, 2, 4, map[string]int{"a": 4, "c": 8}},
		{Plan{"zzz": 0.5}, 4, 4, map[string]int{}},
	}
	for _, tc := range tests {
		got := tc.plan.Shape(gs, tc.minKeep, tc.multiple)
		if len(got) != len(tc.plan) {
			t.Errorf("Shape(%v) = %v: groups changed", tc.plan, got)
		}
		for _, g := range gs {
			want, ok := tc.keep[g.Name]
			if !ok {
				continue
			}
			if k := Keep(g.Size, got[g.Name]); k != want {
				t.Errorf("Shape(%v, %d, %d): group %s keeps %d channels, want %d (ratio %v)", tc.plan, tc.minKeep, tc.multiple, g.Name, k, want, got[g.Name])
			}
		}
		if tc.plan["zzz"] != got["zzz"] {
			t.Errorf("unknown group changed: %v", got)
		}
	}
}
