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

// dw3 tells whether a depthwise convolution is 3x3 with padding 1, stride 1 or 2, one
// output channel per input channel: its passes then run on the engine's vector kernel over
// a zero-padded plane (kernel.Depthwise3x3), the input gradient with the kernel flipped.
// Stride 2 reads the padded plane's phases in the forward pass (see depthwise3); the
// gradients run at stride 1 on the full plane, with the output gradient spread at stride 2
// and zeros between, output pixel (oy, ox) at (2oy, 2ox) of the input plane.
func (q *convGeom) dw3() bool {
	return q.k == 3 && q.p == 1 && (q.s == 1 || q.s == 2) && q.ocg() == 1
}

// spread writes the output gradient plane g (oh x ow) at stride 2 into the plane dst of
// row stride ld (rows h), zero elsewhere: what a stride-1 pass reads as a stride-2 one.
func (q *convGeom) spread(dst []float32, ld int, g []float32) {
	for y := 0; y < q.h; y++ {
		clear(dst[y*ld : y*ld+q.w])
	}
	for oy := 0; oy < q.oh; oy++ {
		row := dst[2*oy*ld:]
		for ox, v := range g[oy*q.ow : (oy+1)*q.ow] {
			row[2*ox] = v
		}
	}
}

// dwPlanes holds, per worker, a buffer the size of a zero-padded plane for dw3 (rows w+2
// apart, h+2 rows and kernel.DepthwiseSlack more values), zero when made: as a padded
// plane (fill, spread) its border is never written, as a grid (rows w+2 apart from the
// start) neither are its last two columns.
type dwPlanes [][]float32

// get returns worker wk's buffer, made on first use; call perWorker(d) before parallelW.
func (d dwPlanes) get(wk int, q *convGeom) []float32 {
	if d[wk] == nil {
		d[wk] = make([]float32, (q.h+2)*(q.w+2)+kernel.DepthwiseSlack)
	}
	return d[wk]
}

// sized returns worker wk's buffer of n values, zero when made on first use; call
// perWorker(d) before parallelW.
func (d dwPlanes) sized(wk, n int) []float32 {
	if d[wk] == nil {
		d[wk] = make([]float32, n)
	}
	return d[wk]
}

// fill copies plane src (h x w) inside the padded plane buf.
func (q *convGeom) fill(buf, src []float32) {
	kernel.CopyStrided(buf[q.w+3:], q.w+2, src, q.w, q.h, q.w)
}

// depthwise3 is depthwise for dw3 geometries; phases is scratch for a stride-2 pass: the
// padded plane made of even width, then its even and its odd columns, which are the
// plane's four phases (kernel.Depthwise3x3S2 sums in Depthwise3x3's order, so the output
// is the stride-1 pass's, every other row and column, bit for bit).
func (q *convGeom) depthwise3(x, w, bias, y []float32, pads, phases *dwPlanes) {
	hw, P := q.h*q.w, q.pixels()
	perWorker((*[][]float32)(pads))
	perWorker((*[][]float32)(phases))
	hp, wp := q.h+2, (q.w+3)/2*2 // the padded plane, of even width
	half := hp * wp / 2
	parallelW(q.n*q.oc, hw*9, func(wk, lo, hi int) {
		var buf []float32
		if q.s == 1 {
			buf = pads.get(wk, q)
		} else {
			buf = phases.sized(wk, 4*half+kernel.DepthwiseSlack)
		}
		for pl := lo; pl < hi; pl++ {
			var b float32
			if bias != nil {
				b = bias[pl%q.oc]
			}
			wt := (*[9]float32)(w[pl%q.oc*9:])
			if q.s == 1 {
				q.fill(buf, x[pl*hw:][:hw])
				kernel.Depthwise3x3(y[pl*P:][:P], buf, wt, b, q.oh, q.ow, q.w+2, -kernel.Inf, kernel.Inf)
				continue
			}
			kernel.CopyStrided(buf[wp+1:], wp, x[pl*hw:][:hw], q.w, q.h, q.w)
			ph := buf[2*half:]
			kernel.Deinterleave(ph[:half], ph[half:2*half], buf[:2*half])
			kernel.Depthwise3x3S2(y[pl*P:][:P], ph, half, wp/2, wp, wt, b, q.oh, q.ow, -kernel.Inf, kernel.Inf)
		}
	})
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
		if q.dw3() {
			// The full correlation of the padded output gradient with the flipped kernel.
			perWorker((*[][]float32)(&c.dwPads))
			parallelW(q.n*q.c, P*9, func(wk, lo, hi int) {
				buf := c.dwPads.get(wk, q)
				var f [9]float32
				for pl := lo; pl < hi; pl++ {
					for t, v := range w[pl%q.oc*9:][:9] {
						f[8-t] = v
					}
					if q.s == 1 {
						q.fill(buf, dy[pl*P:][:P])
					} else {
						q.spread(buf[q.w+3:], q.w+2, dy[pl*P:][:P])
					}
					kernel.Depthwise3x3(dst[pl*hw:][:hw], buf, &f, 0, q.h, q.w, q.w+2, -kernel.Inf, kernel.Inf)
				}
			})
			break
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
		if q.dw3() {
			op.weightGrad3(x, dy, dst)
			break
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

// weightGrad3 is the weight gradient of a dw3 convolution: for each tap, the dot product of
// the output gradient laid on a grid as wide as the padded plane (zero in the grid's extra
// columns) with the padded input shifted by the tap, one call per plane and tap.
func (op *dwGradOp) weightGrad3(x, dy, dw []float32) {
	c := op.c
	q := &c.q
	hw, P, pw := q.h*q.w, q.pixels(), q.w+2
	perWorker((*[][]float32)(&c.dwPads))
	perWorker((*[][]float32)(&c.dwGrids))
	parallelW(q.oc, q.n*hw*9, func(wk, lo, hi int) {
		buf := c.dwPads.get(wk, q)
		grid := c.dwGrids.get(wk, q)
		var acc [9]float64
		for o := lo; o < hi; o++ {
			acc = [9]float64{}
			for n := 0; n < q.n; n++ {
				pl := n*q.oc + o
				q.fill(buf, x[pl*hw:][:hw])
				if q.s == 1 {
					kernel.CopyStrided(grid, pw, dy[pl*P:], q.w, q.h, q.w)
				} else {
					q.spread(grid, pw, dy[pl*P:][:P])
				}
				g := grid[:q.h*pw]
				for t := range acc {
					_, s := kernel.SumDot64(g, buf[t/3*pw+t%3:])
					acc[t] += s
				}
			}
			for t, v := range acc {
				dw[o*9+t] = float32(v)
				if c.mask != nil {
					dw[o*9+t] *= c.mask[o*9+t]
				}
			}
		}
	})
}
