package onnx

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"unicode/utf8"

	pb "github.com/advancedclimatesystems/gonnx/onnx"
	"google.golang.org/protobuf/proto"

	"github.com/autoprune/autoprune/internal/fileio"
	"github.com/autoprune/autoprune/nn"
)

// ErrUnsupported is wrapped by the errors about an ONNX graph that is valid but uses an
// operator, attribute or form the engine does not run. Like every other error of Decode, it
// also wraps nn.ErrFormat.
var ErrUnsupported = errors.New("unsupported")

// maxFile bounds the size of an ONNX file Load reads (protobuf's own limit is 2 GiB).
const maxFile = 1 << 30

// Load reads an ONNX file. Errors start with "onnx file <path>:" and, for the file's
// content, wrap nn.ErrFormat.
func Load(path string) (*nn.Model, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("onnx file %s: %w", path, fileio.StripPath(err))
	}
	defer f.Close()
	m, err := Decode(bufio.NewReader(f))
	if err != nil {
		return nil, fmt.Errorf("onnx file %s: %w", path, err)
	}
	return m, nil
}

// LoadFile reads a model from an ONNX file (by its .onnx extension) or from an autoprune
// model file (any other name).
func LoadFile(path string) (*nn.Model, error) {
	if IsONNX(path) {
		return Load(path)
	}
	return nn.Load(path)
}

// Decode reads an ONNX model (see Unmarshal).
func Decode(r io.Reader) (*nn.Model, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxFile {
		return nil, formatf("larger than %d bytes", maxFile)
	}
	return Unmarshal(b)
}

// formatError is an error about the content of an ONNX file: it wraps nn.ErrFormat, and
// ErrUnsupported when the content is valid ONNX the engine does not run.
type formatError struct {
	msg         string
	unsupported bool
}

func (e *formatError) Error() string { return e.msg }

func (e *formatError) Is(target error) bool {
	return target == nn.ErrFormat || (e.unsupported && target == ErrUnsupported)
}

func formatf(format string, args ...any) error {
	return &formatError{msg: fmt.Sprintf(format, args...)}
}

func unsupportedf(format string, args ...any) error {
	return &formatError{msg: "not supported: " + fmt.Sprintf(format, args...), unsupported: true}
}

// Unmarshal decodes an ONNX ModelProto into a model. The graph needs one float input of
// shape (N, C, H, W), one output, and only the operators listed in the package
// documentation; the result is validated like a model file.
func Unmarshal(b []byte) (*nn.Model, error) {
	var mp pb.ModelProto
	if err := proto.Unmarshal(b, &mp); err != nil {
		return nil, formatf("not an ONNX model: %v", err)
	}
	if mp.Graph == nil {
		return nil, formatf("not an ONNX model: no graph")
	}
	opset := int64(0)
	for _, o := range mp.OpsetImport {
		if o.Domain == "" || o.Domain == "ai.onnx" {
			opset = o.Version
		}
	}
	if opset < 9 || opset > 21 {
		return nil, unsupportedf("default-domain opset %d (want 9 to 21)", opset)
	}
	im := &importer{
		opset:  opset,
		consts: map[string]*pb.TensorProto{},
		values: map[string]value{},
		names:  map[string]bool{nn.InputName: true},
		uses:   map[string]int{},
		dims:   map[string]dimVec{},
	}
	m, err := im.graph(mp.Graph)
	if err != nil {
		return nil, err
	}
	if err := m.Validate(); err != nil {
		return nil, &formatError{msg: err.Error()}
	}
	return m, nil
}

// value is an activation of the graph: the layer that makes it (nn.InputName for the
// model input) and whether it is an image batch (rank 4) or a feature batch (rank 2).
type value struct {
	layer string
	rank  int
}

type importer struct {
	opset  int64
	m      *nn.Model
	consts map[string]*pb.TensorProto // initializers and Constant outputs
	values map[string]value
	names  map[string]bool // layer names taken
	uses   map[string]int  // how many node inputs read each value
	// dims are the integer vectors computed from activation shapes (Shape, Gather,
	// Unsqueeze, Concat), as x.view(x.size(0), -1) exports them; dynBatch marks the batch.
	dims map[string]dimVec
}

// dimVec is an integer tensor the importer computed from shapes: a vector, or a scalar.
type dimVec struct {
	v      []int64
	scalar bool
}

// dynBatch stands for the dynamic batch size in a dimVec.
const dynBatch = math.MinInt64

