package train

import (
	"math"
	"math/rand"
	"sort"
	"testing"

	"github.com/autoprune/autoprune/nn"
)

// seq builds a model from layers; a layer without inputs reads the previous one.
func seq(name string, in nn.Shape, layers ...*nn.Layer) *nn.Model {
	m := &nn.Model{Name: name, Input: in}
	last := nn.InputName
	for _, l := range layers {
		if l.Inputs == nil {
			l.Inputs = []string{last}
		}
		m.Layers = append(m.Layers, l)
		last = l.Name
	}
	return m
}

func conv(name string, in, out, k, s, p, g int, bias bool) *nn.Layer {
	return &nn.Layer{Name: name, Kind: nn.Conv2D, In: in, Out: out, Kernel: k, Stride: s, Pad: p, Groups: g, HasBias: bias}
}

func layer(name string, kind nn.Kind, inputs ...string) *nn.Layer {
	return &nn.Layer{Name: name, Kind: kind, Inputs: inputs}
}

func pool(name string, kind nn.Kind, k, s, p int) *nn.Layer {
	return &nn.Layer{Name: name, Kind: kind, Kernel: k, Stride: s, Pad: p}
}

func linear(name string, in, out int, bias bool) *nn.Layer {
	return &nn.Layer{Name: name, Kind: nn.Linear, In: in, Out: out, HasBias: bias}
}

// gradModels are small networks covering every layer kind and gradient path: strided,
// padded, depthwise and grouped convolutions, batch norm, every activation, the three
// poolings, residual additions, linear layers and masks.
func gradModels() map[string]*nn.Model {
	convnet := seq("convnet", nn.Shape{C: 3, H: 9, W: 9},
		conv("c1", 3, 4, 3, 1, 1, 1, true),
		layer("r1", nn.ReLU),
		conv("c2", 4, 6, 3, 2, 1, 1, true),
		layer("b2", nn.BatchNorm),
		layer("r2", nn.ReLU6),
		pool("p2", nn.MaxPool, 3, 2, 1),
		conv("dw", 6, 6, 3, 1, 1, 6, false),
		layer("b3", nn.BatchNorm),
		layer("r3", nn.ReLU),
		conv("gc", 6, 4, 1, 1, 0, 2, true),
		pool("ap", nn.AvgPool, 2, 1, 1),
		layer("fl", nn.Flatten),
		linear("fc", 64, 5, true),
	)
	resnet := seq("resnet", nn.Shape{C: 2, H: 6, W: 6},
		conv("stem", 2, 4, 3, 1, 1, 1, false),
		layer("stem.bn", nn.BatchNorm),
		layer("stem.relu", nn.ReLU),
		conv("a.conv1", 4, 4, 3, 1, 1, 1, false),
		layer("a.bn1", nn.BatchNorm),
		layer("a.relu1", nn.ReLU),
		conv("a.conv2", 4, 4, 3, 1, 1, 1, false),
		layer("a.bn2", nn.BatchNorm),
		layer("a.add", nn.Add, "a.bn2", "stem.relu"),
		layer("a.relu2", nn.ReLU),
		conv("b.conv", 4, 8, 3, 2, 1, 1, false),
		layer("b.bn", nn.BatchNorm),
		&nn.Layer{Name: "b.down", Kind: nn.Conv2D, In: 4, Out: 8, Kernel: 1, Stride: 2, Inputs: []string{"a.relu2"}},
		layer("b.down.bn", nn.BatchNorm),
		layer("b.add", nn.Add, "b.bn", "b.down.bn"),
		layer("b.relu", nn.ReLU),
		layer("gap", nn.GlobalAvgPool),
		linear("fc", 8, 3, true),
	)
	mlp := seq("mlp", nn.Shape{C: 1, H: 4, W: 4},
		layer("fl", nn.Flatten),
		linear("fc1", 16, 8, true),
		layer("relu", nn.ReLU),
		linear("fc2", 8, 3, false),
	)
	depthwise := seq("depthwise", nn.Shape{C: 3, H: 7, W: 7},
		conv("dw1", 3, 6, 3, 2, 1, 3, true),
		layer("r1", nn.ReLU),
		conv("dw2", 6, 6, 3, 1, 1, 6, false),
		layer("bn", nn.BatchNorm),
		pool("mp", nn.MaxPool, 2, 2, 0),
		layer("fl", nn.Flatten),
		linear("fc", 24, 4, true),
	)
	strided := seq("strided", nn.Shape{C: 2, H: 11, W: 11},
		conv("c1", 2, 3, 5, 2, 2, 1, true),
		layer("r1", nn.ReLU),
		conv("c2", 3, 4, 3, 3, 2, 1, false),
		layer("fl", nn.Flatten),
		linear("fc", 36, 3, true),
	)
	acts := seq("activations", nn.Shape{C: 2, H: 5, W: 5},
		conv("c1", 2, 4, 3, 1, 1, 1, true),
		&nn.Layer{Name: "leaky", Kind: nn.LeakyReLU, Slope: 0.1},
		conv("c2", 4, 4, 3, 1, 1, 1, true),
		layer("sig", nn.Sigmoid),
		conv("c3", 4, 4, 1, 1, 0, 1, true),
		&nn.Layer{Name: "hsig", Kind: nn.HardSigmoid, Slope: 0.4, Offset: 0.5},
		conv("c4", 4, 3, 1, 1, 0, 1, true),
		layer("hswish", nn.HardSwish),
		layer("fl", nn.Flatten),
		linear("fc", 75, 3, true),
	)
	inception := seq("inception", nn.Shape{C: 2, H: 6, W: 6},
		conv("stem", 2, 4, 3, 1, 1, 1, true),
		layer("stem.relu", nn.ReLU),
		conv("b1", 4, 3, 1, 1, 0, 1, true),
		&nn.Layer{Name: "b2", Kind: nn.Conv2D, In: 4, Out: 5, Kernel: 3, Pad: 1, HasBias: true, Inputs: []string{"stem.relu"}},
		layer("cat", nn.Concat, "b1", "b2", "stem.relu"),
		layer("bn", nn.BatchNorm),
		layer("gap", nn.GlobalAvgPool),
		linear("fc", 12, 3, true),
	)
	// Stride-1 convolutions without padding that shrink the plane: their columns run over
	// a grid as wide as the input.
	valid := seq("valid", nn.Shape{C: 2, H: 7, W: 6},
		conv("c1", 2, 3, 3, 1, 0, 1, false),
		layer("r1", nn.ReLU),
		conv("c2", 3, 4, 2, 1, 0, 1, true),
		layer("fl", nn.Flatten),
		linear("fc", 48, 3, true),
	)
	// Depthwise 3x3 at stride 2 and 1 (the vector passes), on an odd height and even width.
	depthwise2 := seq("depthwise2", nn.Shape{C: 4, H: 7, W: 6},
		conv("dw1", 4, 4, 3, 2, 1, 4, true),
		layer("bn", nn.BatchNorm),
		layer("r1", nn.ReLU6),
		conv("dw2", 4, 4, 3, 1, 1, 4, false),
		layer("fl", nn.Flatten),
		linear("fc", 48, 3, true),
	)
	return map[string]*nn.Model{"valid": valid, "depthwise2": depthwise2, "inception": inception, "strided": strided, "convnet": convnet, "resnet": resnet, "mlp": mlp, "depthwise": depthwise, "activations": acts}
}

