package onnx

import (
	"bytes"
	"errors"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	pb "github.com/advancedclimatesystems/gonnx/onnx"
	"google.golang.org/protobuf/proto"

	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/nn/zoo"
	"github.com/autoprune/autoprune/prune"
)

// testModel builds a zoo model with random batch-norm statistics, so that every parameter
// tensor matters in the comparison.
func testModel(t testing.TB, name string, in nn.Shape) *nn.Model {
	t.Helper()
	m, err := zoo.Build(name, in, 10, 3)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewSource(5))
	for _, l := range m.Layers {
		if l.Kind != nn.BatchNorm {
			continue
		}
		for i := range l.Gamma {
			l.Gamma[i] = 0.5 + r.Float32()
			l.Beta[i] = r.Float32() - 0.5
			l.Mean[i] = 0.2 * (r.Float32() - 0.5)
			l.Var[i] = 0.5 + r.Float32()
		}
	}
	return m
}

// activationsModel is a small CNN with every element-wise activation the engine runs,
// after convolutions with batch norms and after a linear layer.
func activationsModel(t testing.TB) *nn.Model {
	t.Helper()
	l := func(name string, kind nn.Kind, in string) *nn.Layer {
		return &nn.Layer{Name: name, Kind: kind, Inputs: []string{in}}
	}
	conv := func(name, in string, cin, cout int) *nn.Layer {
		return &nn.Layer{Name: name, Kind: nn.Conv2D, Inputs: []string{in}, In: cin, Out: cout, Kernel: 3, Pad: 1}
	}
	leaky := l("leaky", nn.LeakyReLU, "bn1")
	leaky.Slope = 0.1
	hsig := l("hsig", nn.HardSigmoid, "c3")
	hsig.Slope, hsig.Offset = 0.2, 0.5
	m := &nn.Model{Name: "activations", Input: nn.Shape{C: 1, H: 12, W: 12}, Layers: []*nn.Layer{
		conv("c1", nn.InputName, 1, 8), l("bn1", nn.BatchNorm, "c1"), leaky,
		conv("c2", "leaky", 8, 8), l("bn2", nn.BatchNorm, "c2"), l("hswish", nn.HardSwish, "bn2"),
		conv("c3", "hswish", 8, 8), hsig,
		{Name: "pool", Kind: nn.MaxPool, Inputs: []string{"hsig"}, Kernel: 2, Stride: 2},
		l("flat", nn.Flatten, "pool"),
		{Name: "fc1", Kind: nn.Linear, Inputs: []string{"flat"}, In: 288, Out: 16, HasBias: true},
		l("sig", nn.Sigmoid, "fc1"),
		{Name: "fc2", Kind: nn.Linear, Inputs: []string{"sig"}, In: 16, Out: 10, HasBias: true},
	}}
	if err := m.Init(3); err != nil {
		t.Fatal(err)
	}
	return m
}

// inceptionModel joins two convolution branches and its stem by channels, and two feature
// vectors after the pooling.
func inceptionModel(t testing.TB) *nn.Model {
	t.Helper()
	m := &nn.Model{Name: "inception", Input: nn.Shape{C: 1, H: 10, W: 10}, Layers: []*nn.Layer{
		{Name: "stem", Kind: nn.Conv2D, Inputs: []string{nn.InputName}, In: 1, Out: 6, Kernel: 3, Pad: 1},
		{Name: "stem.relu", Kind: nn.ReLU, Inputs: []string{"stem"}},
		{Name: "b1", Kind: nn.Conv2D, Inputs: []string{"stem.relu"}, In: 6, Out: 4, Kernel: 1, HasBias: true},
		{Name: "b3", Kind: nn.Conv2D, Inputs: []string{"stem.relu"}, In: 6, Out: 5, Kernel: 3, Pad: 1, HasBias: true},
		{Name: "cat", Kind: nn.Concat, Inputs: []string{"b1", "b3", "stem.relu"}},
		{Name: "bn", Kind: nn.BatchNorm, Inputs: []string{"cat"}},
		{Name: "gap", Kind: nn.GlobalAvgPool, Inputs: []string{"bn"}},
		{Name: "flat", Kind: nn.Flatten, Inputs: []string{"gap"}},
		{Name: "fc1", Kind: nn.Linear, Inputs: []string{"flat"}, In: 15, Out: 8, HasBias: true},
		{Name: "feats", Kind: nn.Concat, Inputs: []string{"fc1", "flat"}},
		{Name: "fc2", Kind: nn.Linear, Inputs: []string{"feats"}, In: 23, Out: 10, HasBias: true},
	}}
	if err := m.Init(4); err != nil {
		t.Fatal(err)
	}
	return m
}

