package nn_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"runtime"
	"testing"
	"time"

	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/nn/zoo"
)

// ---- naive reference: direct nested loops with float64 accumulation ----

// execRef runs m on batch samples of x and returns every layer's output by name.
func execRef(t *testing.T, m *nn.Model, batch int, x []float32) map[string][]float64 {
	t.Helper()
	shapes, err := m.Shapes()
	if err != nil {
		t.Fatal(err)
	}
	vals := map[string][]float64{}
	shapeOf := map[string]nn.Shape{nn.InputName: m.Input}
	in0 := make([]float64, len(x))
	for i, v := range x {
		in0[i] = float64(v)
	}
	vals[nn.InputName] = in0
	for li, l := range m.Layers {
		is := shapeOf[l.Inputs[0]]
		os := shapes[li]
		src := vals[l.Inputs[0]]
		out := make([]float64, batch*os.Size())
		for n := 0; n < batch; n++ {
			xi := src[n*is.Size() : (n+1)*is.Size()]
			yo := out[n*os.Size() : (n+1)*os.Size()]
			switch l.Kind {
			case nn.Conv2D:
				execRefConv(l, is, os, xi, yo)
			case nn.BatchNorm:
				hw := is.H * is.W
				for c := 0; c < is.C; c++ {
					for i := 0; i < hw; i++ {
						v := xi[c*hw+i]
						yo[c*hw+i] = float64(l.Gamma[c])*(v-float64(l.Mean[c]))/
							math.Sqrt(float64(l.Var[c])+float64(l.EpsOrDefault())) + float64(l.Beta[c])
					}
				}
			case nn.ReLU:
				for i, v := range xi {
					yo[i] = math.Max(v, 0)
				}
			case nn.ReLU6:
				for i, v := range xi {
					yo[i] = math.Min(math.Max(v, 0), 6)
				}
			case nn.LeakyReLU:
				for i, v := range xi {
					yo[i] = v
					if v < 0 {
						yo[i] = float64(l.Slope) * v
					}
				}
			case nn.Sigmoid:
				for i, v := range xi {
					yo[i] = 1 / (1 + math.Exp(-v))
				}
			case nn.HardSigmoid:
				for i, v := range xi {
					yo[i] = math.Min(math.Max(float64(l.Slope)*v+float64(l.Offset), 0), 1)
				}
			case nn.HardSwish:
				for i, v := range xi {
					yo[i] = v * math.Min(math.Max(v/6+0.5, 0), 1)
				}
			case nn.MaxPool, nn.AvgPool:
				execRefPool(l, is, os, xi, yo)
			case nn.GlobalAvgPool:
				hw := is.H * is.W
				for c := 0; c < is.C; c++ {
					s := 0.0
					for i := 0; i < hw; i++ {
						s += xi[c*hw+i]
					}
					yo[c] = s / float64(hw)
				}
			case nn.Flatten:
				for c := 0; c < is.C; c++ {
					for h := 0; h < is.H; h++ {
						for w := 0; w < is.W; w++ {
							yo[c*is.H*is.W+h*is.W+w] = xi[(c*is.H+h)*is.W+w]
						}
					}
				}
			case nn.Linear:
				for o := 0; o < l.Out; o++ {
					s := 0.0
					if l.HasBias {
						s = float64(l.Bias[o])
					}
					for i := 0; i < l.In; i++ {
						s += xi[i] * execWeight(l, o*l.In+i)
					}
					yo[o] = s
				}
			case nn.Add:
				for _, name := range l.Inputs {
					v := vals[name][n*is.Size() : (n+1)*is.Size()]
					for i := range yo {
						yo[i] += v[i]
					}
				}
			default:
				t.Fatalf("reference: unknown kind %q", l.Kind)
			}
		}
		vals[l.Name] = out
		shapeOf[l.Name] = os
	}
	return vals
}

// execWeight returns the effective weight Weight[i]*Mask[i].
func execWeight(l *nn.Layer, i int) float64 {
	w := float64(l.Weight[i])
	if l.Mask != nil {
		w *= float64(l.Mask[i])
	}
	return w
}