func (im *importer) graph(g *pb.GraphProto) (*nn.Model, error) {
	name := g.Name
	if name == "" || !utf8.ValidString(name) {
		name = "onnx"
	}
	im.m = &nn.Model{Name: name}
	for _, t := range g.Initializer {
		im.consts[t.Name] = t
	}
	var inputs []*pb.ValueInfoProto
	for _, v := range g.Input {
		if _, isInit := im.consts[v.Name]; !isInit {
			inputs = append(inputs, v)
		}
	}
	if len(inputs) != 1 {
		return nil, unsupportedf("%d graph inputs besides the initializers (want one image input)", len(inputs))
	}
	shape, err := inputShape(inputs[0])
	if err != nil {
		return nil, err
	}
	im.m.Input = shape
	im.values[inputs[0].Name] = value{nn.InputName, 4}
	for _, n := range g.Node {
		for _, x := range n.Input {
			im.uses[x]++
		}
	}
	for _, o := range g.Output {
		im.uses[o.Name]++
	}
	for i, n := range g.Node {
		if err := im.node(n); err != nil {
			label := n.Name
			if label == "" {
				label = fmt.Sprintf("#%d", i)
			}
			return nil, fmt.Errorf("node %s (%s): %w", label, n.OpType, err)
		}
	}
	if len(g.Output) != 1 {
		return nil, unsupportedf("%d graph outputs (want one)", len(g.Output))
	}
	out, ok := im.values[g.Output[0].Name]
	if !ok || out.layer == nn.InputName {
		return nil, formatf("graph output %q is not made by any supported node", g.Output[0].Name)
	}
	// Layers after the output (dead ends) are dropped; the output must be the last one left.
	last := im.m.Index(out.layer)
	im.m.Layers = im.m.Layers[:last+1]
	return im.m, nil
}

func inputShape(v *pb.ValueInfoProto) (nn.Shape, error) {
	t := v.GetType().GetTensorType()
	if t == nil {
		return nn.Shape{}, unsupportedf("input %q is not a tensor", v.Name)
	}
	if t.ElemType != int32(pb.TensorProto_FLOAT) {
		return nn.Shape{}, unsupportedf("input %q has element type %d (want float32)", v.Name, t.ElemType)
	}
	dims := t.GetShape().GetDim()
	if len(dims) != 4 {
		return nn.Shape{}, unsupportedf("input %q has rank %d (want 4: N, C, H, W)", v.Name, len(dims))
	}
	var chw [3]int
	for i, d := range dims[1:] {
		chw[i] = int(d.GetDimValue())
		if chw[i] <= 0 || chw[i] > 1<<20 {
			return nn.Shape{}, unsupportedf("input %q: dimension %d is %q, not a fixed size", v.Name, i+1, d.String())
		}
	}
	return nn.Shape{C: chw[0], H: chw[1], W: chw[2]}, nil
}

// layerName picks a unique layer name for a node: its name, else its first output.
func (im *importer) layerName(n *pb.NodeProto) string {
	base := n.Name
	if base == "" || !utf8.ValidString(base) {
		base = n.Output[0]
	}
	if !utf8.ValidString(base) || base == "" {
		base = strings.ToLower(n.OpType)
	}
	name := base
	for i := 2; im.names[name]; i++ {
		name = fmt.Sprintf("%s_%d", base, i)
	}
	im.names[name] = true
	return name
}

func (im *importer) add(n *pb.NodeProto, l *nn.Layer, rank int) {
	l.Name = im.layerName(n)
	im.m.Layers = append(im.m.Layers, l)
	im.values[n.Output[0]] = value{l.Name, rank}
}

// act returns the activation a node reads at input i.
func (im *importer) act(n *pb.NodeProto, i int) (value, error) {
	if i >= len(n.Input) || n.Input[i] == "" {
		return value{}, formatf("input %d is missing", i)
	}
	v, ok := im.values[n.Input[i]]
	if !ok {
		if _, isConst := im.consts[n.Input[i]]; isConst {
			return value{}, unsupportedf("input %q is a constant, not an activation", n.Input[i])
		}
		return value{}, formatf("input %q is not defined before the node", n.Input[i])
	}
	return v, nil
}

