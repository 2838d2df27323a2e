package train

import (
	"fmt"
	"math"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/autoprune/autoprune/internal/kernel"
)

// bnOp is batch normalisation over (N, H, W) per channel, with inputs x (N, C, H, W),
// gamma (C) and beta (C).
//
// In training mode it normalises with the batch mean and biased variance, as PyTorch
// does, and updates the running statistics on every forward pass:
//
//	mean ← (1-momentum)·mean + momentum·batchMean
//	var  ← (1-momentum)·var  + momentum·batchVar·M/(M-1)   (M = N·H·W, unbiased)
//
// In inference mode it uses the running statistics and is not differentiable.
type bnOp struct {
	opBase
	n, c, hw int
	eps      float64
	momentum float64
	training bool

	mean, variance []float32 // running statistics (owned)

	xhat   []float32 // normalised input of the last training forward pass
	invstd []float64 // per channel 1/sqrt(batchVar+eps) of that pass
	out    outBuf

	// top, when not zero, is the ReLU (+Inf) or ReLU6 (6) fused after the normalisation
	// (training mode): the output is clamped to [0, top], the incoming gradient is that of
	// the activation's output, and dy, the normalisation's own output gradient, is kept for
	// the input gradient; z is scratch per worker for the pre-activation values of a plane.
	top float32
	dy  []float32
	z   [][]float32
}

// fuse makes the op apply a ReLU clamped at top (+Inf for a ReLU, 6 for a ReLU6) to its
// output, in training mode.
func (op *bnOp) fuse(top float32) {
	op.top = top
	op.dy = make([]float32, op.n*op.c*op.hw)
}

func newBNOp(name string, n, c, h, w int, eps, momentum float64, training bool, mean, variance []float32) *bnOp {
	hw := h * w
	op := &bnOp{opBase: newBase("batchnorm", name), n: n, c: c, hw: hw, eps: eps, momentum: momentum,
		training: training, mean: append([]float32(nil), mean...), variance: append([]float32(nil), variance...)}
	if training {
		op.xhat = make([]float32, n*c*hw)
		op.invstd = make([]float64, c)
	}
	op.out = newOutBuf(n, c, h, w)
	return op
}

func (op *bnOp) Arity() int    { return 3 }
func (op *bnOp) Type() hm.Type { return fnType(4, 1, 1, 4) }

func (op *bnOp) InferShape(...G.DimSizer) (tensor.Shape, error) { return op.out.shape.Clone(), nil }

func (op *bnOp) Do(vals ...G.Value) (G.Value, error) {
	if err := checkArity(op, len(vals)); err != nil {
		return nil, err
	}
	x, err := f32(vals[0], op.n*op.c*op.hw, op.id+" input")
	if err != nil {
		return nil, err
	}
	gamma, err := f32(vals[1], op.c, op.id+" gamma")
	if err != nil {
		return nil, err
	}
	beta, err := f32(vals[2], op.c, op.id+" beta")
	if err != nil {
		return nil, err
	}
	y := op.out.data
	n, c, hw := op.n, op.c, op.hw
	lo, hi := -kernel.Inf, kernel.Inf
	if op.top != 0 {
		lo, hi = 0, op.top
	}
	parallel(c, n*hw*4, func(c0, c1 int) {
		for ch := c0; ch < c1; ch++ {
			if !op.training {
				scale := float64(gamma[ch]) / math.Sqrt(float64(op.variance[ch])+op.eps)
				s, t := float32(scale), float32(float64(beta[ch])-float64(op.mean[ch])*scale)
				for i := 0; i < n; i++ {
					off := (i*c + ch) * hw
					kernel.ScaleShift(y[off:off+hw], x[off:off+hw], s, t)
				}
				continue
			}
			// One pass, in float64, about a value of the channel (shifted sums keep the
			// variance exact enough where the mean is far from zero).
			shift := float64(x[ch*hw])
			var s1, s2 float64
			for i := 0; i < n; i++ {
				off := (i*c + ch) * hw
				d1, d2 := kernel.SumDev64(x[off:off+hw], shift)
				s1, s2 = s1+d1, s2+d2
			}
			m := float64(n * hw)
			mean := shift + s1/m
			variance := max(0, s2/m-(s1/m)*(s1/m))
			inv := 1 / math.Sqrt(variance+op.eps)
			op.invstd[ch] = inv
			g, b := gamma[ch], beta[ch]
			mf, invf := float32(mean), float32(inv)
			for i := 0; i < n; i++ {
				off := (i*c + ch) * hw
				xh := op.xhat[off : off+hw]
				kernel.ScaleShift2(xh, y[off:off+hw], x[off:off+hw], invf, -mf*invf, g, b, lo, hi)
			}
			unbiased := variance
			if m > 1 {
				unbiased = variance * m / (m - 1)
			}
			mom := op.momentum
			op.mean[ch] = float32((1-mom)*float64(op.mean[ch]) + mom*mean)
			op.variance[ch] = float32((1-mom)*float64(op.variance[ch]) + mom*unbiased)
		}
	})
	return op.out.get(), nil
}

func (op *bnOp) DiffWRT(n int) []bool { return []bool{true, true, true} }