// addMasks gives the named layers random masks keeping about half of the weights.
func addMasks(m *nn.Model, seed int64, names ...string) {
	rng := rand.New(rand.NewSource(seed))
	for _, name := range names {
		l := m.Layer(name)
		l.Mask = make([]float32, len(l.Weight))
		for i := range l.Mask {
			if rng.Intn(2) == 0 {
				l.Mask[i] = 1
			} else {
				l.Weight[i] = 0
			}
		}
	}
}

func TestGradientsMatchFiniteDifferences(t *testing.T) {
	const n, h = 4, 1e-5
	for name, m := range gradModels() {
		t.Run(name, func(t *testing.T) {
			randomize(m, 7)
			if name == "mlp" {
				addMasks(m, 3, "fc1", "fc2")
			}
			if name == "convnet" {
				addMasks(m, 4, "c2")
			}
			if name == "depthwise" {
				addMasks(m, 4, "dw1")
			}
			if name == "depthwise2" {
				addMasks(m, 5, "dw1")
			}
			classes := m.Output().Out
			x, labels := randomInput(m, n, classes, 11)
			loss, grads, err := Gradients(m, x, labels, n)
			if err != nil {
				t.Fatal(err)
			}
			ref := toRef(m)
			_, want := refForward(m, ref, x, n, labels, true)
			if math.Abs(loss-want) > 1e-5*math.Max(1, want) {
				t.Errorf("loss %v, reference %v", loss, want)
			}
			keys := make([]string, 0, len(grads))
			for k := range grads {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			wantKeys := 0
			for _, l := range m.Layers {
				switch l.Kind {
				case nn.Conv2D, nn.Linear:
					wantKeys++
					if l.HasBias {
						wantKeys++
					}
				case nn.BatchNorm:
					wantKeys += 2
				}
			}
			if len(keys) != wantKeys {
				t.Errorf("%d gradients (%v), want %d", len(keys), keys, wantKeys)
			}
			rng := rand.New(rand.NewSource(5))
			worst := 0.0 // largest error as a fraction of the tolerance
			defer func() { t.Logf("largest error: %.3g of the tolerance", worst) }()
			for _, key := range keys {
				g := grads[key]
				p := ref[key]
				if len(g) != len(p) {
					t.Fatalf("%s: gradient has %d values, parameter %d", key, len(g), len(p))
				}
				var scale float64
				for _, v := range g {
					scale = math.Max(scale, math.Abs(float64(v)))
				}
				idx := rng.Perm(len(g))
				if len(idx) > 8 {
					idx = idx[:8]
				}
				mask := ref[key[:len(key)-len(".weight")]+".mask"]
				if mask == nil || !isWeight(key) {
					mask = nil
				}
				for _, i := range idx {
					old := p[i]
					p[i] = old + h
					_, lp := refForward(m, ref, x, n, labels, true)
					p[i] = old - h
					_, lm := refForward(m, ref, x, n, labels, true)
					p[i] = old
					num := (lp - lm) / (2 * h)
					got := float64(g[i])
					if mask != nil && mask[i] == 0 {
						if got != 0 {
							t.Errorf("%s[%d]: masked weight has gradient %v", key, i, got)
						}
						continue
					}
					d, tol := math.Abs(got-num), 1e-3*math.Abs(num)+1e-4*scale+1e-7
					worst = math.Max(worst, d/tol)
					if d > tol {
						t.Errorf("%s[%d]: gradient %.7g, finite difference %.7g (diff %.2g, tensor scale %.2g)",
							key, i, got, num, d, scale)
					}
				}
			}
		})
	}
}

func isWeight(key string) bool {
	return len(key) > 7 && key[len(key)-7:] == ".weight"
}