// floats returns the constant a node reads at input i, with its dimensions.
func (im *importer) floats(n *pb.NodeProto, i int) ([]float32, []int64, error) {
	if i >= len(n.Input) || n.Input[i] == "" {
		return nil, nil, formatf("input %d is missing", i)
	}
	t, ok := im.consts[n.Input[i]]
	if !ok {
		return nil, nil, unsupportedf("input %q must be an initializer or a Constant", n.Input[i])
	}
	d, err := floatData(t)
	return d, t.Dims, err
}

// optFloats is floats for an optional input: nil when absent.
func (im *importer) optFloats(n *pb.NodeProto, i int) ([]float32, []int64, error) {
	if i >= len(n.Input) || n.Input[i] == "" {
		return nil, nil, nil
	}
	return im.floats(n, i)
}

func numel(dims []int64) (int, error) {
	n := int64(1)
	for _, d := range dims {
		if d < 0 || d > 1<<31 {
			return 0, formatf("tensor dimension %d out of range", d)
		}
		n *= d
		if n > 1<<31 {
			return 0, formatf("tensor of dimensions %v is too large", dims)
		}
	}
	return int(n), nil
}

func floatData(t *pb.TensorProto) ([]float32, error) {
	if t.DataLocation == pb.TensorProto_EXTERNAL {
		return nil, unsupportedf("tensor %q is stored in an external file", t.Name)
	}
	n, err := numel(t.Dims)
	if err != nil {
		return nil, err
	}
	var out []float32
	switch pb.TensorProto_DataType(t.DataType) {
	case pb.TensorProto_FLOAT:
		if t.RawData != nil {
			if len(t.RawData) != 4*n {
				return nil, formatf("tensor %q: %d bytes of data for %d float32 values", t.Name, len(t.RawData), n)
			}
			out = make([]float32, n)
			for i := range out {
				out[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.RawData[4*i:]))
			}
		} else {
			if len(t.FloatData) != n {
				return nil, formatf("tensor %q: %d values for dimensions %v", t.Name, len(t.FloatData), t.Dims)
			}
			out = append([]float32(nil), t.FloatData...)
		}
	default:
		return nil, unsupportedf("tensor %q has element type %d (want float32)", t.Name, t.DataType)
	}
	for _, v := range out {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, formatf("tensor %q holds a non-finite value", t.Name)
		}
	}
	return out, nil
}

func int64Data(t *pb.TensorProto) ([]int64, error) {
	n, err := numel(t.Dims)
	if err != nil {
		return nil, err
	}
	if pb.TensorProto_DataType(t.DataType) != pb.TensorProto_INT64 {
		return nil, unsupportedf("tensor %q has element type %d (want int64)", t.Name, t.DataType)
	}
	if t.RawData != nil {
		if len(t.RawData) != 8*n {
			return nil, formatf("tensor %q: %d bytes of data for %d int64 values", t.Name, len(t.RawData), n)
		}
		out := make([]int64, n)
		for i := range out {
			out[i] = int64(binary.LittleEndian.Uint64(t.RawData[8*i:]))
		}
		return out, nil
	}
	if len(t.Int64Data) != n {
		return nil, formatf("tensor %q: %d values for dimensions %v", t.Name, len(t.Int64Data), t.Dims)
	}
	return t.Int64Data, nil
}

// attrs indexes a node's attributes by name.
type attrs map[string]*pb.AttributeProto

func (a attrs) int(name string, def int64) int64 {
	if x, ok := a[name]; ok {
		return x.I
	}
	return def
}

func (a attrs) float(name string, def float32) float32 {
	if x, ok := a[name]; ok {
		return x.F
	}
	return def
}

func (a attrs) ints(name string) []int64 {
	if x, ok := a[name]; ok {
		return x.Ints
	}
	return nil
}

