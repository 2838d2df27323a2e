// Package onnx converts autoprune models to and from ONNX, so that a model trained elsewhere
// (PyTorch's torch.onnx.export, for one) can be pruned and searched, and a pruned model can be
// deployed with ONNX Runtime, TFLite converters or a phone SDK.
//
// Export writes opset 13 with a dynamic batch dimension and float32 initializers. Import
// reads the operators the engine runs (Conv, BatchNormalization, Relu, Clip as ReLU6,
// LeakyRelu, Sigmoid, HardSigmoid, HardSwish (written as x * HardSigmoid(x) in opset 13),
// MaxPool, AveragePool, GlobalAveragePool, Flatten, Reshape to 2-D (with its shape
// constant or computed by Shape, Gather, Unsqueeze and Concat, as x.view(x.size(0), -1)
// exports it), Gemm, MatMul followed by a bias Add, Add and Sum of activations, Concat of
// channels, Identity, Dropout, a Pad by zero) at opsets 9 to 21; anything else is refused with an error that names the operator and the node.
// An imported model prunes, trains and searches like a zoo model.
package onnx

import (
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"strings"

	pb "github.com/advancedclimatesystems/gonnx/onnx"
	"google.golang.org/protobuf/proto"

	"github.com/autoprune/autoprune/internal/fileio"
	"github.com/autoprune/autoprune/nn"
)

// Opset is the ONNX operator set version Export writes.
const Opset = 13

// irVersion is the ONNX IR version that goes with Opset 13.
const irVersion = 7

// batchDim names the dynamic batch dimension of the exported input and output.
const batchDim = "N"

// Marshal encodes a model as an ONNX ModelProto (see Encode).
func Marshal(m *nn.Model) ([]byte, error) {
	g, err := graph(m)
	if err != nil {
		return nil, err
	}
	mp := &pb.ModelProto{
		IrVersion:    irVersion,
		ProducerName: "autoprune",
		OpsetImport:  []*pb.OperatorSetIdProto{{Domain: "", Version: Opset}},
		Graph:        g,
	}
	return proto.Marshal(mp)
}

// Encode writes a model as ONNX: opset 13, input "input" of shape (N, C, H, W) with a
// dynamic batch N, float32 initializers named like PyTorch's (LAYER.weight, LAYER.bias,
// LAYER.running_mean, ...), one node per layer, and the last layer's output as the graph
// output. Masked weights are written as the zeros they are.
func Encode(w io.Writer, m *nn.Model) error {
	b, err := Marshal(m)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// exporter builds the graph; rank tells, for every value, whether it is an image batch
// (4-D, N x C x H x W) or a feature batch (2-D, N x F).
type exporter struct {
	g      *pb.GraphProto
	rank   map[string]int
	shapes map[string]nn.Shape
}

func graph(m *nn.Model) (*pb.GraphProto, error) {
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("onnx export: %w", err)
	}
	shapes, err := m.Shapes()
	if err != nil {
		return nil, fmt.Errorf("onnx export: %w", err)
	}
	name := m.Name
	if name == "" {
		name = "autoprune"
	}
	e := &exporter{
		g:      &pb.GraphProto{Name: name},
		rank:   map[string]int{nn.InputName: 4},
		shapes: map[string]nn.Shape{nn.InputName: m.Input},
	}
	e.g.Input = []*pb.ValueInfoProto{valueInfo(nn.InputName, 4, m.Input)}
	for i, l := range m.Layers {
		if err := e.layer(l); err != nil {
			return nil, fmt.Errorf("onnx export: layer %q (%s): %w", l.Name, l.Kind, err)
		}
		e.shapes[l.Name] = shapes[i]
	}
	out := m.Output()
	e.g.Output = []*pb.ValueInfoProto{valueInfo(out.Name, e.rank[out.Name], e.shapes[out.Name])}
	return e.g, nil
}