func (op *bnOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if err := checkArity(op, len(inputs)); err != nil {
		return nil, err
	}
	if !op.training {
		return nil, fmt.Errorf("train: %s: batch norm in inference mode is not differentiable", op.id)
	}
	sumsIn := G.Nodes{grad}
	if op.top != 0 {
		sumsIn = append(sumsIn, inputs[1], inputs[2])
	}
	sums, err := G.ApplyOp(&bnSumsOp{opBase: newBase("batchnorm.sums", op.id), b: op}, sumsIn...)
	if err != nil {
		return nil, err
	}
	res := make(G.Nodes, 3)
	if res[0], err = G.ApplyOp(&bnGradXOp{opBase: newBase("batchnorm.gradX", op.id), b: op}, inputs[1], grad, sums); err != nil {
		return nil, err
	}
	for which := 1; which <= 2; which++ {
		pick := &bnPickOp{opBase: newBase(fmt.Sprintf("batchnorm.grad%d", which), op.id), c: op.c, row: which - 1}
		if res[which], err = G.ApplyOp(pick, sums); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// bnSumsOp computes, from dy, the per-channel sums Σ dy·x̂ (row 0: the gamma gradient)
// and Σ dy (row 1: the beta gradient) of a training-mode bnOp, accumulated in float64.
// With a fused activation its inputs are (grad, gamma, beta): dy is grad where the
// pre-activation value x̂·gamma+beta, computed again, lies in (0, top), and zero elsewhere.
type bnSumsOp struct {
	opBase
	b   *bnOp
	out outBuf
}

func (op *bnSumsOp) Arity() int {
	if op.b.top != 0 {
		return 3
	}
	return 1
}

func (op *bnSumsOp) Type() hm.Type {
	if op.b.top != 0 {
		return fnType(4, 1, 1, 2)
	}
	return fnType(4, 2)
}
func (op *bnSumsOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{2, op.b.c}, nil
}

func (op *bnSumsOp) Do(vals ...G.Value) (G.Value, error) {
	b := op.b
	n, c, hw := b.n, b.c, b.hw
	dy, err := f32(vals[0], n*c*hw, op.id)
	if err != nil {
		return nil, err
	}
	var gamma, beta []float32
	if b.top != 0 {
		if gamma, err = f32(vals[1], c, op.id+" gamma"); err != nil {
			return nil, err
		}
		if beta, err = f32(vals[2], c, op.id+" beta"); err != nil {
			return nil, err
		}
		perWorker(&b.z)
	}
	if op.out.t == nil {
		op.out = newOutBuf(2, c)
	}
	dst := op.out.data
	parallelW(c, n*hw*2, func(wk, lo, hi int) {
		for ch := lo; ch < hi; ch++ {
			var sg, sgx float64
			for i := 0; i < n; i++ {
				off := (i*c + ch) * hw
				g, xh := dy[off:off+hw], b.xhat[off:off+hw]
				if b.top != 0 {
					z := grow(&b.z[wk], hw)
					kernel.ScaleShift(z, xh, gamma[ch], beta[ch])
					kernel.ReLUGrad(b.dy[off:off+hw], z, g, b.top)
					g = b.dy[off : off+hw]
				}
				s, sx := kernel.SumDot64(g, xh)
				sg, sgx = sg+s, sgx+sx
			}
			dst[ch], dst[c+ch] = float32(sgx), float32(sg)
		}
	})
	return op.out.get(), nil
}

// bnPickOp returns one row of the (2, C) sums.
type bnPickOp struct {
	opBase
	c, row int
	out    outBuf
}

func (op *bnPickOp) Arity() int    { return 1 }
func (op *bnPickOp) Type() hm.Type { return fnType(2, 1) }
func (op *bnPickOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{op.c}, nil
}

func (op *bnPickOp) Do(vals ...G.Value) (G.Value, error) {
	s, err := f32(vals[0], 2*op.c, op.id)
	if err != nil {
		return nil, err
	}
	if op.out.t == nil {
		op.out = newOutBuf(op.c)
	}
	copy(op.out.data, s[op.row*op.c:])
	return op.out.get(), nil
}

// bnGradXOp computes the input gradient of a training-mode bnOp from (gamma, dy, sums).
// With the sums per channel over M = N·H·W values,
//
//	dx = gamma·invstd·(dy - Σdy/M - x̂·Σ(dy·x̂)/M).
type bnGradXOp struct {
	opBase
	b   *bnOp
	out outBuf
}

func (op *bnGradXOp) Arity() int    { return 3 }
func (op *bnGradXOp) Type() hm.Type { return fnType(1, 4, 2, 4) }
func (op *bnGradXOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return op.b.out.shape.Clone(), nil
}

func (op *bnGradXOp) Do(vals ...G.Value) (G.Value, error) {
	b := op.b
	n, c, hw := b.n, b.c, b.hw
	gamma, err := f32(vals[0], c, op.id+" gamma")
	if err != nil {
		return nil, err
	}
	dy, err := f32(vals[1], n*c*hw, op.id+" gradient")
	if err != nil {
		return nil, err
	}
	sums, err := f32(vals[2], 2*c, op.id+" sums")
	if err != nil {
		return nil, err
	}
	if b.top != 0 {
		dy = b.dy // the normalisation's output gradient, from bnSumsOp
	}
	if op.out.t == nil {
		op.out = newOutBuf(b.out.shape...)
	}
	dst := op.out.data
	m := float64(n * hw)
	parallel(c, n*hw, func(lo, hi int) {
		for ch := lo; ch < hi; ch++ {
			k := float32(float64(gamma[ch]) * b.invstd[ch])
			mgx, mg := float32(float64(sums[ch])/m), float32(float64(sums[c+ch])/m)
			for i := 0; i < n; i++ {
				off := (i*c + ch) * hw
				// k·(dy - mg - xhat·mgx)
				kernel.Axpby(dst[off:off+hw], dy[off:off+hw], b.xhat[off:off+hw], k, -k*mgx, -k*mg)
			}
		}
	})
	return op.out.get(), nil
}