// window reads kernel_shape, strides, pads and dilations of a Conv or pooling node as the
// engine's square kernel, stride and symmetric padding.
func window(a attrs, kernelFromWeight []int64) (k, s, p int, err error) {
	if ap, ok := a["auto_pad"]; ok && string(ap.S) != "NOTSET" && string(ap.S) != "VALID" && string(ap.S) != "" {
		return 0, 0, 0, unsupportedf("auto_pad %q (give explicit pads)", ap.S)
	}
	ks := a.ints("kernel_shape")
	if ks == nil {
		ks = kernelFromWeight
	}
	if len(ks) != 2 || ks[0] != ks[1] || ks[0] <= 0 || ks[0] > 64 {
		return 0, 0, 0, unsupportedf("kernel_shape %v (want a square 2-D kernel up to 64)", ks)
	}
	k, s = int(ks[0]), 1
	if st := a.ints("strides"); st != nil {
		if len(st) != 2 || st[0] != st[1] || st[0] <= 0 || st[0] > 64 {
			return 0, 0, 0, unsupportedf("strides %v (want equal strides up to 64)", st)
		}
		s = int(st[0])
	}
	if pads := a.ints("pads"); pads != nil {
		if len(pads) != 4 || pads[0] != pads[1] || pads[0] != pads[2] || pads[0] != pads[3] || pads[0] < 0 || pads[0] >= int64(k) {
			return 0, 0, 0, unsupportedf("pads %v (want the same padding on every side, below the kernel size)", pads)
		}
		p = int(pads[0])
	}
	for _, d := range a.ints("dilations") {
		if d != 1 {
			return 0, 0, 0, unsupportedf("dilations %v", a.ints("dilations"))
		}
	}
	if a.int("ceil_mode", 0) != 0 {
		return 0, 0, 0, unsupportedf("ceil_mode 1")
	}
	return k, s, p, nil
}

// onlyFirstOutput refuses a node whose secondary outputs (pooling indices, dropout
// masks, batch-norm statistics) are read.
func (im *importer) onlyFirstOutput(n *pb.NodeProto) error {
	for _, o := range n.Output[1:] {
		if o != "" && im.uses[o] > 0 {
			return unsupportedf("its output %q is used", o)
		}
	}
	return nil
}

func (im *importer) node(n *pb.NodeProto) error {
	if n.Domain != "" && n.Domain != "ai.onnx" {
		return unsupportedf("operator domain %q", n.Domain)
	}
	if len(n.Output) == 0 || n.Output[0] == "" {
		return formatf("no output")
	}
	if err := im.onlyFirstOutput(n); err != nil {
		return err
	}
	a := attrs{}
	for _, x := range n.Attribute {
		a[x.Name] = x
	}
	switch n.OpType {
	case "Constant":
		t := a["value"].GetT()
		if t == nil {
			return unsupportedf("a Constant without a tensor value")
		}
		im.consts[n.Output[0]] = t
		return nil
	case "Pad":
		if err := im.zeroPad(n, a); err != nil {
			return err
		}
		fallthrough
	case "Identity", "Dropout":
		in, err := im.act(n, 0)
		if err != nil {
			return err
		}
		im.values[n.Output[0]] = in
		return nil
	case "Conv":
		return im.conv(n, a)
	case "BatchNormalization":
		return im.batchNorm(n, a)
	case "Relu":
		return im.unary(n, nn.ReLU)
	case "LeakyRelu":
		return im.activation(n, &nn.Layer{Kind: nn.LeakyReLU, Slope: a.float("alpha", 0.01)})
	case "Sigmoid":
		return im.unary(n, nn.Sigmoid)
	case "HardSigmoid":
		return im.activation(n, &nn.Layer{Kind: nn.HardSigmoid, Slope: a.float("alpha", 0.2), Offset: a.float("beta", 0.5)})
	case "HardSwish":
		return im.unary(n, nn.HardSwish)
	case "Mul":
		return im.mul(n)
	case "Clip":
		return im.clip(n, a)
	case "MaxPool", "AveragePool":
		return im.pool(n, a)
	case "GlobalAveragePool":
		in, err := im.act(n, 0)
		if err != nil {
			return err
		}
		if in.rank != 4 {
			return unsupportedf("input is not an image batch")
		}
		im.add(n, &nn.Layer{Kind: nn.GlobalAvgPool, Inputs: []string{in.layer}}, 4)
		return nil
	case "Flatten":
		if a.int("axis", 1) != 1 {
			return unsupportedf("axis %d (want 1)", a.int("axis", 1))
		}
		return im.flatten(n)
	case "Reshape":
		return im.reshape(n)
	case "Gemm":
		return im.gemm(n, a)
	case "MatMul":
		return im.matmul(n)
	case "Add", "Sum":
		return im.sum(n)
	case "Concat":
		if len(n.Input) > 0 {
			if _, isDims := im.dimsOf(n.Input[0]); isDims {
				return im.concatDims(n)
			}
		}
		return im.concat(n, a)
	case "Shape":
		return im.shape(n)
	case "Gather":
		return im.gather(n, a)
	case "Unsqueeze":
		return im.unsqueeze(n, a)
	}
	return &formatError{unsupported: true, msg: fmt.Sprintf("operator %s is not supported (supported: Conv, BatchNormalization, Relu, Clip, LeakyRelu, Sigmoid, HardSigmoid, HardSwish, Mul as x*HardSigmoid(x), Concat of channels, MaxPool, AveragePool, GlobalAveragePool, Flatten, Reshape, Gemm, MatMul, Add, Sum, Identity, Dropout, Constant, Pad by zero)", n.OpType)}
}

