package train

import (
	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// linearOp is a fully connected layer y = x·(w*mask)ᵀ + b on x (N, In, 1, 1), with w
// (Out, In) in PyTorch layout and optional bias b (Out); y is (N, Out, 1, 1).
type linearOp struct {
	opBase
	n, in, out int
	hasBias    bool
	mask       []float32
	needDX     bool

	weff []float32
	y    outBuf
}

func newLinearOp(name string, n, in, out int, hasBias bool, mask []float32, needDX bool) *linearOp {
	op := &linearOp{opBase: newBase("linear", name), n: n, in: in, out: out, hasBias: hasBias, mask: mask, needDX: needDX}
	if mask != nil {
		op.weff = make([]float32, len(mask))
	}
	op.y = newOutBuf(n, out, 1, 1)
	return op
}

func (op *linearOp) Arity() int {
	if op.hasBias {
		return 3
	}
	return 2
}

func (op *linearOp) Type() hm.Type {
	if op.hasBias {
		return fnType(4, 2, 1, 4)
	}
	return fnType(4, 2, 4)
}

func (op *linearOp) InferShape(...G.DimSizer) (tensor.Shape, error) { return op.y.shape.Clone(), nil }

func (op *linearOp) Do(vals ...G.Value) (G.Value, error) {
	if err := checkArity(op, len(vals)); err != nil {
		return nil, err
	}
	x, err := f32(vals[0], op.n*op.in, op.id+" input")
	if err != nil {
		return nil, err
	}
	w, err := f32(vals[1], op.out*op.in, op.id+" weight")
	if err != nil {
		return nil, err
	}
	if op.mask != nil {
		for i, m := range op.mask {
			op.weff[i] = w[i] * m
		}
		w = op.weff
	}
	y := op.y.data
	beta := float32(0)
	if op.hasBias {
		b, err := f32(vals[2], op.out, op.id+" bias")
		if err != nil {
			return nil, err
		}
		for i := 0; i < op.n; i++ {
			copy(y[i*op.out:(i+1)*op.out], b)
		}
		beta = 1
	}
	sgemm(false, true, op.n, op.out, op.in, 1, x, op.in, w, op.in, beta, y, op.out)
	return op.y.get(), nil
}

func (op *linearOp) DiffWRT(n int) []bool {
	d := make([]bool, n)
	for i := range d {
		d[i] = i > 0 || op.needDX
	}
	return d
}

func (op *linearOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if err := checkArity(op, len(inputs)); err != nil {
		return nil, err
	}
	res := make(G.Nodes, len(inputs))
	var err error
	if op.needDX {
		gx := &linearGradOp{opBase: newBase("linear.gradX", op.id), l: op, which: 0}
		if res[0], err = G.ApplyOp(gx, inputs[1], grad); err != nil {
			return nil, err
		}
	}
	gw := &linearGradOp{opBase: newBase("linear.gradW", op.id), l: op, which: 1}
	if res[1], err = G.ApplyOp(gw, inputs[0], grad); err != nil {
		return nil, err
	}
	if op.hasBias {
		gb := &linearGradOp{opBase: newBase("linear.gradB", op.id), l: op, which: 2}
		if res[2], err = G.ApplyOp(gb, inputs[2], grad); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// linearGradOp computes one input gradient of a linearOp from (that input's partner, the
// output gradient): which 0 is dx from (w, dy), 1 is dw from (x, dy), 2 is db from (b, dy).
type linearGradOp struct {
	opBase
	l     *linearOp
	which int
	out   outBuf
	acc   []float64
}

func (op *linearGradOp) Arity() int { return 2 }

func (op *linearGradOp) Type() hm.Type {
	switch op.which {
	case 0:
		return fnType(2, 4, 4)
	case 1:
		return fnType(4, 4, 2)
	}
	return fnType(1, 4, 1)
}

func (op *linearGradOp) shape() tensor.Shape {
	l := op.l
	switch op.which {
	case 0:
		return tensor.Shape{l.n, l.in, 1, 1}
	case 1:
		return tensor.Shape{l.out, l.in}
	}
	return tensor.Shape{l.out}
}

func (op *linearGradOp) InferShape(...G.DimSizer) (tensor.Shape, error) { return op.shape(), nil }

func (op *linearGradOp) Do(vals ...G.Value) (G.Value, error) {
	l := op.l
	if op.out.t == nil {
		op.out = newOutBuf(op.shape()...)
		op.acc = make([]float64, l.out)
	}
	dy, err := f32(vals[1], l.n*l.out, op.id+" gradient")
	if err != nil {
		return nil, err
	}
	dst := op.out.data
	switch op.which {
	case 0: // dx (N x In) = dy (N x Out) · w (Out x In)
		w, err := f32(vals[0], l.out*l.in, op.id+" weight")
		if err != nil {
			return nil, err
		}
		if l.mask != nil {
			w = l.weff
		}
		sgemm(false, false, l.n, l.in, l.out, 1, dy, l.out, w, l.in, 0, dst, l.in)
	case 1: // dw (Out x In) = dyᵀ (Out x N) · x (N x In)
		x, err := f32(vals[0], l.n*l.in, op.id+" input")
		if err != nil {
			return nil, err
		}
		sgemm(true, false, l.out, l.in, l.n, 1, dy, l.out, x, l.in, 0, dst, l.in)
		if l.mask != nil {
			for i, m := range l.mask {
				dst[i] *= m
			}
		}
	default:
		sumRows(dy, l.n, l.out, dst, op.acc)
	}
	return op.out.get(), nil
}

// sumRows sets dst[j] to the sum over i of m[i*cols+j], accumulating in acc (cols values).
func sumRows(m []float32, rows, cols int, dst []float32, acc []float64) {
	clear(acc)
	for i := 0; i < rows; i++ {
		for j, v := range m[i*cols : (i+1)*cols] {
			acc[j] += float64(v)
		}
	}
	for j, v := range acc {
		dst[j] = float32(v)
	}
}
