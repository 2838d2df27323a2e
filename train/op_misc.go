package train

import (
	"fmt"
	"math"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/autoprune/autoprune/internal/kernel"
	"github.com/autoprune/autoprune/nn"
)

// elemOp is an element-wise activation: nn.Layer.Activate forward, nn.Layer.ActivateGrad
// backward (from the op's input).
type elemOp struct {
	opBase
	l     *nn.Layer
	shape tensor.Shape
	out   outBuf
}

func newElemOp(l *nn.Layer, shape tensor.Shape) *elemOp {
	return &elemOp{opBase: newBase("elem", l.Name), l: l, shape: shape, out: newOutBuf(shape...)}
}

func (op *elemOp) Arity() int    { return 1 }
func (op *elemOp) Type() hm.Type { return fnType(4, 4) }
func (op *elemOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return op.shape.Clone(), nil
}

func (op *elemOp) Do(vals ...G.Value) (G.Value, error) {
	x, err := f32(vals[0], len(op.out.data), op.id)
	if err != nil {
		return nil, err
	}
	y := op.out.data
	parallel(len(y), 1, func(lo, hi int) { op.l.Activate(y[lo:hi], x[lo:hi]) })
	return op.out.get(), nil
}

func (op *elemOp) DiffWRT(int) []bool { return []bool{true} }

func (op *elemOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	gop := &elemGradOp{opBase: newBase("elem.grad", op.id), e: op}
	d, err := G.ApplyOp(gop, inputs[0], grad)
	return G.Nodes{d}, err
}

// elemGradOp is the gradient of an elemOp, from its input and its output's gradient.
type elemGradOp struct {
	opBase
	e   *elemOp
	out outBuf
}

func (op *elemGradOp) Arity() int    { return 2 }
func (op *elemGradOp) Type() hm.Type { return fnType(4, 4, 4) }
func (op *elemGradOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return op.e.shape.Clone(), nil
}

func (op *elemGradOp) Do(vals ...G.Value) (G.Value, error) {
	n := len(op.e.out.data)
	x, err := f32(vals[0], n, op.id+" input")
	if err != nil {
		return nil, err
	}
	dy, err := f32(vals[1], n, op.id+" gradient")
	if err != nil {
		return nil, err
	}
	if op.out.t == nil {
		op.out = newOutBuf(op.e.shape...)
	}
	dx := op.out.data
	parallel(n, 1, func(lo, hi int) { op.e.l.ActivateGrad(dx[lo:hi], x[lo:hi], dy[lo:hi]) })
	return op.out.get(), nil
}

// poolOp is max pooling, average pooling (PyTorch defaults: padding counts in the divisor,
// which is always k*k since windows never pass the padded border) or global average
// pooling, on (N, C, H, W). Max pooling ignores padded positions (as if they were -inf)
// and sends the gradient to the first maximum of each window.
type poolOp struct {
	opBase
	kind                  nn.Kind
	n, c, h, w            int
	k, s, p, oh, ow       int
	arg                   []int32 // max pooling: index in the input plane of each output
	out                   outBuf
	inShape, outShapeDims tensor.Shape
}

func newPoolOp(name string, kind nn.Kind, n, c, h, w, k, s, p int) *poolOp {
	op := &poolOp{opBase: newBase(string(kind), name), kind: kind, n: n, c: c, h: h, w: w, k: k, s: s, p: p}
	if kind == nn.GlobalAvgPool {
		op.oh, op.ow = 1, 1
	} else {
		op.oh, op.ow = (h+2*p-k)/s+1, (w+2*p-k)/s+1
	}
	if kind == nn.MaxPool {
		op.arg = make([]int32, n*c*op.oh*op.ow)
	}
	op.inShape = tensor.Shape{n, c, h, w}
	op.outShapeDims = tensor.Shape{n, c, op.oh, op.ow}
	op.out = newOutBuf(op.outShapeDims...)
	return op
}

func (op *poolOp) Arity() int    { return 1 }
func (op *poolOp) Type() hm.Type { return fnType(4, 4) }
func (op *poolOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return op.outShapeDims.Clone(), nil
}

// window returns the input rows and columns [y0, y1) x [x0, x1) of output (oy, ox),
// clipped to the input.
func (op *poolOp) window(oy, ox int) (y0, y1, x0, x1 int) {
	y0, x0 = oy*op.s-op.p, ox*op.s-op.p
	y1, x1 = min(y0+op.k, op.h), min(x0+op.k, op.w)
	return max(y0, 0), y1, max(x0, 0), x1
}

