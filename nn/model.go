// Package nn holds the network model of autoprune: a small directed acyclic graph of named
// layers whose weights are plain []float32 slices, shape inference, parameter and
// multiply-add counts, an architecture hash, a pure-Go inference engine (Executor) and the
// model file format.
//
// Tensors are float32 and NCHW. Conv2D weights are laid out (OC, IC/groups, K, K) and Linear
// weights (Out, In), as in ONNX and PyTorch.
package nn

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
)

// Kind names a layer type.
type Kind string

// Layer kinds.
const (
	Conv2D        Kind = "conv2d"
	BatchNorm     Kind = "batchnorm"
	ReLU          Kind = "relu"
	ReLU6         Kind = "relu6"
	LeakyReLU     Kind = "leakyrelu"   // x for x > 0, Slope*x otherwise
	Sigmoid       Kind = "sigmoid"     // 1 / (1 + exp(-x))
	HardSigmoid   Kind = "hardsigmoid" // clamp(Slope*x + Offset, 0, 1)
	HardSwish     Kind = "hardswish"   // x * clamp(x/6 + 1/2, 0, 1)
	MaxPool       Kind = "maxpool"
	AvgPool       Kind = "avgpool"
	GlobalAvgPool Kind = "globalavgpool"
	Flatten       Kind = "flatten"
	Linear        Kind = "linear"
	Add           Kind = "add"
	Concat        Kind = "concat" // the inputs' channels one after another
)

// Kinds lists every layer kind, in a stable order.
var Kinds = []Kind{Conv2D, BatchNorm, ReLU, ReLU6, LeakyReLU, Sigmoid, HardSigmoid, HardSwish, MaxPool, AvgPool, GlobalAvgPool, Flatten, Linear, Add, Concat}

// InputName is the name by which a layer refers to the model input.
const InputName = "input"

// DefaultEps is the batch-norm epsilon used when a layer does not set one.
const DefaultEps = 1e-5

// ErrInvalid is wrapped by every error about an inconsistent model (bad shapes, unknown
// kinds, dangling inputs, wrong parameter sizes, non-finite weights).
var ErrInvalid = errors.New("invalid model")

// Shape is the shape of one sample's activation: channels, height, width. A feature vector
// of n values has shape {n, 1, 1}.
type Shape struct {
	C int `json:"c"`
	H int `json:"h"`
	W int `json:"w"`
}

// Size returns C*H*W.
func (s Shape) Size() int { return s.C * s.H * s.W }

// String formats the shape as CxHxW.
func (s Shape) String() string { return fmt.Sprintf("%dx%dx%d", s.C, s.H, s.W) }

// Layer is one node of the model graph. Hyper-parameters are serialised with the
// architecture; the parameter slices are stored separately in the model file.
type Layer struct {
	Name   string   `json:"name"`
	Kind   Kind     `json:"kind"`
	Inputs []string `json:"inputs"`

	// In and Out are the input and output channels of a Conv2D and the input and output
	// features of a Linear layer; unused by other kinds.
	In  int `json:"in,omitempty"`
	Out int `json:"out,omitempty"`
	// Kernel, Stride and Pad describe square Conv2D, MaxPool and AvgPool windows.
	Kernel int `json:"kernel,omitempty"`
	Stride int `json:"stride,omitempty"`
	Pad    int `json:"pad,omitempty"`
	// Groups splits a Conv2D into groups; Groups == In == Out is a depthwise convolution.
	Groups int `json:"groups,omitempty"`
	// HasBias tells whether a Conv2D or Linear layer has a bias vector.
	HasBias bool `json:"bias,omitempty"`
	// Eps is the batch-norm epsilon.
	Eps float32 `json:"eps,omitempty"`
	// Slope is the negative slope of a LeakyReLU and the slope of a HardSigmoid (ONNX's
	// alpha); Offset is a HardSigmoid's offset (ONNX's beta).
	Slope  float32 `json:"slope,omitempty"`
	Offset float32 `json:"offset,omitempty"`

	// Weight is (Out, In/Groups, Kernel, Kernel) for Conv2D and (Out, In) for Linear.
	Weight []float32 `json:"-"`
	// Bias has Out values when HasBias is set.
	Bias []float32 `json:"-"`
	// Mask, when not nil, has one value per weight: 1 keeps the weight, 0 prunes it
	// (unstructured pruning). A masked weight is stored as zero.
	Mask []float32 `json:"-"`
	// Gamma, Beta, Mean and Var are the batch-norm scale, shift and running statistics.
	Gamma []float32 `json:"-"`
	Beta  []float32 `json:"-"`
	Mean  []float32 `json:"-"`
	Var   []float32 `json:"-"`
}