// zeroPad accepts a Pad that pads nothing (PyTorch writes one before some pools).
func (im *importer) zeroPad(n *pb.NodeProto, a attrs) error {
	pads := a.ints("pads")
	if im.opset >= 11 {
		if len(n.Input) < 2 || n.Input[1] == "" {
			return formatf("Pad without pads")
		}
		t, ok := im.consts[n.Input[1]]
		if !ok {
			return unsupportedf("pads %q are computed in the graph", n.Input[1])
		}
		var err error
		if pads, err = int64Data(t); err != nil {
			return err
		}
	}
	for _, p := range pads {
		if p != 0 {
			return unsupportedf("Pad by %v (give the padding to the convolution or pool instead)", pads)
		}
	}
	return nil
}

// activation adds l, an element-wise layer, on the node's input.
func (im *importer) activation(n *pb.NodeProto, l *nn.Layer) error {
	in, err := im.act(n, 0)
	if err != nil {
		return err
	}
	l.Inputs = []string{in.layer}
	im.add(n, l, in.rank)
	return nil
}

// mul accepts x * HardSigmoid(x) with PyTorch's slope 1/6 and offset 1/2, which is how a
// HardSwish is written before opset 14: the HardSigmoid layer becomes that HardSwish.
func (im *importer) mul(n *pb.NodeProto) error {
	if len(n.Input) != 2 {
		return formatf("Mul of %d inputs", len(n.Input))
	}
	for i := range 2 {
		x, err := im.act(n, i)
		if err != nil {
			return err
		}
		h, err := im.act(n, 1-i)
		if err != nil {
			return err
		}
		l := im.m.Layer(h.layer)
		if l == nil || l.Kind != nn.HardSigmoid || l.Inputs[0] != x.layer || im.uses[n.Input[1-i]] != 1 ||
			math.Abs(float64(l.Slope)-1.0/6) > 1e-6 || l.Offset != 0.5 {
			continue
		}
		delete(im.names, l.Name)
		l.Kind, l.Slope, l.Offset, l.Name = nn.HardSwish, 0, 0, im.layerName(n)
		im.values[n.Output[0]] = value{l.Name, x.rank}
		return nil
	}
	return unsupportedf("Mul other than x * HardSigmoid(x) with alpha 1/6, beta 1/2 (a HardSwish)")
}

func (im *importer) unary(n *pb.NodeProto, kind nn.Kind) error {
	in, err := im.act(n, 0)
	if err != nil {
		return err
	}
	im.add(n, &nn.Layer{Kind: kind, Inputs: []string{in.layer}}, in.rank)
	return nil
}

func (im *importer) conv(n *pb.NodeProto, a attrs) error {
	in, err := im.act(n, 0)
	if err != nil {
		return err
	}
	if in.rank != 4 {
		return unsupportedf("input is not an image batch")
	}
	w, wd, err := im.floats(n, 1)
	if err != nil {
		return err
	}
	if len(wd) != 4 {
		return unsupportedf("weight of rank %d (want a 2-D convolution)", len(wd))
	}
	k, s, p, err := window(a, wd[2:])
	if err != nil {
		return err
	}
	if wd[2] != int64(k) || wd[3] != int64(k) {
		return formatf("weight dimensions %v disagree with kernel_shape %d", wd, k)
	}
	g := a.int("group", 1)
	if g <= 0 || g > 1<<20 {
		return formatf("group %d", g)
	}
	l := &nn.Layer{Kind: nn.Conv2D, Inputs: []string{in.layer}, Out: int(wd[0]), In: int(wd[1] * g),
		Kernel: k, Stride: s, Pad: p, Groups: int(g), Weight: w}
	b, bd, err := im.optFloats(n, 2)
	if err != nil {
		return err
	}
	if b != nil {
		if len(bd) != 1 || bd[0] != wd[0] {
			return formatf("bias dimensions %v (want [%d])", bd, wd[0])
		}
		l.HasBias, l.Bias = true, b
	}
	im.add(n, l, 4)
	return nil
}