func valueInfo(name string, rank int, s nn.Shape) *pb.ValueInfoProto {
	dims := []*pb.TensorShapeProto_Dimension{{Value: &pb.TensorShapeProto_Dimension_DimParam{DimParam: batchDim}}}
	vals := []int{s.C, s.H, s.W}
	if rank == 2 {
		vals = []int{s.Size()}
	}
	for _, v := range vals {
		dims = append(dims, &pb.TensorShapeProto_Dimension{Value: &pb.TensorShapeProto_Dimension_DimValue{DimValue: int64(v)}})
	}
	return &pb.ValueInfoProto{Name: name, Type: &pb.TypeProto{Value: &pb.TypeProto_TensorType{TensorType: &pb.TypeProto_Tensor{
		ElemType: int32(pb.TensorProto_FLOAT),
		Shape:    &pb.TensorShapeProto{Dim: dims},
	}}}}
}

func (e *exporter) node(op, name string, inputs []string, output string, attrs ...*pb.AttributeProto) {
	e.g.Node = append(e.g.Node, &pb.NodeProto{OpType: op, Name: name, Input: inputs, Output: []string{output}, Attribute: attrs})
}

func (e *exporter) init(name string, dims []int, data []float32) string {
	d := make([]int64, len(dims))
	for i, v := range dims {
		d[i] = int64(v)
	}
	e.g.Initializer = append(e.g.Initializer, floatTensor(name, d, data))
	return name
}

func floatTensor(name string, dims []int64, data []float32) *pb.TensorProto {
	raw := make([]byte, 4*len(data))
	for i, v := range data {
		u := math.Float32bits(v)
		raw[4*i], raw[4*i+1], raw[4*i+2], raw[4*i+3] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
	}
	return &pb.TensorProto{Name: name, Dims: dims, DataType: int32(pb.TensorProto_FLOAT), RawData: raw}
}

func ints(name string, v ...int) *pb.AttributeProto {
	a := &pb.AttributeProto{Name: name, Type: pb.AttributeProto_INTS}
	for _, x := range v {
		a.Ints = append(a.Ints, int64(x))
	}
	return a
}

func intAttr(name string, v int) *pb.AttributeProto {
	return &pb.AttributeProto{Name: name, Type: pb.AttributeProto_INT, I: int64(v)}
}

// flat returns a 2-D version of value in (a feature batch), adding a Flatten node when it
// is an image batch.
func (e *exporter) flat(in string) string {
	if e.rank[in] == 2 {
		return in
	}
	out := in + "/flat"
	if _, done := e.rank[out]; !done {
		e.node("Flatten", out, []string{in}, out, intAttr("axis", 1))
		e.rank[out] = 2
	}
	return out
}

func floatAttr(name string, v float32) *pb.AttributeProto {
	return &pb.AttributeProto{Name: name, Type: pb.AttributeProto_FLOAT, F: v}
}

// alike returns the values of a layer that joins several inputs, all of one rank: flattened
// to feature batches when any of them is one, and that rank.
func (e *exporter) alike(inputs []string) ([]string, int) {
	ins, rank := append([]string(nil), inputs...), 4
	for _, x := range ins {
		if e.rank[x] == 2 {
			rank = 2
		}
	}
	if rank == 2 {
		for i, x := range ins {
			ins[i] = e.flat(x)
		}
	}
	return ins, rank
}