// Model is a network: an input shape and layers in topological order. The last layer is the
// output. Layers refer to their inputs by name; InputName is the model input.
type Model struct {
	Name   string   `json:"name"`
	Input  Shape    `json:"input"`
	Layers []*Layer `json:"layers"`
}

// Param is one named parameter tensor of a layer, as stored in the model file.
type Param struct {
	Name  string     // e.g. "weight", "bias", "gamma"
	Shape []int      // tensor shape
	Data  *[]float32 // the slice in the layer, so that decoders can fill it
}

// Params lists the parameter tensors a layer must have, with their expected shapes. It
// relies on the layer's hyper-parameters and, for BatchNorm, on the input channel count c.
func (l *Layer) Params(c int) []Param {
	switch l.Kind {
	case Conv2D:
		g := l.groups()
		ps := []Param{{"weight", []int{l.Out, l.In / g, l.Kernel, l.Kernel}, &l.Weight}}
		if l.HasBias {
			ps = append(ps, Param{"bias", []int{l.Out}, &l.Bias})
		}
		if l.Mask != nil {
			ps = append(ps, Param{"mask", []int{l.Out, l.In / g, l.Kernel, l.Kernel}, &l.Mask})
		}
		return ps
	case Linear:
		ps := []Param{{"weight", []int{l.Out, l.In}, &l.Weight}}
		if l.HasBias {
			ps = append(ps, Param{"bias", []int{l.Out}, &l.Bias})
		}
		if l.Mask != nil {
			ps = append(ps, Param{"mask", []int{l.Out, l.In}, &l.Mask})
		}
		return ps
	case BatchNorm:
		return []Param{
			{"gamma", []int{c}, &l.Gamma},
			{"beta", []int{c}, &l.Beta},
			{"running_mean", []int{c}, &l.Mean},
			{"running_var", []int{c}, &l.Var},
		}
	}
	return nil
}

func (l *Layer) groups() int {
	if l.Groups <= 0 {
		return 1
	}
	return l.Groups
}

func (l *Layer) stride() int {
	if l.Stride <= 0 {
		return 1
	}
	return l.Stride
}

// EpsOrDefault returns the batch-norm epsilon, DefaultEps when unset.
func (l *Layer) EpsOrDefault() float32 {
	if l.Eps <= 0 {
		return DefaultEps
	}
	return l.Eps
}

// GroupsOrOne returns the number of convolution groups, 1 when unset.
func (l *Layer) GroupsOrOne() int { return l.groups() }

// StrideOrOne returns the window stride, 1 when unset.
func (l *Layer) StrideOrOne() int { return l.stride() }

// Clone returns a deep copy of the layer.
func (l *Layer) Clone() *Layer {
	c := *l
	c.Inputs = append([]string(nil), l.Inputs...)
	c.Weight = cloneF(l.Weight)
	c.Bias = cloneF(l.Bias)
	c.Mask = cloneF(l.Mask)
	c.Gamma = cloneF(l.Gamma)
	c.Beta = cloneF(l.Beta)
	c.Mean = cloneF(l.Mean)
	c.Var = cloneF(l.Var)
	return &c
}

