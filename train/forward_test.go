package train

import (
	"fmt"
	"math"
	"testing"

	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/nn/zoo"
)

// kindModels has one small model per layer kind (and convolution variant), each ending in a
// flatten so that its output is a vector.
func kindModels() map[string]*nn.Model {
	in := nn.Shape{C: 3, H: 8, W: 8}
	fl := func() *nn.Layer { return layer("flat", nn.Flatten) }
	return map[string]*nn.Model{
		"conv2d":              seq("conv2d", in, conv("c", 3, 5, 3, 1, 1, 1, true), fl()),
		"conv2d-strided":      seq("conv2d-strided", in, conv("c", 3, 4, 3, 2, 1, 1, false), fl()),
		"conv2d-k5-pad2":      seq("conv2d-k5-pad2", in, conv("c", 3, 4, 5, 2, 2, 1, true), fl()),
		"conv2d-depthwise":    seq("conv2d-depthwise", in, conv("c", 3, 3, 3, 2, 1, 3, false), fl()),
		"conv2d-depthwise-x2": seq("conv2d-depthwise-x2", in, conv("c", 3, 6, 3, 1, 1, 3, true), fl()),
		"conv2d-grouped":      seq("conv2d-grouped", nn.Shape{C: 4, H: 7, W: 7}, conv("c", 4, 6, 3, 1, 1, 2, true), fl()),
		"batchnorm":           seq("batchnorm", in, layer("bn", nn.BatchNorm), fl()),
		"relu":                seq("relu", in, layer("r", nn.ReLU), fl()),
		"relu6":               seq("relu6", in, layer("r", nn.ReLU6), fl()),
		"leakyrelu":           seq("leakyrelu", in, &nn.Layer{Name: "r", Kind: nn.LeakyReLU, Slope: 0.01}, fl()),
		"sigmoid":             seq("sigmoid", in, layer("r", nn.Sigmoid), fl()),
		"hardsigmoid":         seq("hardsigmoid", in, &nn.Layer{Name: "r", Kind: nn.HardSigmoid, Slope: 1.0 / 6, Offset: 0.5}, fl()),
		"hardswish":           seq("hardswish", in, layer("r", nn.HardSwish), fl()),
		"maxpool":             seq("maxpool", in, pool("p", nn.MaxPool, 2, 2, 0), fl()),
		"maxpool-padded":      seq("maxpool-padded", in, pool("p", nn.MaxPool, 3, 2, 1), fl()),
		"avgpool":             seq("avgpool", in, pool("p", nn.AvgPool, 2, 2, 0), fl()),
		"avgpool-padded":      seq("avgpool-padded", in, pool("p", nn.AvgPool, 3, 2, 1), fl()),
		"globalavgpool":       seq("globalavgpool", in, layer("p", nn.GlobalAvgPool), fl()),
		"flatten":             seq("flatten", in, fl()),
		"linear":              seq("linear", in, fl(), linear("fc", 192, 7, true)),
		"linear-nobias":       seq("linear-nobias", in, fl(), linear("fc", 192, 7, false)),
		"concat": seq("concat", in,
			conv("a", 3, 4, 3, 1, 1, 1, false),
			&nn.Layer{Name: "b", Kind: nn.Conv2D, In: 3, Out: 2, Kernel: 1, Inputs: []string{nn.InputName}},
			layer("cat", nn.Concat, "a", "b", "a"),
			fl()),
		"add": seq("add", in,
			conv("a", 3, 4, 3, 1, 1, 1, false),
			&nn.Layer{Name: "b", Kind: nn.Conv2D, In: 3, Out: 4, Kernel: 1, Inputs: []string{nn.InputName}},
			layer("sum", nn.Add, "a", "b", "a"),
			fl()),
	}
}

// relErr returns max|got-want| / max|want|.
func relErr(got []float32, want []float64) float64 {
	var d, s float64
	for i, w := range want {
		d = math.Max(d, math.Abs(float64(got[i])-w))
		s = math.Max(s, math.Abs(w))
	}
	if s == 0 {
		return d
	}
	return d / s
}

func f64s(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// checkForward compares Forward with the pure-Go executor and the float64 reference.
func checkForward(t *testing.T, m *nn.Model, n int, scale float32) {
	t.Helper()
	randomize(m, 21)
	x, _ := randomInput(m, n, 2, 22)
	for i := range x {
		x[i] *= scale
	}
	got, err := Forward(m, x, n)
	if err != nil {
		t.Fatal(err)
	}
	ex, err := nn.NewExecutor(m, n, nn.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	want, err := ex.Forward(x)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("Forward gives %d values, executor %d", len(got), len(want))
	}
	if e := relErr(got, f64s(want)); e >= 1e-4 {
		t.Errorf("relative error to the executor %.3g", e)
	}
	ref, _ := refForward(m, toRef(m), x, n, nil, false)
	if e := relErr(got, ref); e >= 1e-5 {
		t.Errorf("relative error to the float64 reference %.3g", e)
	}
}

func TestForwardMatchesExecutorPerKind(t *testing.T) {
	for name, m := range kindModels() {
		t.Run(name, func(t *testing.T) {
			// Inputs of scale 4 drive ReLU6 into its upper clip.
			checkForward(t, m, 3, 4)
		})
	}
}

func TestForwardMatchesExecutorZoo(t *testing.T) {
	for _, name := range zoo.Names {
		t.Run(name, func(t *testing.T) {
			m, err := zoo.Build(name, nn.Shape{C: 1, H: 28, W: 28}, 10, 1)
			if err != nil {
				t.Fatal(err)
			}
			checkForward(t, m, 4, 1)
		})
	}
}

func TestForwardMasked(t *testing.T) {
	m := gradModels()["convnet"]
	randomize(m, 1)
	addMasks(m, 2, "c1", "gc", "fc")
	// A masked weight stored as non-zero must not count.
	m.Layer("c1").Weight[firstZero(m.Layer("c1").Mask)] = 5
	checkForwardMasked(t, m)
}

func firstZero(mask []float32) int {
	for i, v := range mask {
		if v == 0 {
			return i
		}
	}
	panic("no masked weight")
}

func checkForwardMasked(t *testing.T, m *nn.Model) {
	x, _ := randomInput(m, 2, 2, 3)
	got, err := Forward(m, x, 2)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := refForward(m, toRef(m), x, 2, nil, false)
	if e := relErr(got, ref); e >= 1e-5 {
		t.Errorf("relative error to the float64 reference %.3g", e)
	}
	if w := m.Layer("c1").Weight[firstZero(m.Layer("c1").Mask)]; w != 5 {
		t.Errorf("Forward modified the model: weight %v", w)
	}
}

func ExampleForward() {
	m, _ := zoo.Build("mlp", nn.Shape{C: 1, H: 28, W: 28}, 10, 1)
	x := make([]float32, 2*28*28)
	logits, err := Forward(m, x, 2)
	fmt.Println(len(logits), err)
	// Output: 20 <nil>
}