func execRefConv(l *nn.Layer, is, os nn.Shape, x, y []float64) {
	g := l.GroupsOrOne()
	icg, ocg := l.In/g, l.Out/g
	k, s, p := l.Kernel, l.StrideOrOne(), l.Pad
	for oc := 0; oc < l.Out; oc++ {
		grp := oc / ocg
		for oy := 0; oy < os.H; oy++ {
			for ox := 0; ox < os.W; ox++ {
				sum := 0.0
				if l.HasBias {
					sum = float64(l.Bias[oc])
				}
				for ic := 0; ic < icg; ic++ {
					ci := grp*icg + ic
					for kh := 0; kh < k; kh++ {
						for kw := 0; kw < k; kw++ {
							ih, iw := oy*s-p+kh, ox*s-p+kw
							if ih < 0 || ih >= is.H || iw < 0 || iw >= is.W {
								continue
							}
							sum += x[(ci*is.H+ih)*is.W+iw] * execWeight(l, ((oc*icg+ic)*k+kh)*k+kw)
						}
					}
				}
				y[(oc*os.H+oy)*os.W+ox] = sum
			}
		}
	}
}

func execRefPool(l *nn.Layer, is, os nn.Shape, x, y []float64) {
	k, s, p := l.Kernel, l.StrideOrOne(), l.Pad
	for c := 0; c < is.C; c++ {
		for oy := 0; oy < os.H; oy++ {
			for ox := 0; ox < os.W; ox++ {
				acc := 0.0
				if l.Kind == nn.MaxPool {
					acc = math.Inf(-1)
				}
				for kh := 0; kh < k; kh++ {
					for kw := 0; kw < k; kw++ {
						ih, iw := oy*s-p+kh, ox*s-p+kw
						if ih < 0 || ih >= is.H || iw < 0 || iw >= is.W {
							continue // padding: -inf for max, 0 for average
						}
						v := x[(c*is.H+ih)*is.W+iw]
						if l.Kind == nn.MaxPool {
							acc = math.Max(acc, v)
						} else {
							acc += v
						}
					}
				}
				if l.Kind == nn.AvgPool {
					acc /= float64(k * k)
				}
				y[(c*os.H+oy)*os.W+ox] = acc
			}
		}
	}
}

// ---- helpers ----

// execRelErr returns max|got-want| / max|want| (the norm-wise relative error), or +Inf when got
// has a non-finite value or the wrong length.
func execRelErr(got []float32, want []float64) float64 {
	if len(got) != len(want) {
		return math.Inf(1)
	}
	var diff, scale float64
	for i, v := range got {
		g := float64(v)
		if math.IsNaN(g) || math.IsInf(g, 0) {
			return math.Inf(1)
		}
		diff = math.Max(diff, math.Abs(g-want[i]))
		scale = math.Max(scale, math.Abs(want[i]))
	}
	return diff / math.Max(scale, 1e-30)
}

func execRandVec(rng *rand.Rand, n int, scale float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64() * scale)
	}
	return v
}

// execRandomize gives every parameter of m random values: weights, biases, batch-norm
// statistics, and a random 0/1 mask on layers listed in masked.
func execRandomize(t *testing.T, m *nn.Model, seed int64, masked ...string) {
	t.Helper()
	if err := m.Init(seed); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(seed))
	for _, l := range m.Layers {
		for i := range l.Bias {
			l.Bias[i] = float32(rng.NormFloat64())
		}
		for i := range l.Gamma {
			l.Gamma[i] = float32(0.5 + rng.Float64())
			l.Beta[i] = float32(rng.NormFloat64())
			l.Mean[i] = float32(rng.NormFloat64() * 0.5)
			l.Var[i] = float32(0.5 + 1.5*rng.Float64())
		}
	}
	for _, name := range masked {
		l := m.Layer(name)
		l.Mask = make([]float32, len(l.Weight))
		for i := range l.Mask {
			if rng.Intn(3) > 0 {
				l.Mask[i] = 1
			}
		}
	}
}