func (e *exporter) layer(l *nn.Layer) error {
	in := l.Inputs[0]
	rank := e.rank[in]
	switch l.Kind {
	case nn.Conv2D:
		if rank != 4 {
			return errors.New("input is a feature vector, not an image")
		}
		ins := []string{in, e.init(l.Name+".weight", []int{l.Out, l.In / l.GroupsOrOne(), l.Kernel, l.Kernel}, l.Weight)}
		if l.HasBias {
			ins = append(ins, e.init(l.Name+".bias", []int{l.Out}, l.Bias))
		}
		s, p := l.StrideOrOne(), l.Pad
		e.node("Conv", l.Name, ins, l.Name, ints("kernel_shape", l.Kernel, l.Kernel), ints("strides", s, s),
			ints("pads", p, p, p, p), ints("dilations", 1, 1), intAttr("group", l.GroupsOrOne()))
	case nn.BatchNorm:
		c := e.shapes[in].C
		ins := []string{in,
			e.init(l.Name+".weight", []int{c}, l.Gamma), e.init(l.Name+".bias", []int{c}, l.Beta),
			e.init(l.Name+".running_mean", []int{c}, l.Mean), e.init(l.Name+".running_var", []int{c}, l.Var)}
		e.node("BatchNormalization", l.Name, ins, l.Name, floatAttr("epsilon", l.EpsOrDefault()))
	case nn.ReLU:
		e.node("Relu", l.Name, []string{in}, l.Name)
	case nn.ReLU6:
		lo := e.init(l.Name+".min", nil, []float32{0})
		hi := e.init(l.Name+".max", nil, []float32{6})
		e.node("Clip", l.Name, []string{in, lo, hi}, l.Name)
	case nn.LeakyReLU:
		e.node("LeakyRelu", l.Name, []string{in}, l.Name, floatAttr("alpha", l.Slope))
	case nn.Sigmoid:
		e.node("Sigmoid", l.Name, []string{in}, l.Name)
	case nn.HardSigmoid:
		e.node("HardSigmoid", l.Name, []string{in}, l.Name, floatAttr("alpha", l.Slope), floatAttr("beta", l.Offset))
	case nn.HardSwish:
		// HardSwish is an operator from opset 14; in opset 13 it is x * HardSigmoid(x).
		hs := l.Name + "/hardsigmoid"
		e.node("HardSigmoid", hs, []string{in}, hs, floatAttr("alpha", 1.0/6), floatAttr("beta", 0.5))
		e.node("Mul", l.Name, []string{in, hs}, l.Name)
	case nn.MaxPool, nn.AvgPool:
		if rank != 4 {
			return errors.New("input is a feature vector, not an image")
		}
		s, p := l.StrideOrOne(), l.Pad
		attrs := []*pb.AttributeProto{ints("kernel_shape", l.Kernel, l.Kernel), ints("strides", s, s), ints("pads", p, p, p, p)}
		op := "MaxPool"
		if l.Kind == nn.AvgPool {
			op = "AveragePool"
			attrs = append(attrs, intAttr("count_include_pad", 1))
		}
		e.node(op, l.Name, []string{in}, l.Name, attrs...)
	case nn.GlobalAvgPool:
		if rank != 4 {
			return errors.New("input is a feature vector, not an image")
		}
		e.node("GlobalAveragePool", l.Name, []string{in}, l.Name)
	case nn.Flatten:
		e.node("Flatten", l.Name, []string{in}, l.Name, intAttr("axis", 1))
		rank = 2
	case nn.Linear:
		ins := []string{e.flat(in), e.init(l.Name+".weight", []int{l.Out, l.In}, l.Weight)}
		if l.HasBias {
			ins = append(ins, e.init(l.Name+".bias", []int{l.Out}, l.Bias))
		}
		e.node("Gemm", l.Name, ins, l.Name, intAttr("transB", 1))
		rank = 2
	case nn.Add:
		var ins []string
		ins, rank = e.alike(l.Inputs)
		op := "Add"
		if len(ins) > 2 {
			op = "Sum"
		}
		e.node(op, l.Name, ins, l.Name)
	case nn.Concat:
		var ins []string
		ins, rank = e.alike(l.Inputs)
		e.node("Concat", l.Name, ins, l.Name, intAttr("axis", 1))
	default:
		return fmt.Errorf("no ONNX form for layer kind %q", l.Kind)
	}
	e.rank[l.Name] = rank
	return nil
}

// Save writes the model as an ONNX file atomically (see fileio.WriteAtomic): a new file
// gets 0644, a replaced one keeps its permissions. Errors start with "onnx file <path>:".
func Save(path string, m *nn.Model) error {
	b, err := Marshal(m)
	if err != nil {
		return fmt.Errorf("onnx file %s: %w", path, err)
	}
	if err := fileio.WriteAtomic(path, func(w io.Writer) error { _, err := w.Write(b); return err }); err != nil {
		return fmt.Errorf("onnx file %s: %w", path, err)
	}
	return nil
}

// IsONNX tells whether a path names an ONNX file, by its extension.
func IsONNX(path string) bool { return strings.EqualFold(filepath.Ext(path), ".onnx") }

// SaveFile writes a model as ONNX when path ends in .onnx, else as an autoprune model file
// (nn.Save). ONNX keeps no masks: masked weights are stored as the zeros they are.
func SaveFile(path string, m *nn.Model) error {
	if IsONNX(path) {
		return Save(path, m)
	}
	return nn.Save(path, m)
}
