package train

import (
	"fmt"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/autoprune/autoprune/internal/kernel"
)

// Depthwise convolutions (one input channel per group, e.g. groups == in == out) do k*k
// multiply-adds per output: direct loops beat an im2col GEMM of width 1 per group.

// taps calls fn for every kernel tap (ky, kx) and output row oy whose input row iy lies
// inside the input, with the output columns [x0, x1) that read inside it and the input
// column ix of output column x0.
func (q *convGeom) taps(fn func(ky, kx, oy, iy, x0, x1, ix int)) {
	for ky := 0; ky < q.k; ky++ {
		for kx := 0; kx < q.k; kx++ {
			x0, x1 := q.span(kx)
			if x0 >= x1 {
				continue
			}
			for oy := 0; oy < q.oh; oy++ {
				if iy := oy*q.s - q.p + ky; iy >= 0 && iy < q.h {
					fn(ky, kx, oy, iy, x0, x1, x0*q.s-q.p+kx)
				}
			}
		}
	}
}

// depthwise computes y = conv(x, w) + b for a geometry with one input channel per group.
func (q *convGeom) depthwise(x, w, bias, y []float32) {
	hw, P, ocg, k := q.h*q.w, q.pixels(), q.ocg(), q.k
	parallel(q.n*q.oc, P*k*k, func(lo, hi int) {
		for pl := lo; pl < hi; pl++ {
			n, o := pl/q.oc, pl%q.oc
			xp := x[(n*q.c+o/ocg)*hw:][:hw]
			wk := w[o*k*k:][:k*k]
			yp := y[pl*P:][:P]
			var b float32
			if bias != nil {
				b = bias[o]
			}
			for i := range yp {
				yp[i] = b
			}
			q.taps(func(ky, kx, oy, iy, x0, x1, ix int) {
				wv, yr, xr := wk[ky*k+kx], yp[oy*q.ow+x0:oy*q.ow+x1], xp[iy*q.w:][:q.w]
				if q.s == 1 {
					kernel.Axpby(yr, xr[ix:ix+len(yr)], yr, wv, 1, 0)
					return
				}
				for i := range yr {
					yr[i] += wv * xr[ix]
					ix += q.s
				}
			})
		}
	})
}

func (op *convOp) symDiffDirect(inputs G.Nodes, grad *G.Node) (G.Nodes, error) {
	res := make(G.Nodes, len(inputs))
	for which := range inputs {
		if which == 0 && !op.needDX {
			continue
		}
		partner := inputs[1]
		if which == 1 {
			partner = inputs[0]
		} else if which == 2 {
			partner = inputs[2]
		}
		gop := &dwGradOp{opBase: newBase(fmt.Sprintf("depthwise.grad%d", which), op.id), c: op, which: which}
		var err error
		if res[which], err = G.ApplyOp(gop, partner, grad); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// dwGradOp computes one gradient of a depthwise convOp from (partner, dy): which 0 is dx
// from (w, dy), 1 is dw from (x, dy), 2 is db from (b, dy).
type dwGradOp struct {
	opBase
	c     *convOp
	which int
	out   outBuf
}

func (op *dwGradOp) Arity() int { return 2 }

func (op *dwGradOp) Type() hm.Type {
	switch op.which {
	case 0:
		return fnType(4, 4, 4)
	case 1:
		return fnType(4, 4, 4)
	}
	return fnType(1, 4, 1)
}

func (op *dwGradOp) shape() tensor.Shape {
	q := &op.c.q
	switch op.which {
	case 0:
		return tensor.Shape{q.n, q.c, q.h, q.w}
	case 1:
		return tensor.Shape{q.oc, 1, q.k, q.k}
	}
	return tensor.Shape{q.oc}
}

func (op *dwGradOp) InferShape(...G.DimSizer) (tensor.Shape, error) { return op.shape(), nil }

func (op *dwGradOp) Do(vals ...G.Value) (G.Value, error) {
	c := op.c
	q := &c.q
	hw, P, ocg, k := q.h*q.w, q.pixels(), q.ocg(), q.k
	dy, err := f32(vals[1], q.n*q.oc*P, op.id+" gradient")
	if err != nil {
		return nil, err
	}
	if op.out.t == nil {
		op.out = newOutBuf(op.shape()...)
	}
	dst := op.out.data
	switch op.which {
	case 0:
		w, err := f32(vals[0], q.oc*k*k, op.id+" weight")
		if err != nil {
			return nil, err
		}
		if c.mask != nil {
			w = c.weff
		}
		// Each input plane (n, ci) gathers from the ocg output planes that read it.
		parallel(q.n*q.c, ocg*P*k*k, func(lo, hi int) {
			for pl := lo; pl < hi; pl++ {
				n, ci := pl/q.c, pl%q.c
				dxp := dst[pl*hw:][:hw]
				clear(dxp)
				for o := ci * ocg; o < (ci+1)*ocg; o++ {
					dyp := dy[(n*q.oc+o)*P:][:P]
					wk := w[o*k*k:][:k*k]
					q.taps(func(ky, kx, oy, iy, x0, x1, ix int) {
						wv, g, dr := wk[ky*k+kx], dyp[oy*q.ow+x0:oy*q.ow+x1], dxp[iy*q.w:][:q.w]
						if q.s == 1 {
							d := dr[ix : ix+len(g)]
							kernel.Axpby(d, g, d, wv, 1, 0)
							return
						}
						for _, gv := range g {
							dr[ix] += wv * gv
							ix += q.s
						}
					})
				}
			}
		})
	case 1:
		x, err := f32(vals[0], q.n*q.c*hw, op.id+" input")
		if err != nil {
			return nil, err
		}
		// Each output channel's kernel sums over the batch and the output pixels.
		parallel(q.oc, q.n*P*k*k, func(lo, hi int) {
			acc := make([]float64, k*k)
			for o := lo; o < hi; o++ {
				dw := dst[o*k*k:][:k*k]
				clear(acc)
				for n := 0; n < q.n; n++ {
					xp := x[(n*q.c+o/ocg)*hw:][:hw]
					dyp := dy[(n*q.oc+o)*P:][:P]
					q.taps(func(ky, kx, oy, iy, x0, x1, ix int) {
						g, xr := dyp[oy*q.ow+x0:oy*q.ow+x1], xp[iy*q.w:][:q.w]
						if q.s == 1 {
							_, sxy := kernel.SumDot64(g, xr[ix:ix+len(g)])
							acc[ky*k+kx] += sxy
							return
						}
						var sum float64
						for _, gv := range g {
							sum += float64(gv) * float64(xr[ix])
							ix += q.s
						}
						acc[ky*k+kx] += sum
					})
				}
				for i, v := range acc {
					dw[i] = float32(v)
				}
				if c.mask != nil {
					for i := range dw {
						dw[i] *= c.mask[o*k*k+i]
					}
				}
			}
		})
	default:
		for o := 0; o < q.oc; o++ {
			var s float64
			for n := 0; n < q.n; n++ {
				for _, g := range dy[(n*q.oc+o)*P:][:P] {
					s += float64(g)
				}
			}
			dst[o] = float32(s)
		}
	}
	return op.out.get(), nil
}