// execCheckAll runs m with the executor at every batch size and thread count given and compares
// every layer's activation with the reference.
func execCheckAll(t *testing.T, m *nn.Model, batches, threads []int, tol float64) {
	t.Helper()
	for _, batch := range batches {
		rng := rand.New(rand.NewSource(int64(batch)))
		x := execRandVec(rng, batch*m.Input.Size(), 2)
		ref := execRef(t, m, batch, x)
		for _, th := range threads {
			e, err := nn.NewExecutor(m, batch, nn.Options{Threads: th})
			if err != nil {
				t.Fatal(err)
			}
			out, err := e.Forward(x)
			if err != nil {
				t.Fatal(err)
			}
			last := m.Layers[len(m.Layers)-1].Name
			if r := execRelErr(out, ref[last]); r > tol {
				t.Errorf("batch %d threads %d: output rel err %.3g > %g", batch, th, r, tol)
			}
			for _, l := range m.Layers {
				if foldedConv(m, l) {
					continue // its output is the next layer's, checked there
				}
				if r := execRelErr(e.Activation(l.Name), ref[l.Name]); r > tol {
					t.Errorf("batch %d threads %d: layer %q (%s) rel err %.3g > %g", batch, th, l.Name, l.Kind, r, tol)
				}
			}
		}
	}
}

// ---- per-kind tests ----

const execLayerTol = 1e-5

func TestExecConv(t *testing.T) {
	type tc struct {
		name        string
		in          nn.Shape
		out         int
		k, s, p, g  int
		bias, masks bool
	}
	cases := []tc{
		{"k3s1p1", nn.Shape{C: 3, H: 9, W: 7}, 5, 3, 1, 1, 1, true, false},
		{"k1s1p0-pointwise", nn.Shape{C: 6, H: 5, W: 8}, 4, 1, 1, 0, 1, false, false},
		{"k1s2p0", nn.Shape{C: 6, H: 7, W: 9}, 4, 1, 2, 0, 1, true, false},
		{"k5s2p2", nn.Shape{C: 2, H: 11, W: 8}, 3, 5, 2, 2, 1, true, false},
		{"k5s1p0", nn.Shape{C: 1, H: 12, W: 10}, 6, 5, 1, 0, 1, true, false},
		{"k3s1p2", nn.Shape{C: 3, H: 6, W: 5}, 4, 3, 1, 2, 1, true, false},
		{"k5-larger-than-input", nn.Shape{C: 2, H: 3, W: 4}, 3, 5, 1, 2, 1, true, false},
		{"k3s2p0-edge-tiles", nn.Shape{C: 16, H: 15, W: 13}, 40, 3, 2, 0, 1, false, false},
		{"k3s1p1-two-k-blocks-masked", nn.Shape{C: 32, H: 20, W: 18}, 33, 3, 1, 1, 1, true, true},
		{"k3s2p1-small-plane-two-k-blocks-masked", nn.Shape{C: 64, H: 13, W: 13}, 40, 3, 2, 1, 1, true, true},
		{"groups2-k3s1p1", nn.Shape{C: 4, H: 8, W: 6}, 6, 3, 1, 1, 2, false, false},
		{"groups2-k1-pointwise", nn.Shape{C: 4, H: 5, W: 5}, 6, 1, 1, 0, 2, true, false},
		{"groups2-one-input-channel-each", nn.Shape{C: 2, H: 7, W: 9}, 8, 3, 1, 1, 2, true, false},
		{"groups2-k3s2p1-masked", nn.Shape{C: 8, H: 9, W: 12}, 4, 3, 2, 1, 2, true, true},
		{"depthwise-k3s1p1", nn.Shape{C: 5, H: 9, W: 8}, 5, 3, 1, 1, 5, false, false},
		{"depthwise-k3s1p0", nn.Shape{C: 3, H: 6, W: 13}, 3, 3, 1, 0, 3, true, false},
		{"depthwise-multiplier2-k3s1p1", nn.Shape{C: 2, H: 5, W: 17}, 4, 3, 1, 1, 2, false, false},
		{"depthwise-k3s2p1", nn.Shape{C: 5, H: 10, W: 7}, 5, 3, 2, 1, 5, true, false},
		{"depthwise-k3s2p0-odd", nn.Shape{C: 3, H: 9, W: 12}, 3, 3, 2, 0, 3, false, false},
		{"depthwise-k3s2p0-odd-width", nn.Shape{C: 3, H: 8, W: 9}, 3, 3, 2, 0, 3, true, false},
		{"depthwise-multiplier2-k3s2p1", nn.Shape{C: 2, H: 14, W: 14}, 4, 3, 2, 1, 2, true, false},
		{"k3s1p1-wide-grid-partial-group", nn.Shape{C: 20, H: 7, W: 7}, 70, 3, 1, 1, 1, true, true},
		{"k3s2p1-phases-small-plane", nn.Shape{C: 8, H: 14, W: 14}, 16, 3, 2, 1, 1, true, false},
		{"k3s2p1-phases-wide", nn.Shape{C: 5, H: 28, W: 30}, 12, 3, 2, 1, 1, false, true},
		{"k1s2p0-phases-small-plane", nn.Shape{C: 16, H: 14, W: 14}, 24, 1, 2, 0, 1, true, false},
		{"k4s2p1-phases-odd-rows", nn.Shape{C: 3, H: 11, W: 10}, 7, 4, 2, 1, 1, true, false},
		{"depthwise-multiplier2-k5s2p2", nn.Shape{C: 3, H: 9, W: 11}, 6, 5, 2, 2, 3, true, false},
		{"depthwise-k1s1p0-masked", nn.Shape{C: 4, H: 3, W: 5}, 4, 1, 1, 0, 4, true, true},
		{"depthwise-large-k3s1p1", nn.Shape{C: 64, H: 24, W: 22}, 64, 3, 1, 1, 64, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := &nn.Model{Input: c.in, Layers: []*nn.Layer{{Name: "conv", Kind: nn.Conv2D,
				Inputs: []string{nn.InputName}, In: c.in.C, Out: c.out, Kernel: c.k, Stride: c.s,
				Pad: c.p, Groups: c.g, HasBias: c.bias}}}
			var masked []string
			if c.masks {
				masked = []string{"conv"}
			}
			execRandomize(t, m, 11, masked...)
			// Batch 10 on one thread runs planes of up to 64 pixels in groups of 8 and 2
			// samples (one product per group).
			execCheckAll(t, m, []int{1, 5, 10}, []int{1, 3}, execLayerTol)
		})
	}
}