func (im *importer) batchNorm(n *pb.NodeProto, a attrs) error {
	in, err := im.act(n, 0)
	if err != nil {
		return err
	}
	if a.int("training_mode", 0) != 0 {
		return unsupportedf("training_mode 1")
	}
	var p [4][]float32
	for i := range p {
		d, dims, err := im.floats(n, i+1)
		if err != nil {
			return err
		}
		if len(dims) != 1 {
			return formatf("input %d has dimensions %v (want one per channel)", i+1, dims)
		}
		p[i] = d
	}
	eps := a.float("epsilon", nn.DefaultEps)
	if !(eps > 0) || eps > 1 {
		return formatf("epsilon %g", eps)
	}
	im.add(n, &nn.Layer{Kind: nn.BatchNorm, Inputs: []string{in.layer}, Eps: eps,
		Gamma: p[0], Beta: p[1], Mean: p[2], Var: p[3]}, in.rank)
	return nil
}

func (im *importer) clip(n *pb.NodeProto, a attrs) error {
	lo, hi := float32(math.Inf(-1)), float32(math.Inf(1))
	if im.opset < 11 {
		lo, hi = a.float("min", lo), a.float("max", hi)
	} else {
		for i, dst := range []*float32{&lo, &hi} {
			v, _, err := im.optFloats(n, i+1)
			if err != nil {
				return err
			}
			if v != nil {
				if len(v) != 1 {
					return formatf("Clip bound of %d values (want a scalar)", len(v))
				}
				*dst = v[0]
			}
		}
	}
	switch {
	case lo == 0 && hi == 6:
		return im.unary(n, nn.ReLU6)
	case lo == 0 && math.IsInf(float64(hi), 1):
		return im.unary(n, nn.ReLU)
	}
	return unsupportedf("Clip to [%g, %g] (the engine runs [0, 6] and [0, inf))", lo, hi)
}

func (im *importer) pool(n *pb.NodeProto, a attrs) error {
	in, err := im.act(n, 0)
	if err != nil {
		return err
	}
	if in.rank != 4 {
		return unsupportedf("input is not an image batch")
	}
	if a.int("storage_order", 0) != 0 {
		return unsupportedf("storage_order 1")
	}
	k, s, p, err := window(a, nil)
	if err != nil {
		return err
	}
	kind := nn.MaxPool
	if n.OpType == "AveragePool" {
		kind = nn.AvgPool
		if p > 0 && a.int("count_include_pad", 0) == 0 {
			return unsupportedf("padding left out of the average (count_include_pad 0); the engine divides by the whole window")
		}
	}
	im.add(n, &nn.Layer{Kind: kind, Inputs: []string{in.layer}, Kernel: k, Stride: s, Pad: p}, 4)
	return nil
}

func (im *importer) flatten(n *pb.NodeProto) error {
	in, err := im.act(n, 0)
	if err != nil {
		return err
	}
	if in.rank == 2 {
		im.values[n.Output[0]] = in
		return nil
	}
	im.add(n, &nn.Layer{Kind: nn.Flatten, Inputs: []string{in.layer}}, 2)
	return nil
}

// reshape accepts a Reshape to (batch, -1) or (batch, features): a flatten.
func (im *importer) reshape(n *pb.NodeProto) error {
	if len(n.Input) < 2 {
		return formatf("Reshape without a shape input")
	}
	var shape []int64
	if d, ok := im.dims[n.Input[1]]; ok {
		shape = d.v
		if len(shape) > 0 && shape[0] == dynBatch {
			shape = append([]int64{0}, shape[1:]...) // the batch, as PyTorch's x.size(0) gives it
		}
	} else {
		t, ok := im.consts[n.Input[1]]
		if !ok {
			return unsupportedf("shape %q is computed in the graph by operators the importer does not follow; export with a constant shape or torch.flatten(x, 1)", n.Input[1])
		}
		var err error
		if shape, err = int64Data(t); err != nil {
			return err
		}
	}
	for _, d := range shape[1:] {
		if d == dynBatch {
			return unsupportedf("Reshape that moves the batch dimension")
		}
	}
	if len(shape) != 2 || (shape[0] != 0 && shape[0] != -1 && shape[0] != 1) || shape[1] == 0 || shape[1] < -1 {
		return unsupportedf("Reshape to %v (only a flatten to (batch, features) is supported)", shape)
	}
	return im.flatten(n)
}