func cloneF(s []float32) []float32 {
	if s == nil {
		return nil
	}
	return append([]float32(nil), s...)
}

// Clone returns a deep copy of the model: weights included.
func (m *Model) Clone() *Model {
	c := &Model{Name: m.Name, Input: m.Input, Layers: make([]*Layer, len(m.Layers))}
	for i, l := range m.Layers {
		c.Layers[i] = l.Clone()
	}
	return c
}

// Layer returns the layer with the given name, or nil.
func (m *Model) Layer(name string) *Layer {
	for _, l := range m.Layers {
		if l.Name == name {
			return l
		}
	}
	return nil
}

// Index returns the position of the named layer, or -1.
func (m *Model) Index(name string) int {
	for i, l := range m.Layers {
		if l.Name == name {
			return i
		}
	}
	return -1
}

// Consumers returns the indices of the layers that read the named layer's output.
func (m *Model) Consumers(name string) []int {
	var out []int
	for i, l := range m.Layers {
		for _, in := range l.Inputs {
			if in == name {
				out = append(out, i)
				break
			}
		}
	}
	return out
}

// Output returns the model's output layer (the last one).
func (m *Model) Output() *Layer {
	if len(m.Layers) == 0 {
		return nil
	}
	return m.Layers[len(m.Layers)-1]
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

// Shapes infers the per-sample output shape of every layer (same order as m.Layers) and
// checks the architecture: known kinds, unique names, inputs defined before use, consistent
// channel counts and window sizes. It does not look at weights; see Validate.
func (m *Model) Shapes() ([]Shape, error) {
	if m.Input.C <= 0 || m.Input.H <= 0 || m.Input.W <= 0 {
		return nil, invalidf("input shape %v: every dimension must be positive", m.Input)
	}
	if in := m.Input; in.C > 1<<28 || in.H > 1<<28 || in.W > 1<<28 || int64(in.C)*int64(in.H)*int64(in.W) > 1<<28 {
		return nil, invalidf("input shape %v is too large", m.Input)
	}
	if len(m.Layers) == 0 {
		return nil, invalidf("model has no layers")
	}
	shapes := make([]Shape, len(m.Layers))
	known := map[string]Shape{InputName: m.Input}
	for i, l := range m.Layers {
		if l == nil {
			return nil, invalidf("layer %d is missing", i)
		}
		if l.Name == "" || l.Name == InputName {
			return nil, invalidf("layer %d: name %q is empty or reserved", i, l.Name)
		}
		if _, dup := known[l.Name]; dup {
			return nil, invalidf("layer %q: duplicate name", l.Name)
		}
		ins := make([]Shape, len(l.Inputs))
		for j, in := range l.Inputs {
			s, ok := known[in]
			if !ok {
				return nil, invalidf("layer %q: input %q is not defined before it", l.Name, in)
			}
			ins[j] = s
		}
		out, err := l.outShape(ins)
		if err != nil {
			return nil, fmt.Errorf("%w: layer %q (%s): %v", ErrInvalid, l.Name, l.Kind, err)
		}
		if out.C <= 0 || out.H <= 0 || out.W <= 0 {
			return nil, invalidf("layer %q (%s): output shape %v is empty", l.Name, l.Kind, out)
		}
		if out.Size() > 1<<28 {
			return nil, invalidf("layer %q (%s): output shape %v is too large", l.Name, l.Kind, out)
		}
		shapes[i] = out
		known[l.Name] = out
	}
	return shapes, nil
}

const maxDim = 1 << 20

func (l *Layer) outShape(ins []Shape) (Shape, error) {
	want := 1
	if l.Kind == Add || l.Kind == Concat {
		want = -1
	}
	if want == 1 && len(ins) != 1 {
		return Shape{}, fmt.Errorf("needs exactly 1 input, has %d", len(ins))
	}
	if want == -1 && len(ins) < 2 {
		return Shape{}, fmt.Errorf("needs at least 2 inputs, has %d", len(ins))
	}
	in := ins[0]
	switch l.Kind {
	case Conv2D:
		if l.In <= 0 || l.Out <= 0 || l.In > maxDim || l.Out > maxDim {
			return Shape{}, fmt.Errorf("channels in=%d out=%d must be in 1..%d", l.In, l.Out, maxDim)
		}
		if l.In != in.C {
			return Shape{}, fmt.Errorf("expects %d input channels, input has %d", l.In, in.C)
		}
		g := l.groups()
		if l.In%g != 0 || l.Out%g != 0 {
			return Shape{}, fmt.Errorf("groups=%d must divide in=%d and out=%d", g, l.In, l.Out)
		}
		return window(in, l.Out, l.Kernel, l.stride(), l.Pad)
	case MaxPool, AvgPool:
		return window(in, in.C, l.Kernel, l.stride(), l.Pad)
	case GlobalAvgPool:
		return Shape{in.C, 1, 1}, nil
	case BatchNorm, ReLU, ReLU6, Sigmoid, HardSwish:
		return in, nil
	case LeakyReLU, HardSigmoid:
		if math.IsNaN(float64(l.Slope)) || math.IsInf(float64(l.Slope), 0) || math.IsNaN(float64(l.Offset)) || math.IsInf(float64(l.Offset), 0) {
			return Shape{}, fmt.Errorf("slope %v and offset %v must be finite", l.Slope, l.Offset)
		}
		return in, nil
	case Flatten:
		return Shape{in.Size(), 1, 1}, nil
	case Linear:
		if l.In <= 0 || l.Out <= 0 || l.In > 1<<26 || l.Out > maxDim {
			return Shape{}, fmt.Errorf("features in=%d out=%d out of range", l.In, l.Out)
		}
		if in.H != 1 || in.W != 1 {
			return Shape{}, fmt.Errorf("input %v is not a feature vector (add a flatten layer)", in)
		}
		if l.In != in.C {
			return Shape{}, fmt.Errorf("expects %d input features, input has %d", l.In, in.C)
		}
		return Shape{l.Out, 1, 1}, nil
	case Add:
		for _, s := range ins[1:] {
			if s != in {
				return Shape{}, fmt.Errorf("input shapes differ: %v and %v", in, s)
			}
		}
		return in, nil
	case Concat:
		out := in
		for _, s := range ins[1:] {
			if s.H != in.H || s.W != in.W {
				return Shape{}, fmt.Errorf("input sizes differ: %v and %v (channels are joined, heights and widths must match)", in, s)
			}
			out.C += s.C
		}
		if out.C > maxDim {
			return Shape{}, fmt.Errorf("%d channels out of range", out.C)
		}
		return out, nil
	}
	return Shape{}, fmt.Errorf("unknown layer kind %q (known: %v)", l.Kind, Kinds)
}

func window(in Shape, c, k, s, p int) (Shape, error) {
	if k <= 0 || k > 64 || p < 0 || p >= k || s > 64 {
		return Shape{}, fmt.Errorf("kernel=%d stride=%d pad=%d out of range", k, s, p)
	}
	h := (in.H+2*p-k)/s + 1
	w := (in.W+2*p-k)/s + 1
	if in.H+2*p < k || in.W+2*p < k {
		return Shape{}, fmt.Errorf("kernel %d larger than padded input %v", k, in)
	}
	return Shape{c, h, w}, nil
}

// Validate checks the architecture (see Shapes) and that every layer has parameters of the
// right sizes with finite values, and masks with only 0 and 1.
func (m *Model) Validate() error {
	shapes, err := m.Shapes()
	if err != nil {
		return err
	}
	index := make(map[string]int, len(m.Layers))
	for i, l := range m.Layers {
		index[l.Name] = i
	}
	for _, l := range m.Layers {
		c := m.Input.C
		if j, ok := index[l.Inputs[0]]; ok {
			c = shapes[j].C
		}
		for _, p := range l.Params(c) {
			n := 1
			for _, d := range p.Shape {
				n *= d
			}
			if len(*p.Data) != n {
				return invalidf("layer %q: %s has %d values, want %d (shape %v)", l.Name, p.Name, len(*p.Data), n, p.Shape)
			}
			for k, v := range *p.Data {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					return invalidf("layer %q: %s[%d] is %v", l.Name, p.Name, k, v)
				}
				if p.Name == "mask" && v != 0 && v != 1 {
					return invalidf("layer %q: mask[%d] is %v, want 0 or 1", l.Name, k, v)
				}
			}
		}
		if l.Kind == BatchNorm {
			for k, v := range l.Var {
				if v < 0 {
					return invalidf("layer %q: running_var[%d] is negative (%v)", l.Name, k, v)
				}
			}
		}
	}
	return nil
}