func TestExecElementwise(t *testing.T) {
	for _, kind := range []nn.Kind{nn.BatchNorm, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Sigmoid, nn.HardSigmoid, nn.HardSwish} {
		for _, in := range []nn.Shape{{C: 3, H: 5, W: 4}, {C: 7, H: 1, W: 1}, {C: 16, H: 96, W: 96}} {
			t.Run(fmt.Sprintf("%s/%v", kind, in), func(t *testing.T) {
				m := &nn.Model{Input: in, Layers: []*nn.Layer{
					{Name: "l", Kind: kind, Inputs: []string{nn.InputName}}}}
				execRandomize(t, m, 3)
				m.Layers[0].Eps = 1e-3
				m.Layers[0].Slope, m.Layers[0].Offset = 0.2, 0.5
				execCheckAll(t, m, []int{1, 3}, []int{1, 2}, execLayerTol)
			})
		}
	}
}

func TestExecPool(t *testing.T) {
	type tc struct {
		in      nn.Shape
		k, s, p int
	}
	cases := []tc{
		{nn.Shape{C: 3, H: 8, W: 7}, 2, 2, 0},
		{nn.Shape{C: 2, H: 9, W: 10}, 3, 2, 1},
		{nn.Shape{C: 4, H: 5, W: 5}, 3, 1, 1},
		{nn.Shape{C: 2, H: 6, W: 7}, 2, 1, 1},
		{nn.Shape{C: 1, H: 10, W: 10}, 3, 3, 0},
		{nn.Shape{C: 2, H: 7, W: 6}, 5, 2, 2},
		{nn.Shape{C: 32, H: 80, W: 72}, 2, 2, 0},
	}
	for _, kind := range []nn.Kind{nn.MaxPool, nn.AvgPool} {
		for _, c := range cases {
			t.Run(fmt.Sprintf("%s/%v/k%ds%dp%d", kind, c.in, c.k, c.s, c.p), func(t *testing.T) {
				m := &nn.Model{Input: c.in, Layers: []*nn.Layer{{Name: "pool", Kind: kind,
					Inputs: []string{nn.InputName}, Kernel: c.k, Stride: c.s, Pad: c.p}}}
				execCheckAll(t, m, []int{1, 3}, []int{1, 2}, execLayerTol)
			})
		}
	}
}