func (im *importer) gemm(n *pb.NodeProto, a attrs) error {
	in, err := im.act(n, 0)
	if err != nil {
		return err
	}
	if in.rank != 2 {
		return unsupportedf("input is not a feature batch")
	}
	if a.int("transA", 0) != 0 {
		return unsupportedf("transA 1")
	}
	w, wd, err := im.floats(n, 1)
	if err != nil {
		return err
	}
	if len(wd) != 2 {
		return formatf("weight of rank %d (want 2)", len(wd))
	}
	out, inF := int(wd[0]), int(wd[1])
	if a.int("transB", 0) == 0 {
		w, out, inF = transpose(w, out, inF), inF, out // B is (in, out)
	}
	if alpha := a.float("alpha", 1); alpha != 1 {
		for i := range w {
			w[i] *= alpha
		}
	}
	l := &nn.Layer{Kind: nn.Linear, Inputs: []string{in.layer}, In: inF, Out: out, Weight: w}
	b, bd, err := im.optFloats(n, 2)
	if err != nil {
		return err
	}
	if b != nil {
		if len(b) != out || (len(bd) == 2 && bd[0] != 1) || len(bd) > 2 {
			return unsupportedf("bias of dimensions %v (want [%d])", bd, out)
		}
		if beta := a.float("beta", 1); beta != 1 {
			for i := range b {
				b[i] *= beta
			}
		}
		l.HasBias, l.Bias = true, b
	}
	im.add(n, l, 2)
	return nil
}

// transpose turns a rows x cols row-major matrix into cols x rows.
func transpose(w []float32, rows, cols int) []float32 {
	t := make([]float32, len(w))
	for r := 0; r < rows; r++ {
		for c := 0; c < cols; c++ {
			t[c*rows+r] = w[r*cols+c]
		}
	}
	return t
}

// matmul reads MatMul(features, W) with W (in, out) as a Linear layer without bias; an Add
// of a constant right after it becomes the bias (see sum).
func (im *importer) matmul(n *pb.NodeProto) error {
	in, err := im.act(n, 0)
	if err != nil {
		return err
	}
	if in.rank != 2 {
		return unsupportedf("input is not a feature batch")
	}
	w, wd, err := im.floats(n, 1)
	if err != nil {
		return err
	}
	if len(wd) != 2 {
		return unsupportedf("weight of rank %d (want 2)", len(wd))
	}
	inF, out := int(wd[0]), int(wd[1])
	im.add(n, &nn.Layer{Kind: nn.Linear, Inputs: []string{in.layer}, In: inF, Out: out, Weight: transpose(w, inF, out)}, 2)
	return nil
}

func (im *importer) sum(n *pb.NodeProto) error {
	var acts []value
	var consts []int
	for i, x := range n.Input {
		if _, ok := im.consts[x]; ok {
			consts = append(consts, i)
			continue
		}
		v, err := im.act(n, i)
		if err != nil {
			return err
		}
		acts = append(acts, v)
	}
	if len(consts) > 0 {
		return im.bias(n, acts, consts)
	}
	if len(acts) < 2 {
		return formatf("%d inputs (want at least 2)", len(acts))
	}
	rank := acts[0].rank
	l := &nn.Layer{Kind: nn.Add}
	for _, v := range acts {
		if v.rank != rank {
			return unsupportedf("adds an image batch to a feature batch")
		}
		l.Inputs = append(l.Inputs, v.layer)
	}
	im.add(n, l, rank)
	return nil
}

// bias folds Add(linear, constant) into the Linear layer that a MatMul made, when that
// layer has no bias yet and nothing else reads its output.
func (im *importer) bias(n *pb.NodeProto, acts []value, consts []int) error {
	if len(acts) != 1 || len(consts) != 1 {
		return unsupportedf("adding a constant is supported only as the bias of a MatMul")
	}
	l := im.m.Layer(acts[0].layer)
	x := n.Input[1-consts[0]]
	if l == nil || l.Kind != nn.Linear || l.HasBias || im.uses[x] != 1 {
		return unsupportedf("adding a constant is supported only as the bias of a MatMul")
	}
	b, bd, err := im.floats(n, consts[0])
	if err != nil {
		return err
	}
	if len(b) != l.Out || len(bd) > 2 {
		return unsupportedf("bias of dimensions %v (want [%d])", bd, l.Out)
	}
	l.HasBias, l.Bias = true, b
	im.values[n.Output[0]] = acts[0]
	return nil
}