// testModels are the models the round trips check: every zoo model, activationsModel and
// inceptionModel.
func testModels(t testing.TB) map[string]*nn.Model {
	ms := map[string]*nn.Model{"activations": activationsModel(t), "inception": inceptionModel(t)}
	for _, name := range zoo.Names {
		ms[name] = testModel(t, name, nn.Shape{C: 1, H: 28, W: 28})
	}
	return ms
}

// variants returns a model dense, structurally pruned and masked.
func variants(t testing.TB, m *nn.Model) map[string]*nn.Model {
	t.Helper()
	out := map[string]*nn.Model{"dense": m}
	gs, err := prune.Groups(m)
	if err != nil {
		t.Fatal(err)
	}
	if len(gs) > 0 {
		p, err := prune.Structured(m, prune.Uniform(gs, 0.5), prune.L1{})
		if err != nil {
			t.Fatal(err)
		}
		out["pruned"] = p
	}
	masked, err := prune.Magnitude(m, 0.7, prune.PerLayer)
	if err != nil {
		t.Fatal(err)
	}
	out["masked"] = masked
	return out
}

func forward(t testing.TB, m *nn.Model, x []float32, batch int) []float32 {
	t.Helper()
	e, err := nn.NewExecutor(m, batch, nn.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	y, err := e.Forward(x)
	if err != nil {
		t.Fatal(err)
	}
	return append([]float32(nil), y...)
}

func input(s nn.Shape, batch int, seed int64) []float32 {
	r := rand.New(rand.NewSource(seed))
	x := make([]float32, batch*s.Size())
	for i := range x {
		x[i] = r.Float32()
	}
	return x
}

func maxDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	d := 0.0
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}

// Every zoo model, dense, pruned and masked, exported and imported again computes the same
// outputs, and keeps its multiply-adds and layer names.
func TestRoundTrip(t *testing.T) {
	for name, model := range testModels(t) {
		for kind, m := range variants(t, model) {
			t.Run(name+"/"+kind, func(t *testing.T) {
				b, err := Marshal(m)
				if err != nil {
					t.Fatal(err)
				}
				back, err := Unmarshal(b)
				if err != nil {
					t.Fatal(err)
				}
				if back.Input != m.Input {
					t.Errorf("input %v, want %v", back.Input, m.Input)
				}
				_, macs, _ := m.Totals()
				_, macs2, _ := back.Totals()
				if macs != macs2 {
					t.Errorf("MACs %d after the round trip, %d before", macs2, macs)
				}
				for _, l := range m.Layers {
					if back.Layer(l.Name) == nil && l.Kind != nn.Flatten {
						t.Errorf("layer %s (%s) lost its name", l.Name, l.Kind)
					}
				}
				x := input(m.Input, 3, 1)
				if d := maxDiff(forward(t, m, x, 3), forward(t, back, x, 3)); d > 1e-5 {
					t.Errorf("outputs differ by %g after the round trip", d)
				}
			})
		}
	}
}

// Save writes a file Load reads; LoadFile picks the format by extension.
func TestSaveLoad(t *testing.T) {
	m := testModel(t, "lenet5", nn.Shape{C: 1, H: 28, W: 28})
	dir := t.TempDir()
	path := filepath.Join(dir, "m.onnx")
	if err := Save(path, m); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("stat %s: %v %v", path, fi, err)
	}
	back, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	x := input(m.Input, 1, 2)
	if d := maxDiff(forward(t, m, x, 1), forward(t, back, x, 1)); d > 1e-5 {
		t.Errorf("outputs differ by %g", d)
	}
	native := filepath.Join(dir, "m.safetensors")
	if err := nn.Save(native, m); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadFile(native); err != nil {
		t.Errorf("LoadFile of a model file: %v", err)
	}
	if _, err := LoadFile(filepath.Join(dir, "none.onnx")); err == nil || !strings.Contains(err.Error(), "none.onnx") {
		t.Errorf("missing file: %v", err)
	}
}

// graphOf is a one-input graph (1x4x4 images) holding the given nodes and initializers.
func graphOf(nodes []*pb.NodeProto, inits ...*pb.TensorProto) []byte {
	in := valueInfo("x", 4, nn.Shape{C: 1, H: 4, W: 4})
	out := nodes[len(nodes)-1].Output[0]
	mp := &pb.ModelProto{IrVersion: 7, OpsetImport: []*pb.OperatorSetIdProto{{Version: 13}}, Graph: &pb.GraphProto{
		Node: nodes, Initializer: inits, Input: []*pb.ValueInfoProto{in},
		Output: []*pb.ValueInfoProto{{Name: out}},
	}}
	b, err := proto.Marshal(mp)
	if err != nil {
		panic(err)
	}
	return b
}