func TestExecGlobalAvgPool(t *testing.T) {
	for _, in := range []nn.Shape{{C: 4, H: 5, W: 3}, {C: 3, H: 1, W: 1}, {C: 64, H: 60, W: 40}} {
		t.Run(in.String(), func(t *testing.T) {
			m := &nn.Model{Input: in, Layers: []*nn.Layer{
				{Name: "gap", Kind: nn.GlobalAvgPool, Inputs: []string{nn.InputName}}}}
			execCheckAll(t, m, []int{1, 3}, []int{1, 2}, execLayerTol)
		})
	}
}

func TestExecFlatten(t *testing.T) {
	in := nn.Shape{C: 3, H: 4, W: 5}
	// Flatten of the model input (copied) and of a layer output (shared buffer).
	m := &nn.Model{Input: in, Layers: []*nn.Layer{
		{Name: "flat-in", Kind: nn.Flatten, Inputs: []string{nn.InputName}},
		{Name: "relu", Kind: nn.ReLU, Inputs: []string{nn.InputName}},
		{Name: "flat-relu", Kind: nn.Flatten, Inputs: []string{"relu"}},
		{Name: "sum", Kind: nn.Add, Inputs: []string{"flat-in", "flat-relu"}},
	}}
	execCheckAll(t, m, []int{1, 2}, []int{1, 2}, execLayerTol)
}

func TestExecLinear(t *testing.T) {
	type tc struct {
		in, out int
		bias    bool
		masked  bool
	}
	for _, c := range []tc{{20, 7, true, true}, {50, 33, false, false}, {1, 1, true, false},
		{300, 100, true, true}, {3136, 128, true, false}} {
		t.Run(fmt.Sprintf("%dx%d", c.in, c.out), func(t *testing.T) {
			m := &nn.Model{Input: nn.Shape{C: c.in, H: 1, W: 1}, Layers: []*nn.Layer{
				{Name: "fc", Kind: nn.Linear, Inputs: []string{nn.InputName}, In: c.in, Out: c.out,
					HasBias: c.bias}}}
			var masked []string
			if c.masked {
				masked = []string{"fc"}
			}
			execRandomize(t, m, 5, masked...)
			// Batch 2 takes the dot-product path; 5 and 33 (over two slivers of 16 samples)
			// the packed weights times the transposed input.
			execCheckAll(t, m, []int{1, 2, 5, 33}, []int{1, 2}, execLayerTol)
		})
	}
}

func TestExecAdd(t *testing.T) {
	in := nn.Shape{C: 3, H: 6, W: 5}
	m := &nn.Model{Input: in, Layers: []*nn.Layer{
		{Name: "a", Kind: nn.Conv2D, Inputs: []string{nn.InputName}, In: 3, Out: 3, Kernel: 1, HasBias: true},
		{Name: "b", Kind: nn.BatchNorm, Inputs: []string{nn.InputName}},
		{Name: "add2", Kind: nn.Add, Inputs: []string{"a", "b"}},
		{Name: "add3", Kind: nn.Add, Inputs: []string{"a", "b", nn.InputName}},
		{Name: "add-self", Kind: nn.Add, Inputs: []string{"add3", "add3"}},
	}}
	execRandomize(t, m, 9)
	execCheckAll(t, m, []int{1, 4}, []int{1, 2}, execLayerTol)
}

// ---- zoo models ----

var execMNIST = nn.Shape{C: 1, H: 28, W: 28}

// execZooTol bounds the relative error of a whole network against the float64 reference.
const execZooTol = 1e-5