// maxPool2x2 is max pooling with 2 x 2 windows, stride 2 and no padding over one plane of
// width w: the common case, with the general loop's results (the first maximum of a window
// in scan order; with a NaN, the last NaN). The window's maximum comes first, then its
// position as the first value equal to it, without branches (random data would mispredict
// half of them); a window holding a NaN takes the general comparisons.
func maxPool2x2(xp, yp []float32, ap []int32, w, oh, ow int) {
	for oy := 0; oy < oh; oy++ {
		i0 := 2 * oy * w
		r0 := xp[i0 : i0+2*ow]
		r1 := xp[i0+w : i0+w+2*ow]
		yr := yp[oy*ow : oy*ow+ow]
		ar := ap[oy*ow : oy*ow+ow]
		ox := 0
		for {
			// Vector groups of 8 windows, up to one holding a NaN, which goes here.
			ox += kernel.MaxPool2x2Arg(yr[ox:], ar[ox:], r0[2*ox:], r1[2*ox:], i0+2*ox, w)
			if ox+8 > ow {
				break
			}
			maxPoolWindows(xp, yr, ar, i0, w, ox, ox+8)
			ox += 8
		}
		if t := ow - 8; ox < ow && t >= 0 {
			// The last windows as the group ending the row, overlapping done ones.
			if kernel.MaxPool2x2Arg(yr[t:], ar[t:], r0[2*t:], r1[2*t:], i0+2*t, w) == 8 {
				ox = ow
			}
		}
		maxPoolWindows(xp, yr, ar, i0, w, ox, ow)
	}
}

// maxPoolWindows is maxPool2x2 for the windows [lo, hi) of one output row, whose first
// input row starts at i0.
func maxPoolWindows(xp, yr []float32, ar []int32, i0, w, lo, hi int) {
	for ox := lo; ox < hi; ox++ {
		j := i0 + 2*ox
		a, b, c, d := xp[j], xp[j+1], xp[j+w], xp[j+w+1]
		m := max(max(a, b), max(c, d))
		if m != m {
			best, bi := a, j
			if b > best || b != b {
				best, bi = b, j+1
			}
			if c > best || c != c {
				best, bi = c, j+w
			}
			if d > best || d != d {
				best, bi = d, j+w+1
			}
			yr[ox], ar[ox] = best, int32(bi)
			continue
		}
		// Offsets of a, b, c and d: 0, 1, w and w+1; the first equal to m wins.
		na, nb, nc := 1-b2i(a == m), 1-b2i(b == m), 1-b2i(c == m)
		at := int32(j) + na*(1+nb*(int32(w)-1+nc))
		yr[ox], ar[ox] = xp[at], at // xp[at], not m: -0 and +0 tie, and a keeps its sign
	}
}

// b2i is 1 for true and 0 for false (compiled to a flag move, not a branch).
func b2i(c bool) int32 {
	var x int32
	if c {
		x = 1
	}
	return x
}

func (op *poolOp) Do(vals ...G.Value) (G.Value, error) {
	hw, ohw := op.h*op.w, op.oh*op.ow
	x, err := f32(vals[0], op.n*op.c*hw, op.id)
	if err != nil {
		return nil, err
	}
	y := op.out.data
	parallel(op.n*op.c, hw, func(lo, hi int) {
		for pl := lo; pl < hi; pl++ {
			xp := x[pl*hw : (pl+1)*hw]
			yp := y[pl*ohw : (pl+1)*ohw]
			switch op.kind {
			case nn.GlobalAvgPool:
				var s float64
				for _, v := range xp {
					s += float64(v)
				}
				yp[0] = float32(s / float64(hw))
			case nn.AvgPool:
				div := float32(op.k * op.k)
				for oy := 0; oy < op.oh; oy++ {
					for ox := 0; ox < op.ow; ox++ {
						y0, y1, x0, x1 := op.window(oy, ox)
						var s float32
						for iy := y0; iy < y1; iy++ {
							for _, v := range xp[iy*op.w+x0 : iy*op.w+x1] {
								s += v
							}
						}
						yp[oy*op.ow+ox] = s / div
					}
				}
			case nn.MaxPool:
				ap := op.arg[pl*ohw : (pl+1)*ohw]
				if op.k == 2 && op.s == 2 && op.p == 0 && 2*op.oh <= op.h && 2*op.ow <= op.w {
					maxPool2x2(xp, yp, ap, op.w, op.oh, op.ow)
					continue
				}
				for oy := 0; oy < op.oh; oy++ {
					for ox := 0; ox < op.ow; ox++ {
						y0, y1, x0, x1 := op.window(oy, ox)
						best, bi := float32(math.Inf(-1)), y0*op.w+x0
						for iy := y0; iy < y1; iy++ {
							for ix := x0; ix < x1; ix++ {
								if v := xp[iy*op.w+ix]; v > best || v != v {
									best, bi = v, iy*op.w+ix
								}
							}
						}
						yp[oy*op.ow+ox] = best
						ap[oy*op.ow+ox] = int32(bi)
					}
				}
			}
		}
	})
	return op.out.get(), nil
}