// Graphs the engine cannot run are refused with an error naming the node and what is wrong.
func TestUnsupported(t *testing.T) {
	w := floatTensor("w", []int64{2, 1, 3, 3}, make([]float32, 18))
	conv := func(attrs ...*pb.AttributeProto) *pb.NodeProto {
		return &pb.NodeProto{Name: "c1", OpType: "Conv", Input: []string{"x", "w"}, Output: []string{"y"}, Attribute: attrs}
	}
	cases := []struct {
		name  string
		model []byte
		want  string
	}{
		{"unknown op", graphOf([]*pb.NodeProto{{Name: "s1", OpType: "Tanh", Input: []string{"x"}, Output: []string{"y"}}}), "node s1 (Tanh): operator Tanh is not supported"},
		{"other Mul", graphOf([]*pb.NodeProto{
			{Name: "s", OpType: "Sigmoid", Input: []string{"x"}, Output: []string{"s"}},
			{Name: "m", OpType: "Mul", Input: []string{"x", "s"}, Output: []string{"y"}}}), "node m (Mul): not supported: Mul other than x * HardSigmoid(x)"},
		{"HardSigmoid of another slope", graphOf([]*pb.NodeProto{
			{Name: "h", OpType: "HardSigmoid", Input: []string{"x"}, Output: []string{"h"}},
			{Name: "m", OpType: "Mul", Input: []string{"h", "x"}, Output: []string{"y"}}}), "node m (Mul): not supported"},
		{"dilation", graphOf([]*pb.NodeProto{conv(ints("dilations", 2, 2))}, w), "node c1 (Conv): not supported: dilations [2 2]"},
		{"asymmetric pads", graphOf([]*pb.NodeProto{conv(ints("pads", 0, 0, 1, 1))}, w), "pads [0 0 1 1]"},
		{"computed weight", graphOf([]*pb.NodeProto{conv()}), `input "w" must be an initializer`},
		{"clip range", graphOf([]*pb.NodeProto{{Name: "k", OpType: "Clip", Input: []string{"x", "lo", "hi"}, Output: []string{"y"}}},
			floatTensor("lo", nil, []float32{-1}), floatTensor("hi", nil, []float32{1})), "Clip to [-1, 1]"},
		{"short data", graphOf([]*pb.NodeProto{conv()}, floatTensor("w", []int64{2, 1, 3, 3}, make([]float32, 5))), "20 bytes of data for 18 float32 values"},
		{"no graph", []byte{}, "no graph"},
		{"garbage", []byte("not a protobuf at all"), "not an ONNX model"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Unmarshal(c.model)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
			if !errors.Is(err, nn.ErrFormat) {
				t.Errorf("error %v does not wrap nn.ErrFormat", err)
			}
		})
	}
}

// Malformed ONNX files never panic; what is accepted is a valid model that runs.
func FuzzUnmarshal(f *testing.F) {
	m, err := zoo.Build("lenet5", nn.Shape{C: 1, H: 12, W: 12}, 3, 1)
	if err != nil {
		f.Fatal(err)
	}
	b, err := Marshal(m)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add(graphOf([]*pb.NodeProto{{Name: "r", OpType: "Relu", Input: []string{"x"}, Output: []string{"y"}}}))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Unmarshal(data)
		if err != nil {
			if !errors.Is(err, nn.ErrFormat) {
				t.Fatalf("error %v does not wrap nn.ErrFormat", err)
			}
			return
		}
		if m.Input.Size() > 1<<16 {
			return
		}
		e, err := nn.NewExecutor(m, 1, nn.Options{})
		if err != nil {
			return // too large to run here: Validate accepted it
		}
		if _, err := e.Forward(make([]float32, m.Input.Size())); err != nil {
			t.Fatal(err)
		}
	})
}

// Encode writes the same bytes as Marshal.
func TestEncode(t *testing.T) {
	m := testModel(t, "mlp", nn.Shape{C: 1, H: 28, W: 28})
	var buf bytes.Buffer
	if err := Encode(&buf, m); err != nil {
		t.Fatal(err)
	}
	b, _ := Marshal(m)
	if !bytes.Equal(buf.Bytes(), b) {
		t.Error("Encode and Marshal differ")
	}
}