func TestExecZoo(t *testing.T) {
	for _, name := range zoo.Names {
		t.Run(name, func(t *testing.T) {
			m, err := zoo.Build(name, execMNIST, 10, 42)
			if err != nil {
				t.Fatal(err)
			}
			// Random batch-norm statistics and biases make the check stricter than the
			// identity batch norms of a fresh model.
			execRandomize(t, m, 42)
			const samples, size, classes = 4, 28 * 28, 10
			rng := rand.New(rand.NewSource(1))
			x := execRandVec(rng, samples*size, 1)
			ref := execRef(t, m, samples, x)
			want := ref[m.Output().Name]
			// The first run (batch 4, one thread) is the baseline the others must match.
			// Batch 4 with two threads splits samples among the threads, batch 3 with two
			// threads splits the work inside each layer, batch 1 runs samples alone.
			var base []float32
			for _, th := range []int{1, 2} {
				for _, batch := range []int{samples, 3, 1} {
					e, err := nn.NewExecutor(m, batch, nn.Options{Threads: th})
					if err != nil {
						t.Fatal(err)
					}
					if e.Batch() != batch || e.OutputShape() != (nn.Shape{C: classes, H: 1, W: 1}) {
						t.Fatalf("Batch %d OutputShape %v", e.Batch(), e.OutputShape())
					}
					for n0 := 0; n0+batch <= samples; n0 += batch {
						out, err := e.Forward(x[n0*size : (n0+batch)*size])
						if err != nil {
							t.Fatal(err)
						}
						if r := execRelErr(out, want[n0*classes:(n0+batch)*classes]); r > execZooTol {
							t.Errorf("threads %d batch %d: rel err %.3g vs reference", th, batch, r)
						}
						if base == nil {
							base = append([]float32(nil), out...)
						} else if r := execMaxRelDiff(out, base[n0*classes:(n0+batch)*classes]); r > 1e-6 {
							t.Errorf("threads %d batch %d: samples %d.. differ from threads 1 batch %d by %.3g",
								th, batch, n0, samples, r)
						}
					}
					if batch != samples {
						continue
					}
					// Every intermediate activation too.
					for _, l := range m.Layers {
						if foldedConv(m, l) {
							if e.Activation(l.Name) != nil {
								t.Errorf("layer %q: folded into its batch norm, yet has an activation", l.Name)
							}
							continue
						}
						if r := execRelErr(e.Activation(l.Name), ref[l.Name]); r > execZooTol {
							t.Errorf("threads %d: layer %q rel err %.3g", th, l.Name, r)
						}
					}
				}
			}
		})
	}
}

// execMaxRelDiff returns max|a-b| / max|b|, or +Inf on a length mismatch or non-finite value.
func execMaxRelDiff(a, b []float32) float64 {
	w := make([]float64, len(b))
	for i, v := range b {
		w[i] = float64(v)
	}
	return execRelErr(a, w)
}

func TestExecForwardNoAllocs(t *testing.T) {
	for _, name := range zoo.Names {
		m, err := zoo.Build(name, execMNIST, 10, 1)
		if err != nil {
			t.Fatal(err)
		}
		for _, th := range []int{1, 2} {
			for _, batch := range []int{1, 3} {
				e, err := nn.NewExecutor(m, batch, nn.Options{Threads: th})
				if err != nil {
					t.Fatal(err)
				}
				x := execRandVec(rand.New(rand.NewSource(2)), batch*execMNIST.Size(), 1)
				e.Forward(x) // warm up
				allocs := testing.AllocsPerRun(10, func() {
					if _, err := e.Forward(x); err != nil {
						t.Fatal(err)
					}
				})
				if allocs != 0 {
					t.Errorf("%s batch %d threads %d: %v allocations per Forward", name, batch, th, allocs)
				}
			}
		}
	}
}

func TestExecForwardErrors(t *testing.T) {
	m, err := zoo.Build("lenet5", execMNIST, 10, 1)
	if err != nil {
		t.Fatal(err)
	}
	e, err := nn.NewExecutor(m, 2, nn.Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 1, execMNIST.Size(), 2*execMNIST.Size() - 1, 2*execMNIST.Size() + 1} {
		out, err := e.Forward(make([]float32, n))
		if !errors.Is(err, nn.ErrInputSize) || out != nil {
			t.Errorf("Forward(%d values): out %v, err %v; want ErrInputSize", n, out != nil, err)
		}
	}
	if _, err := e.Forward(nil); err == nil {
		t.Error("Forward(nil): no error")
	}
	if e.Activation("nope") != nil || e.Activation(nn.InputName) != nil {
		t.Error("Activation of an unknown layer or the input is not nil")
	}
	// A model changed after NewExecutor does not affect it.
	x := execRandVec(rand.New(rand.NewSource(3)), 2*execMNIST.Size(), 1)
	before, _ := e.Forward(x)
	before = append([]float32(nil), before...)
	m.Layers[0].Weight[0] += 10
	after, _ := e.Forward(x)
	if execMaxRelDiff(after, before) != 0 {
		t.Error("executor sees a weight changed after NewExecutor")
	}
}