func (op *poolOp) DiffWRT(int) []bool { return []bool{true} }

func (op *poolOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	gop := &poolGradOp{opBase: newBase(string(op.kind)+".grad", op.id), pool: op}
	d, err := G.ApplyOp(gop, inputs[0], grad)
	return G.Nodes{d}, err
}

// poolGradOp computes the input gradient of a poolOp from (x, dy).
type poolGradOp struct {
	opBase
	pool *poolOp
	out  outBuf
}

func (op *poolGradOp) Arity() int    { return 2 }
func (op *poolGradOp) Type() hm.Type { return fnType(4, 4, 4) }
func (op *poolGradOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return op.pool.inShape.Clone(), nil
}

func (op *poolGradOp) Do(vals ...G.Value) (G.Value, error) {
	p := op.pool
	hw, ohw := p.h*p.w, p.oh*p.ow
	dy, err := f32(vals[1], p.n*p.c*ohw, op.id)
	if err != nil {
		return nil, err
	}
	if op.out.t == nil {
		op.out = newOutBuf(p.inShape...)
	}
	dx := op.out.data
	parallel(p.n*p.c, hw, func(lo, hi int) {
		for pl := lo; pl < hi; pl++ {
			dxp := dx[pl*hw : (pl+1)*hw]
			dyp := dy[pl*ohw : (pl+1)*ohw]
			switch p.kind {
			case nn.GlobalAvgPool:
				g := dyp[0] / float32(hw)
				for i := range dxp {
					dxp[i] = g
				}
			case nn.AvgPool:
				clear(dxp)
				div := float32(p.k * p.k)
				for oy := 0; oy < p.oh; oy++ {
					for ox := 0; ox < p.ow; ox++ {
						y0, y1, x0, x1 := p.window(oy, ox)
						g := dyp[oy*p.ow+ox] / div
						for iy := y0; iy < y1; iy++ {
							row := dxp[iy*p.w+x0 : iy*p.w+x1]
							for i := range row {
								row[i] += g
							}
						}
					}
				}
			case nn.MaxPool:
				clear(dxp)
				for i, a := range p.arg[pl*ohw : (pl+1)*ohw] {
					dxp[a] += dyp[i]
				}
			}
		}
	})
	return op.out.get(), nil
}

// flattenOp copies (N, C, H, W) to (N, C*H*W, 1, 1); the data layout is unchanged.
type flattenOp struct {
	opBase
	inShape tensor.Shape
	out     outBuf
	grad    bool // the gradient direction: (N, CHW, 1, 1) back to inShape
}

func (op *flattenOp) Arity() int    { return 1 }
func (op *flattenOp) Type() hm.Type { return fnType(4, 4) }
func (op *flattenOp) outShape() tensor.Shape {
	if op.grad {
		return op.inShape
	}
	return tensor.Shape{op.inShape[0], op.inShape.TotalSize() / op.inShape[0], 1, 1}
}
func (op *flattenOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return op.outShape().Clone(), nil
}

func (op *flattenOp) Do(vals ...G.Value) (G.Value, error) {
	x, err := f32(vals[0], op.inShape.TotalSize(), op.id)
	if err != nil {
		return nil, err
	}
	if op.out.t == nil {
		op.out = newOutBuf(op.outShape()...)
	}
	copy(op.out.data, x)
	return op.out.get(), nil
}

func (op *flattenOp) DiffWRT(int) []bool { return []bool{true} }

func (op *flattenOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if op.grad {
		return nil, fmt.Errorf("train: %s: no second derivative", op.id)
	}
	gop := &flattenOp{opBase: newBase("flatten.grad", op.id), inShape: op.inShape, grad: true}
	d, err := G.ApplyOp(gop, grad)
	return G.Nodes{d}, err
}

// xentOp is the mean softmax cross-entropy of logits (N, K, 1, 1) against labels, computed
// in float64 with log-sum-exp. The labels slice is read at every run: the trainer
// overwrites it with each batch's labels.
type xentOp struct {
	opBase
	n, k   int
	labels []uint8

	loss  float64   // loss of the last run
	probs []float32 // softmax of the last run (with the distillation gradient mixed in), N x K
	out   G.F32

	// Knowledge distillation (Hinton et al. 2015), active when teacher is set: the loss
	// becomes (1-alpha)·CE(z, y) + alpha·T²·CE(softmax(t/T), softmax(z/T)), whose gradient
	// is (1-alpha)·(softmax(z) - onehot) + alpha·T·(softmax(z/T) - softmax(t/T)).
	teacher []float32 // teacher logits of the batch, N x K, overwritten per batch
	distill bool      // teacher holds this batch's logits
	temp    float64
	alpha   float64
}