// LayerStats describes one layer for inspection.
type LayerStats struct {
	Name   string
	Kind   Kind
	Out    Shape
	Params int   // parameter count (masks excluded, masked weights included)
	MACs   int64 // multiply-accumulates per sample
}

// Stats returns per-layer statistics. Only Conv2D and Linear layers count multiply-adds;
// batch norm, activations, pooling and additions are element-wise and excluded.
func (m *Model) Stats() ([]LayerStats, error) {
	shapes, err := m.Shapes()
	if err != nil {
		return nil, err
	}
	out := make([]LayerStats, len(m.Layers))
	for i, l := range m.Layers {
		st := LayerStats{Name: l.Name, Kind: l.Kind, Out: shapes[i]}
		switch l.Kind {
		case Conv2D:
			k := l.In / l.groups() * l.Kernel * l.Kernel
			st.Params = l.Out * k
			if l.HasBias {
				st.Params += l.Out
			}
			st.MACs = int64(shapes[i].H) * int64(shapes[i].W) * int64(l.Out) * int64(k)
		case Linear:
			st.Params = l.Out * l.In
			if l.HasBias {
				st.Params += l.Out
			}
			st.MACs = int64(l.Out) * int64(l.In)
		case BatchNorm:
			st.Params = 2 * shapes[i].C
		}
		out[i] = st
	}
	return out, nil
}