func TestExecNewExecutorErrors(t *testing.T) {
	good := func() *nn.Model {
		m, err := zoo.Build("lenet5", execMNIST, 10, 1)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	cases := map[string]func() (*nn.Model, int){
		"nil model":    func() (*nn.Model, int) { return nil, 1 },
		"batch 0":      func() (*nn.Model, int) { return good(), 0 },
		"batch -1":     func() (*nn.Model, int) { return good(), -1 },
		"no layers":    func() (*nn.Model, int) { return &nn.Model{Input: execMNIST}, 1 },
		"short weight": func() (*nn.Model, int) { m := good(); m.Layers[0].Weight = m.Layers[0].Weight[1:]; return m, 1 },
		"nil weight":   func() (*nn.Model, int) { m := good(); m.Layers[0].Weight = nil; return m, 1 },
		"nan weight": func() (*nn.Model, int) {
			m := good()
			m.Layers[0].Weight[0] = float32(math.NaN())
			return m, 1
		},
		"bad mask": func() (*nn.Model, int) {
			m := good()
			m.Layers[0].Mask = make([]float32, 3)
			return m, 1
		},
		"unknown kind": func() (*nn.Model, int) { m := good(); m.Layers[1].Kind = "gelu"; return m, 1 },
		"dangling input": func() (*nn.Model, int) {
			m := good()
			m.Layers[2].Inputs = []string{"nowhere"}
			return m, 1
		},
		"channel mismatch": func() (*nn.Model, int) { m := good(); m.Layers[3].In = 5; return m, 1 },
		"nil layer":        func() (*nn.Model, int) { m := good(); m.Layers[4] = nil; return m, 1 },
		"negative var": func() (*nn.Model, int) {
			m, _ := zoo.Build("vgg-small", execMNIST, 10, 1)
			m.Layers[1].Var[0] = -1
			return m, 1
		},
		"bad input shape": func() (*nn.Model, int) { m := good(); m.Input = nn.Shape{C: 1, H: 0, W: 28}; return m, 1 },
		"huge batch":      func() (*nn.Model, int) { return good(), 1 << 30 },
	}
	for name, mk := range cases {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("panic: %v", r)
				}
			}()
			m, batch := mk()
			if e, err := nn.NewExecutor(m, batch, nn.Options{Threads: 2}); err == nil || e != nil {
				t.Errorf("no error (executor %v)", e != nil)
			}
		})
	}
}