func newXentOp(n, k int, labels []uint8) *xentOp {
	return &xentOp{opBase: newBase("xent", ""), n: n, k: k, labels: labels, probs: make([]float32, n*k),
		teacher: make([]float32, n*k)}
}

// softmaxT writes softmax(row/T) into p (float64 accumulation) and returns log-sum-exp of
// row/T.
func softmaxT(row []float32, t float64, p []float64) float64 {
	mx := math.Inf(-1)
	for _, v := range row {
		mx = math.Max(mx, float64(v)/t)
	}
	var s float64
	for j, v := range row {
		p[j] = math.Exp(float64(v)/t - mx)
		s += p[j]
	}
	for j := range p {
		p[j] /= s
	}
	return mx + math.Log(s)
}

func (op *xentOp) Arity() int    { return 1 }
func (op *xentOp) Type() hm.Type { return hm.NewFnType(tt(4), typeVar) }
func (op *xentOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.ScalarShape(), nil
}

func (op *xentOp) Do(vals ...G.Value) (G.Value, error) {
	z, err := f32(vals[0], op.n*op.k, op.id)
	if err != nil {
		return nil, err
	}
	var total float64
	for i := 0; i < op.n; i++ {
		lab := int(op.labels[i])
		if lab >= op.k {
			return nil, fmt.Errorf("train: label %d of sample %d is out of range for %d outputs", lab, i, op.k)
		}
		row := z[i*op.k : (i+1)*op.k]
		mx := math.Inf(-1)
		for _, v := range row {
			mx = math.Max(mx, float64(v))
		}
		var s float64
		for _, v := range row {
			s += math.Exp(float64(v) - mx)
		}
		lse := mx + math.Log(s)
		total += lse - float64(row[lab])
		p := op.probs[i*op.k : (i+1)*op.k]
		for j, v := range row {
			p[j] = float32(math.Exp(float64(v) - lse))
		}
	}
	if op.distill {
		total = op.addDistill(z, total)
	}
	op.loss = total / float64(op.n)
	op.out = G.F32(op.loss)
	return &op.out, nil
}

// addDistill mixes the distillation term into the loss total and the gradient rows (which
// hold softmax(z) - onehot on entry; the one-hot part is applied by the gradient op, so
// here probs become (1-alpha)·softmax(z) + alpha·T·(softmax(z/T) - softmax(t/T)) and the
// gradient op subtracts (1-alpha)·onehot).
func (op *xentOp) addDistill(z []float32, ce float64) float64 {
	k, t, a := op.k, op.temp, op.alpha
	ps := make([]float64, k)
	pt := make([]float64, k)
	var kd float64
	for i := 0; i < op.n; i++ {
		zs := z[i*k : (i+1)*k]
		lseS := softmaxT(zs, t, ps)
		softmaxT(op.teacher[i*k:(i+1)*k], t, pt)
		p := op.probs[i*k : (i+1)*k]
		for j := range p {
			// cross-entropy of the softened teacher against the softened student
			kd -= pt[j] * (float64(zs[j])/t - lseS)
			p[j] = float32((1-a)*float64(p[j]) + a*t*(ps[j]-pt[j]))
		}
	}
	return (1-a)*ce + a*t*t*kd
}

func (op *xentOp) DiffWRT(int) []bool { return []bool{true} }

func (op *xentOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	gop := &xentGradOp{opBase: newBase("xent.grad", op.id), x: op}
	d, err := G.ApplyOp(gop, inputs[0], grad)
	return G.Nodes{d}, err
}

// xentGradOp computes d loss / d logits = g·(softmax - onehot)/N from (logits, g).
type xentGradOp struct {
	opBase
	x   *xentOp
	out outBuf
}

func (op *xentGradOp) Arity() int    { return 2 }
func (op *xentGradOp) Type() hm.Type { return hm.NewFnType(tt(4), typeVar, tt(4)) }
func (op *xentGradOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{op.x.n, op.x.k, 1, 1}, nil
}

func (op *xentGradOp) Do(vals ...G.Value) (G.Value, error) {
	x := op.x
	g, err := scalar(vals[1])
	if err != nil {
		return nil, err
	}
	if op.out.t == nil {
		op.out = newOutBuf(x.n, x.k, 1, 1)
	}
	d := op.out.data
	s := g / float32(x.n)
	hard := s
	if x.distill {
		hard = s * float32(1-x.alpha)
	}
	for i := 0; i < x.n; i++ {
		row := d[i*x.k : (i+1)*x.k]
		for j, p := range x.probs[i*x.k : (i+1)*x.k] {
			row[j] = p * s
		}
		row[x.labels[i]] -= hard
	}
	return op.out.get(), nil
}