// Totals returns the total parameter count and multiply-adds per sample.
func (m *Model) Totals() (params int, macs int64, err error) {
	st, err := m.Stats()
	if err != nil {
		return 0, 0, err
	}
	for _, s := range st {
		params += s.Params
		macs += s.MACs
	}
	return params, macs, nil
}

// Architecture returns the model's architecture as JSON: everything but the weights.
func (m *Model) Architecture() ([]byte, error) {
	return json.Marshal(m)
}

// Hash returns a hex SHA-256 of the architecture without names: two models with the same
// layer kinds, hyper-parameters, wiring and input shape have the same hash whatever their
// weights. Latency depends only on this.
func (m *Model) Hash() string {
	type node struct {
		Kind                                 Kind
		Inputs                               []int
		In, Out, Kernel, Stride, Pad, Groups int
		HasBias                              bool
		Slope                                float32 `json:",omitempty"`
		Offset                               float32 `json:",omitempty"`
	}
	idx := map[string]int{InputName: -1}
	nodes := make([]node, len(m.Layers))
	for i, l := range m.Layers {
		n := node{Kind: l.Kind, In: l.In, Out: l.Out, Kernel: l.Kernel, Stride: l.stride(),
			Pad: l.Pad, Groups: l.groups(), HasBias: l.HasBias, Slope: l.Slope, Offset: l.Offset}
		for _, in := range l.Inputs {
			j, ok := idx[in]
			if !ok {
				j = -2
			}
			n.Inputs = append(n.Inputs, j)
		}
		nodes[i] = n
		idx[l.Name] = i
	}
	b, _ := json.Marshal(struct {
		Input Shape
		Nodes []node
	}{m.Input, nodes})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