func TestExecHelpersStop(t *testing.T) {
	m, err := zoo.Build("lenet5", execMNIST, 10, 1)
	if err != nil {
		t.Fatal(err)
	}
	x := make([]float32, execMNIST.Size())
	// Let the helpers of executors from earlier tests go first.
	before := runtime.NumGoroutine()
	for i := 0; i < 50; i++ {
		runtime.GC()
		time.Sleep(5 * time.Millisecond)
		n := runtime.NumGoroutine()
		if n == before && i >= 3 {
			break
		}
		before = n
	}
	var es []*nn.Executor
	for i := 0; i < 10; i++ {
		e, err := nn.NewExecutor(m, 1, nn.Options{Threads: 4})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.Forward(x); err != nil {
			t.Fatal(err)
		}
		es = append(es, e)
	}
	if n := runtime.NumGoroutine(); n < before+30 {
		t.Fatalf("%d goroutines after starting 10 executors of 4 threads, %d before", n, before)
	}
	runtime.KeepAlive(es)
	for i := 0; i < 100 && runtime.NumGoroutine() > before+2; i++ {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before+2 {
		t.Errorf("%d goroutines remain after the executors were collected, %d before", n, before)
	}
}

func TestExecThreadsOption(t *testing.T) {
	m, err := zoo.Build("resnet-small", execMNIST, 10, 4)
	if err != nil {
		t.Fatal(err)
	}
	x := execRandVec(rand.New(rand.NewSource(4)), 2*execMNIST.Size(), 1)
	var want []float32
	for _, th := range []int{-3, 0, 1, 2, 3, 7} {
		e, err := nn.NewExecutor(m, 2, nn.Options{Threads: th})
		if err != nil {
			t.Fatal(err)
		}
		out, err := e.Forward(x)
		if err != nil {
			t.Fatal(err)
		}
		if want == nil {
			want = append([]float32(nil), out...)
		} else if r := execMaxRelDiff(out, want); r > 1e-6 {
			t.Errorf("threads %d differs by %.3g", th, r)
		}
	}
}

// A pass stops between layers once its context is done, and the executor runs again after.
func TestExecForwardContext(t *testing.T) {
	m, err := zoo.Build("vgg-small", nn.Shape{C: 1, H: 28, W: 28}, 10, 1)
	if err != nil {
		t.Fatal(err)
	}
	e, err := nn.NewExecutor(m, 2, nn.Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	x := make([]float32, 2*28*28)
	want, err := e.Forward(x)
	if err != nil {
		t.Fatal(err)
	}
	want = append([]float32(nil), want...)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.ForwardContext(ctx, x); !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled pass returned %v, want context.Canceled", err)
	}
	got, err := e.ForwardContext(context.Background(), x)
	if err != nil || execRelErr(got, toF64(want)) != 0 {
		t.Errorf("the pass after a cancelled one: %v, outputs differ", err)
	}
}

func toF64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// foldedConv tells whether the executor keeps no output of l's own: a convolution whose only
// consumer is a batch norm (folded into it), or a convolution or folded batch norm whose only
// consumer is a ReLU or ReLU6 (applied as the convolution writes its output), or an addition
// whose only consumer is a ReLU.
func foldedConv(m *nn.Model, l *nn.Layer) bool {
	user := onlyUser(m, l)
	switch {
	case user == nil:
		return false
	case l.Kind == nn.Conv2D && user.Kind == nn.BatchNorm:
		return true
	case user.Kind == nn.ReLU || user.Kind == nn.ReLU6:
		// A ReLU is applied by the convolution before it (through its batch norm).
		return l.Kind == nn.Conv2D || l.Kind == nn.Add || l.Kind == nn.BatchNorm && foldedConv(m, m.Layer(l.Inputs[0]))
	}
	return false
}

// onlyUser returns the one layer that reads l's output, or nil if there are none or several.
func onlyUser(m *nn.Model, l *nn.Layer) *nn.Layer {
	var users []*nn.Layer
	for _, u := range m.Layers {
		for _, in := range u.Inputs {
			if in == l.Name {
				users = append(users, u)
			}
		}
	}
	if len(users) != 1 {
		return nil
	}
	return users[0]
}

// A deadline stops a pass inside a long layer, not only between layers: a pooling layer
// with a huge window over eight planes returns long before the whole layer would finish.
func TestExecForwardContextStopsInsideALayer(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a long pooling layer")
	}
	m := &nn.Model{Name: "slow", Input: nn.Shape{C: 8, H: 256, W: 256}, Layers: []*nn.Layer{
		{Name: "pool", Kind: nn.MaxPool, Inputs: []string{nn.InputName}, Kernel: 32, Stride: 1},
	}}
	for _, threads := range []int{1, 2} {
		e, err := nn.NewExecutor(m, 1, nn.Options{Threads: threads})
		if err != nil {
			t.Fatal(err)
		}
		x := make([]float32, m.Input.Size())
		start := time.Now()
		if _, err := e.Forward(x); err != nil {
			t.Fatal(err)
		}
		full := time.Since(start)
		ctx, cancel := context.WithTimeout(context.Background(), full/10)
		start = time.Now()
		_, err = e.ForwardContext(ctx, x)
		took := time.Since(start)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("threads %d: %v, want the deadline's error", threads, err)
		}
		if took > full/2 {
			t.Errorf("threads %d: stopped after %s; the whole pass takes %s", threads, took, full)
		}
		if _, err := e.Forward(x); err != nil {
			t.Errorf("threads %d: the pass after a stopped one: %v", threads, err)
		}
	}
}