// concat accepts a Concat of activations along the channels (axis 1).
func (im *importer) concat(n *pb.NodeProto, a attrs) error {
	if len(n.Input) < 2 {
		return formatf("Concat of %d inputs (want at least 2)", len(n.Input))
	}
	l := &nn.Layer{Kind: nn.Concat}
	rank := 0
	for i := range n.Input {
		v, err := im.act(n, i)
		if err != nil {
			return err
		}
		if rank == 0 {
			rank = v.rank
		}
		if v.rank != rank {
			return unsupportedf("joins an image batch to a feature batch")
		}
		l.Inputs = append(l.Inputs, v.layer)
	}
	if axis := a.int("axis", 1); axis != 1 && axis != int64(1-rank) {
		return unsupportedf("axis %d (only channels, axis 1, are joined)", axis)
	}
	im.add(n, l, rank)
	return nil
}

// dimsOf returns the integer vector a node input holds when it is computed from shapes or
// is an int64 constant.
func (im *importer) dimsOf(name string) (dimVec, bool) {
	if d, ok := im.dims[name]; ok {
		return d, true
	}
	if t, ok := im.consts[name]; ok && pb.TensorProto_DataType(t.DataType) == pb.TensorProto_INT64 {
		v, err := int64Data(t)
		if err == nil && len(t.Dims) <= 1 {
			return dimVec{v: v, scalar: len(t.Dims) == 0}, true
		}
	}
	return dimVec{}, false
}

// shape is the Shape of an activation: the batch, then the channels (and height and width
// of an image batch).
func (im *importer) shape(n *pb.NodeProto) error {
	in, err := im.act(n, 0)
	if err != nil {
		return err
	}
	s := im.m.Input
	if in.layer != nn.InputName {
		shapes, err := im.m.Shapes()
		if err != nil {
			return err
		}
		s = shapes[im.m.Index(in.layer)]
	}
	v := []int64{dynBatch, int64(s.C), int64(s.H), int64(s.W)}
	if in.rank == 2 {
		v = []int64{dynBatch, int64(s.Size())}
	}
	im.dims[n.Output[0]] = dimVec{v: v}
	return nil
}

// gather picks entries of a computed shape by constant indices.
func (im *importer) gather(n *pb.NodeProto, a attrs) error {
	if len(n.Input) != 2 {
		return formatf("Gather of %d inputs", len(n.Input))
	}
	d, ok := im.dims[n.Input[0]]
	if !ok {
		return unsupportedf("Gather of anything but a tensor's shape")
	}
	idx, ok := im.dimsOf(n.Input[1])
	if !ok {
		return unsupportedf("Gather with computed indices")
	}
	if a.int("axis", 0) != 0 || d.scalar {
		return unsupportedf("Gather along axis %d of a shape", a.int("axis", 0))
	}
	out := dimVec{scalar: idx.scalar}
	for _, i := range idx.v {
		if i < 0 {
			i += int64(len(d.v))
		}
		if i < 0 || i >= int64(len(d.v)) {
			return formatf("Gather index %d out of a shape of %d dimensions", i, len(d.v))
		}
		out.v = append(out.v, d.v[i])
	}
	im.dims[n.Output[0]] = out
	return nil
}

// unsqueeze turns a computed scalar into a vector of one value.
func (im *importer) unsqueeze(n *pb.NodeProto, a attrs) error {
	d, ok := im.dims[n.Input[0]]
	if !ok {
		return unsupportedf("Unsqueeze of anything but a value computed from a shape")
	}
	axes := a.ints("axes")
	if im.opset >= 13 && len(n.Input) > 1 {
		v, ok := im.dimsOf(n.Input[1])
		if !ok {
			return unsupportedf("Unsqueeze with computed axes")
		}
		axes = v.v
	}
	if !d.scalar || len(axes) != 1 || axes[0] != 0 {
		return unsupportedf("Unsqueeze of axes %v (only a scalar to a vector of one)", axes)
	}
	im.dims[n.Output[0]] = dimVec{v: d.v}
	return nil
}

// concatDims joins computed shape vectors and int64 constants into one vector.
func (im *importer) concatDims(n *pb.NodeProto) error {
	var out dimVec
	for _, x := range n.Input {
		d, ok := im.dimsOf(x)
		if !ok || d.scalar {
			return unsupportedf("Concat of a shape with %q, which is not an integer vector", x)
		}
		out.v = append(out.v, d.v...)
	}
	im.dims[n.Output[0]] = out
	return nil
}
