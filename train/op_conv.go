package train

import (
	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/autoprune/autoprune/internal/kernel"
)

// convGeom is the geometry of a (grouped) 2-D convolution on a batch.
type convGeom struct {
	n, c, h, w     int // input batch, channels, height, width
	oc, k, s, p, g int // output channels, kernel, stride, padding, groups
	oh, ow         int // output height and width
	per            int // samples per chunk of a convOp (0: as many as fit chunkFloats)
}

func (q *convGeom) pixels() int { return q.oh * q.ow }

// gridded tells whether the column matrix runs over a grid as wide as the input: for a
// stride-1 convolution without padding that shrinks the plane, output pixel (oy, ox) reads
// input (oy+ky, ox+kx), so a row of the matrix is one run of the input plane, shifted by
// ky*w+kx; the grid's columns ox >= ow are not outputs, and their gradients are zero.
func (q *convGeom) gridded() bool { return q.s == 1 && q.p == 0 && q.w > q.ow }

// cpix returns the columns of the column matrix per sample: the pixels, or the grid's.
func (q *convGeom) cpix() int {
	if q.gridded() {
		return q.oh * q.w
	}
	return q.pixels()
}

// crows returns the columns of the column matrix.
func (q *convGeom) crows() int { return q.n * q.cpix() }
func (q *convGeom) cols() int  { return q.c * q.k * q.k } // input values per output pixel
func (q *convGeom) icg() int   { return q.c / q.g }
func (q *convGeom) ocg() int   { return q.oc / q.g }
func (q *convGeom) kg() int    { return q.icg() * q.k * q.k } // input values per output pixel, per group

// span returns the output columns [lo, hi) whose input column ox*s-p+kx lies inside the
// input, for kernel column kx.
func (q *convGeom) span(kx int) (lo, hi int) {
	// ox*s - p + kx >= 0  <=>  ox >= ceil((p-kx)/s);  ox*s - p + kx < w  <=>  ox <= (w-1+p-kx)/s
	lo = 0
	if d := q.p - kx; d > 0 {
		lo = (d + q.s - 1) / q.s
	}
	hi = q.ow
	if d := q.w - 1 + q.p - kx; d < 0 {
		hi = 0
	} else {
		hi = min(hi, d/q.s+1)
	}
	return lo, max(lo, hi)
}

// im2col fills the column matrix col (cols x rows, row-major) with the input patches: row
// r = (ci*k + ky)*k + kx holds, at column n*OH*OW + oy*OW + ox, the input value at
// (n, ci, oy*s-p+ky, ox*s-p+kx), or zero in the padding. The rows of group g,
// [g*kg, (g+1)*kg), are contiguous. Tasks [lo, hi) index (row, sample) pairs.
func (q *convGeom) im2col(x, col []float32, lo, hi int) {
	k, hw, P, NP := q.k, q.h*q.w, q.cpix(), q.crows()
	for t := lo; t < hi; t++ {
		r, n := t/q.n, t%q.n
		ci, ky, kx := r/(k*k), r/k%k, r%k
		xp := x[(n*q.c+ci)*hw:][:hw]
		dst := col[r*NP+n*P:][:P]
		if q.gridded() {
			// The last grid row's columns past the plane are zero.
			m := copy(dst, xp[ky*q.w+kx:])
			clear(dst[m:])
			continue
		}
		x0, x1 := q.span(kx)
		if q.same() {
			q.im2colSame(xp, dst, ky, kx, x0, x1)
			continue
		}
		if q.s == 1 {
			q.im2colRows(xp, dst, ky, kx, x0, x1)
			continue
		}
		for oy := 0; oy < q.oh; oy++ {
			d := dst[oy*q.ow:][:q.ow]
			iy := oy*q.s - q.p + ky
			if iy < 0 || iy >= q.h {
				clear(d)
				continue
			}
			xr := xp[iy*q.w:][:q.w]
			clear(d[:x0])
			clear(d[x1:])
			ix := x0*q.s - q.p + kx
			for ox := x0; ox < x1; ox++ {
				d[ox] = xr[ix]
				ix += q.s
			}
		}
	}
}

// same tells whether the convolution keeps the plane's size at stride 1 (2p = k-1): a row
// of the column matrix and a row of the input then have the same length, and a kernel tap
// maps a run of whole rows of one onto a run of whole rows of the other, shifted.
func (q *convGeom) same() bool { return q.s == 1 && q.oh == q.h && q.ow == q.w }

// rowsOf returns the output rows [lo, hi) whose input row oy-p+ky lies inside the input.
func (q *convGeom) rowsOf(ky int) (lo, hi int) {
	return max(0, q.p-ky), max(max(0, q.p-ky), min(q.oh, q.h+q.p-ky))
}

// inside returns the output rows [lo, hi) of im2col row dst (kernel row ky) that read inside
// the input, and zeroes the others; ok is false, and all of dst zero, when no value of the
// row (columns [x0, x1)) reads inside the input.
func (q *convGeom) inside(dst []float32, ky, x0, x1 int) (lo, hi int, ok bool) {
	ow := q.ow
	lo, hi = q.rowsOf(ky)
	clear(dst[:lo*ow])
	clear(dst[hi*ow:])
	if lo >= hi || x0 >= x1 {
		clear(dst[lo*ow : hi*ow])
		return lo, hi, false
	}
	return lo, hi, true
}

// im2colSame is one row of im2col for a same-size convolution (ky, kx; columns [x0, x1)
// read inside the input): the rows that read inside the input are one copy, shifted by
// kx-p, then the columns that fall in the padding are zeroed; the other rows are zero.
func (q *convGeom) im2colSame(xp, dst []float32, ky, kx, x0, x1 int) {
	ow := q.ow
	lo, hi, ok := q.inside(dst, ky, x0, x1)
	if !ok {
		return
	}
	// Output index oy*ow+ox reads input index (oy-p+ky)*w + ox-p+kx: one shift for the run.
	shift := (ky-q.p)*q.w + kx - q.p
	a, b := lo*ow+x0, (hi-1)*ow+x1
	copy(dst[a:b], xp[a+shift:b+shift])
	q.zeroBorders(dst, lo, hi, x0, x1)
}

// im2colRows is one row of im2col for any other stride-1 convolution: the block of output
// rows and columns that read inside the input is one strided move of whole rows (output
// row oy, columns [x0, x1), from input row oy-p+ky, columns from x0-p+kx); the rest is zero.
func (q *convGeom) im2colRows(xp, dst []float32, ky, kx, x0, x1 int) {
	ow := q.ow
	lo, hi, ok := q.inside(dst, ky, x0, x1)
	if !ok {
		return
	}
	kernel.CopyStrided(dst[lo*ow+x0:], ow, xp[(lo-q.p+ky)*q.w+x0-q.p+kx:], q.w, hi-lo, x1-x0)
	if x0 > 0 || x1 < ow {
		q.zeroBorders(dst, lo, hi, x0, x1)
	}
}

// zeroBorders zeroes, in rows [lo, hi) of the column-matrix row m, the columns outside
// [x0, x1): those that read the padding.
func (q *convGeom) zeroBorders(m []float32, lo, hi, x0, x1 int) {
	for oy := lo; oy < hi; oy++ {
		row := m[oy*q.ow : (oy+1)*q.ow]
		for c := 0; c < x0; c++ {
			row[c] = 0
		}
		for c := x1; c < len(row); c++ {
			row[c] = 0
		}
	}
}

// col2imSame adds one row of the column matrix into the input gradient dp for a same-size
// convolution: the entries that fall in the padding are zeroed in src (they belong to no
// input), then the run of rows is one vector addition, shifted by kx-p.
func (q *convGeom) col2imSame(src, dp []float32, ky, kx, x0, x1 int) {
	ow := q.ow
	lo, hi := q.rowsOf(ky)
	if lo >= hi || x0 >= x1 {
		return
	}
	q.zeroBorders(src, lo, hi, x0, x1)
	shift := (ky-q.p)*q.w + kx - q.p
	a, b := lo*ow+x0, (hi-1)*ow+x1
	d := dp[a+shift : b+shift]
	kernel.Add(d, d, src[a:b])
}

// col2im is the adjoint of im2col: it sets dx to the sum of the column-matrix entries
// copied from each input position. Tasks [lo, hi) index input planes (n, ci).
func (q *convGeom) col2im(col, dx []float32, lo, hi int) {
	k, hw, P, NP := q.k, q.h*q.w, q.cpix(), q.crows()
	for t := lo; t < hi; t++ {
		n, ci := t/q.c, t%q.c
		dp := dx[t*hw:][:hw]
		clear(dp)
		for ky := 0; ky < k; ky++ {
			for kx := 0; kx < k; kx++ {
				r := (ci*k+ky)*k + kx
				src := col[r*NP+n*P:][:P]
				if q.gridded() {
					// The grid's extra columns hold zero gradients: adding them is harmless.
					d := dp[ky*q.w+kx:]
					d = d[:min(len(d), P)]
					kernel.Add(d, d, src[:len(d)])
					continue
				}
				x0, x1 := q.span(kx)
				if q.same() {
					q.col2imSame(src, dp, ky, kx, x0, x1)
					continue
				}
				if q.s == 1 {
					// The adjoint of im2colRows: one strided addition of whole rows.
					if lo, hi := q.rowsOf(ky); lo < hi && x0 < x1 {
						kernel.AddStrided(dp[(lo-q.p+ky)*q.w+x0-q.p+kx:], q.w, src[lo*q.ow+x0:], q.ow, hi-lo, x1-x0)
					}
					continue
				}
				for oy := 0; oy < q.oh; oy++ {
					iy := oy*q.s - q.p + ky
					if iy < 0 || iy >= q.h {
						continue
					}
					dr := dp[iy*q.w:][:q.w]
					sr := src[oy*q.ow:][:q.ow]
					ix := x0*q.s - q.p + kx
					for ox := x0; ox < x1; ox++ {
						dr[ix] += sr[ox]
						ix += q.s
					}
				}
			}
		}
	}
}

// chunkFloats bounds the column matrix of a chunk of samples (in floats, 512 KiB): it is
// built, multiplied and dropped while it sits in a core's cache, instead of a matrix for the
// whole batch that goes through memory several times per step.
const chunkFloats = 1 << 17

// maxLanes is the most partial sums a weight gradient is split into: chunks of samples are
// shared out to lanes by their index, so the sums do not depend on the number of threads.
const maxLanes = 8

// chunk returns the samples per chunk: per, or as many as keep the chunk's column matrix
// within chunkFloats, at least one.
func (q *convGeom) chunk() int {
	if q.per > 0 {
		return min(q.per, q.n)
	}
	return max(1, min(q.n, chunkFloats/(q.cols()*q.cpix())))
}

// chunks returns the number of chunks of the batch.
func (q *convGeom) chunks() int { s := q.chunk(); return (q.n + s - 1) / s }

// part returns the first sample of chunk c and its geometry (its batch is the chunk's samples).
func (q *convGeom) part(c int) (n0 int, qc convGeom) {
	s := q.chunk()
	n0 = c * s
	qc = *q
	qc.n = min(s, q.n-n0)
	return n0, qc
}

// convOp is a grouped 2-D convolution with optional bias and weight mask: inputs x
// (N, C, H, W), w (OC, C/G, K, K) and, with a bias, b (OC). The effective weight is w*mask.
//
// Every pass goes chunk by chunk of samples (convGeom.chunk): the chunk's column matrix is
// built by im2col in a worker's scratch memory and multiplied while it is in cache; the
// weight gradient builds it again rather than keep the whole batch's.
type convOp struct {
	opBase
	q       convGeom
	hasBias bool
	mask    []float32 // nil: no mask
	needDX  bool      // whether the input needs a gradient (false for the model input)
	direct  bool      // depthwise (one input channel per group): direct loops, no GEMM

	weff []float32 // masked weight (nil without a mask)
	out  outBuf
	ws   *workspace

	fwd, bwd inPlace // the forward product and the input gradient of a padded() convolution

	dwPads, dwGrids, dwPhases dwPlanes // per worker, for the passes of a dw3 depthwise convolution
}

// inPlace is the state of a product that reads zero-padded planes where they lie
// (kernel.Rows): one sample's planes per worker, padded once (their borders stay zero),
// the offsets of the product's rows in them, and the packed left operand of each group.
type inPlace struct {
	pads [][]float32
	rows []kernel.Rows
	offs []int
	a    []*kernel.PackedA
}

// padded tells whether the forward pass and the input gradient read zero-padded planes in
// place instead of building columns: a stride-1 convolution with a padding of 1 to k-1
// (the input gradient is then a stride-1 convolution of the output gradient padded by
// k-1-p, with the weights flipped and transposed).
func (q *convGeom) padded() bool { return q.s == 1 && q.p > 0 && q.p < q.k }

// planeOffsets returns the offsets, in planes of pl values and rows wp apart, of the kernel
// taps (ci, ky, kx) for ci < planes, in the order of a weight row.
func planeOffsets(planes, k, pl, wp int) []int {
	offs := make([]int, 0, planes*k*k)
	for ci := 0; ci < planes; ci++ {
		for ky := 0; ky < k; ky++ {
			for kx := 0; kx < k; kx++ {
				offs = append(offs, ci*pl+ky*wp+kx)
			}
		}
	}
	return offs
}

// product computes, for sample planes src (planes of h x w values, pad each side), the
// grid product of each group into dst: group g's rows of the packed operand times the
// Rows over its planes, gm columns (rows of width wp = w+2*pad) per output row. ip.offs
// and ip.a must be set; worker wk's planes are padded once, then only their inside is
// written.
func (ip *inPlace) product(gm kernel.SourceGemm, wk int, src []float32, planes, h, w, pad, groups, ng int, dst []float32) {
	wp, pl := w+2*pad, (h+2*pad)*(w+2*pad)
	if ip.pads[wk] == nil {
		// Slack past the last plane: the grid's last row reads up to k-1 values further.
		ip.pads[wk] = make([]float32, planes*pl+wp)
	}
	buf := ip.pads[wk]
	for ci := 0; ci < planes; ci++ {
		kernel.CopyStrided(buf[ci*pl+pad*wp+pad:], wp, src[ci*h*w:], w, h, w)
	}
	per := planes / groups
	m := ip.a[0].M
	r := &ip.rows[wk]
	for g := 0; g < groups; g++ {
		*r = kernel.Rows{B: buf[g*per*pl:], Offs: ip.offs}
		gm.SgemmSource(ip.a[g], ng, r, 0, dst[g*m*ng:], ng)
	}
}

// pack packs each group's m x k block of a (groups stacked by rows) for product, and
// readies the workers' entries.
func (ip *inPlace) pack(a []float32, groups, m, k int) {
	perWorker(&ip.pads)
	perWorker(&ip.rows)
	g0 := kernels.Get().(kernel.SourceGemm)
	for len(ip.a) < groups {
		ip.a = append(ip.a, nil)
	}
	for g := 0; g < groups; g++ {
		ip.a[g] = g0.RepackA(ip.a[g], m, k, a[g*m*k:], k)
	}
	kernels.Put(g0)
}

// forwardPadded is the forward pass of a padded() convolution, sample by sample.
func (op *convOp) forwardPadded(x, w, bias, y []float32) {
	q := &op.q
	wp := q.w + 2*q.p
	ng := q.oh * wp
	if op.fwd.offs == nil {
		op.fwd.offs = planeOffsets(q.icg(), q.k, (q.h+2*q.p)*wp, wp)
	}
	op.fwd.pack(w, q.g, q.ocg(), q.kg())
	op.ws.ready()
	in, out := q.c*q.h*q.w, q.oc*q.pixels()
	parallelW(q.n, out*q.kg(), func(wk, lo, hi int) {
		gm := kernels.Get().(kernel.SourceGemm)
		defer kernels.Put(gm)
		_, yt := op.ws.scratch(wk, 0, q.oc*ng)
		for s := lo; s < hi; s++ {
			op.fwd.product(gm, wk, x[s*in:], q.c, q.h, q.w, q.p, q.g, ng, yt)
			fromGrid(y[s*out:], yt, bias, q.oc, ng, wp, q.oh, q.ow)
		}
	})
}

// inputGradPadded is the input gradient of a padded() convolution, sample by sample: the
// output gradient padded by k-1-p, convolved at stride 1 with the weights flipped in both
// directions and with input and output channels swapped.
func (op *convGradXOp) inputGradPadded(w, dy, dx []float32) {
	c := op.c
	q := &c.q
	k, kk := q.k, q.k*q.k
	p2 := k - 1 - q.p
	wd := q.ow + 2*p2
	ng := q.h * wd
	icg, ocg := q.icg(), q.ocg()
	if c.bwd.offs == nil {
		c.bwd.offs = planeOffsets(ocg, k, (q.oh+2*p2)*wd, wd)
	}
	// wf_g[ci][(o, ky, kx)] = w[g*ocg+o][ci][k-1-ky][k-1-kx]
	wf := grow(&op.wf, q.oc*icg*kk)
	for g := 0; g < q.g; g++ {
		for ci := 0; ci < icg; ci++ {
			row := wf[(g*icg+ci)*ocg*kk:][:ocg*kk]
			for o := 0; o < ocg; o++ {
				src := w[((g*ocg+o)*icg+ci)*kk:][:kk]
				for t, v := range src {
					row[o*kk+kk-1-t] = v
				}
			}
		}
	}
	c.bwd.pack(wf, q.g, icg, ocg*kk)
	c.ws.ready()
	in, out := q.c*q.h*q.w, q.oc*q.pixels()
	parallelW(q.n, out*q.kg(), func(wk, lo, hi int) {
		gm := kernels.Get().(kernel.SourceGemm)
		defer kernels.Put(gm)
		_, dxt := c.ws.scratch(wk, 0, q.c*ng)
		for s := lo; s < hi; s++ {
			c.bwd.product(gm, wk, dy[s*out:], q.oc, q.oh, q.ow, p2, q.g, ng, dxt)
			fromGrid(dx[s*in:], dxt, nil, q.c, ng, wd, q.h, q.w)
		}
	})
}

// workspace holds scratch memory shared by the Ops of one graph (the tape machine runs one
// Op at a time): a column matrix and a chunk of output values per worker, and the partial
// weight gradients of the lanes.
type workspace struct {
	col, yt [][]float32
	slots   []float32
}

// ready gives every possible worker its entries; call it before parallelW.
func (ws *workspace) ready() {
	perWorker(&ws.col)
	perWorker(&ws.yt)
}

// scratch returns worker w's column matrix (cols floats) and chunk buffer (yt floats).
func (ws *workspace) scratch(w, cols, yt int) (col, y []float32) {
	return grow(&ws.col[w], cols), grow(&ws.yt[w], yt)
}

func grow(b *[]float32, n int) []float32 {
	if len(*b) < n {
		*b = make([]float32, n)
	}
	return (*b)[:n]
}

func newConvOp(name string, q convGeom, hasBias bool, mask []float32, needDX bool, ws *workspace) *convOp {
	op := &convOp{opBase: newBase("conv", name), q: q, hasBias: hasBias, mask: mask, needDX: needDX, ws: ws}
	op.direct = q.icg() == 1 && q.g > 1
	if mask != nil {
		op.weff = make([]float32, len(mask))
	}
	op.out = newOutBuf(q.n, q.oc, q.oh, q.ow)
	return op
}

func (op *convOp) Arity() int {
	if op.hasBias {
		return 3
	}
	return 2
}

func (op *convOp) Type() hm.Type {
	if op.hasBias {
		return fnType(4, 4, 1, 4)
	}
	return fnType(4, 4, 4)
}

func (op *convOp) InferShape(...G.DimSizer) (tensor.Shape, error) { return op.out.shape.Clone(), nil }

// weight returns the effective weight: w, or w*mask.
func (op *convOp) weight(w []float32) []float32 {
	if op.mask == nil {
		return w
	}
	for i, m := range op.mask {
		op.weff[i] = w[i] * m
	}
	return op.weff
}

// columns fills col with the column matrix of chunk qc, whose first sample is x.
func (qc *convGeom) columns(x, col []float32) { qc.im2col(x, col, 0, qc.cols()*qc.n) }

// gather returns the output gradient of chunk qc (first sample at dy) as one (OC, crows)
// matrix: dy itself for a single sample, else the samples' planes moved into buf (on a
// grid, with zeros in its extra columns).
func (qc *convGeom) gather(dy, buf []float32) []float32 {
	P, NP, cp := qc.pixels(), qc.crows(), qc.cpix()
	switch {
	case qc.gridded():
		clear(buf)
		for n := 0; n < qc.n; n++ {
			for o := 0; o < qc.oc; o++ {
				kernel.CopyStrided(buf[o*NP+n*cp:], qc.w, dy[(n*qc.oc+o)*P:], qc.ow, qc.oh, qc.ow)
			}
		}
	case qc.n == 1:
		return dy[:qc.oc*P]
	default:
		for n := 0; n < qc.n; n++ {
			kernel.CopyStrided(buf[n*P:], NP, dy[n*qc.oc*P:], P, qc.oc, P)
		}
	}
	return buf
}

// fromGrid moves the planes of one sample from a grid product to y (planes of oh x ow):
// plane o starts at grid[o*ld0], its rows ld values apart (ld >= ow, the grid's columns past
// ow are dropped). It adds bias[o] to plane o (nil: no bias).
func fromGrid(y, grid, bias []float32, planes, ld0, ld, oh, ow int) {
	P := oh * ow
	for o := 0; o < planes; o++ {
		if bias == nil {
			kernel.CopyStrided(y[o*P:], ow, grid[o*ld0:], ld, oh, ow)
		} else {
			kernel.StridedRows(y[o*P:], ow, grid[o*ld0:], ld, oh, ow, bias[o], -kernel.Inf, kernel.Inf)
		}
	}
}

// scatter moves the product yt (OC, crows) of chunk qc to its output planes y, adding the
// bias (nil: none).
func (qc *convGeom) scatter(y, yt, bias []float32) {
	P, NP, cp := qc.pixels(), qc.crows(), qc.cpix()
	out := qc.oc * P
	switch {
	case qc.gridded():
		for n := 0; n < qc.n; n++ {
			fromGrid(y[n*out:], yt[n*cp:], bias, qc.oc, NP, qc.w, qc.oh, qc.ow)
		}
	case qc.n > 1 && bias != nil:
		for n := 0; n < qc.n; n++ {
			kernel.StridedRowsBias(y[n*out:], P, yt[n*P:], NP, qc.oc, P, bias, -kernel.Inf, kernel.Inf)
		}
	case qc.n > 1:
		for n := 0; n < qc.n; n++ {
			kernel.CopyStrided(y[n*out:], P, yt[n*P:], NP, qc.oc, P)
		}
	case bias != nil: // yt is y
		for o, b := range bias {
			r := y[o*P:][:P]
			kernel.ScaleShift(r, r, 1, b)
		}
	}
}

func (op *convOp) Do(vals ...G.Value) (G.Value, error) {
	if err := checkArity(op, len(vals)); err != nil {
		return nil, err
	}
	q := &op.q
	x, err := f32(vals[0], q.n*q.c*q.h*q.w, op.id+" input")
	if err != nil {
		return nil, err
	}
	w, err := f32(vals[1], q.oc*q.kg(), op.id+" weight")
	if err != nil {
		return nil, err
	}
	var bias []float32
	if op.hasBias {
		if bias, err = f32(vals[2], q.oc, op.id+" bias"); err != nil {
			return nil, err
		}
	}
	w = op.weight(w)
	y := op.out.data
	if op.direct && q.dw3() {
		q.depthwise3(x, w, bias, y, &op.dwPads, &op.dwPhases)
		return op.out.get(), nil
	}
	if op.direct {
		q.depthwise(x, w, bias, y)
		return op.out.get(), nil
	}
	if q.padded() {
		op.forwardPadded(x, w, bias, y)
		return op.out.get(), nil
	}
	in, out, kg, ocg := q.c*q.h*q.w, q.oc*q.pixels(), q.kg(), q.ocg()
	op.ws.ready()
	parallelW(q.chunks(), q.chunk()*out*kg, func(wk, lo, hi int) {
		for c := lo; c < hi; c++ {
			n0, qc := q.part(c)
			NP := qc.crows()
			col, yt := op.ws.scratch(wk, qc.cols()*NP, q.oc*NP)
			qc.columns(x[n0*in:], col)
			yc := y[n0*out:][:qc.n*out]
			if qc.n == 1 && !qc.gridded() {
				yt = yc // one sample's (OC, pixels) matrix is its output
			}
			for g := 0; g < q.g; g++ {
				// yt_g (ocg x crows) = w_g (ocg x kg) · col_g (kg x crows)
				gemm1(false, false, ocg, NP, kg, 1, w[g*ocg*kg:], kg, col[g*kg*NP:], NP, 0, yt[g*ocg*NP:], NP)
			}
			qc.scatter(yc, yt, bias)
		}
	})
	return op.out.get(), nil
}

func (op *convOp) DiffWRT(n int) []bool {
	d := make([]bool, n)
	for i := range d {
		d[i] = i > 0 || op.needDX
	}
	return d
}

func (op *convOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if err := checkArity(op, len(inputs)); err != nil {
		return nil, err
	}
	if op.direct {
		return op.symDiffDirect(inputs, grad)
	}
	var err error
	res := make(G.Nodes, len(inputs))
	if op.needDX {
		if res[0], err = G.ApplyOp(&convGradXOp{opBase: newBase("conv.gradX", op.id), c: op}, inputs[1], grad); err != nil {
			return nil, err
		}
	}
	if res[1], err = G.ApplyOp(&convGradWOp{opBase: newBase("conv.gradW", op.id), c: op}, inputs[0], grad); err != nil {
		return nil, err
	}
	if op.hasBias {
		if res[2], err = G.ApplyOp(&convGradBOp{opBase: newBase("conv.gradB", op.id), c: op}, grad); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// convGradXOp computes the input gradient from the weight and the output gradient.
type convGradXOp struct {
	opBase
	c   *convOp
	out outBuf
	wf  []float32 // flipped, transposed weights (padded convolutions)
}

func (op *convGradXOp) Arity() int    { return 2 }
func (op *convGradXOp) Type() hm.Type { return fnType(4, 4, 4) }
func (op *convGradXOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	q := &op.c.q
	return tensor.Shape{q.n, q.c, q.h, q.w}, nil
}

func (op *convGradXOp) Do(vals ...G.Value) (G.Value, error) {
	c := op.c
	q := &c.q
	w, err := f32(vals[0], q.oc*q.kg(), op.id+" weight")
	if err != nil {
		return nil, err
	}
	dy, err := f32(vals[1], q.n*q.oc*q.pixels(), op.id+" gradient")
	if err != nil {
		return nil, err
	}
	if c.mask != nil {
		w = c.weff // computed by the forward pass of this step
	}
	if op.out.t == nil {
		op.out = newOutBuf(q.n, q.c, q.h, q.w)
	}
	dx := op.out.data
	if q.padded() {
		op.inputGradPadded(w, dy, dx)
		return op.out.get(), nil
	}
	in, out, kg, ocg := q.c*q.h*q.w, q.oc*q.pixels(), q.kg(), q.ocg()
	c.ws.ready()
	parallelW(q.chunks(), q.chunk()*out*kg, func(wk, lo, hi int) {
		for ch := lo; ch < hi; ch++ {
			n0, qc := q.part(ch)
			NP := qc.crows()
			dcol, buf := c.ws.scratch(wk, qc.cols()*NP, q.oc*NP)
			gt := qc.gather(dy[n0*out:], buf)
			for g := 0; g < q.g; g++ {
				// dcol_g (kg x rows) = w_gᵀ (kg x ocg) · gt_g (ocg x rows)
				gemm1(true, false, kg, NP, ocg, 1, w[g*ocg*kg:], kg, gt[g*ocg*NP:], NP, 0, dcol[g*kg*NP:], NP)
			}
			qc.col2im(dcol, dx[n0*in:], 0, qc.n*q.c)
		}
	})
	return op.out.get(), nil
}

// convGradWOp computes the weight gradient from the input and the output gradient: lane l
// sums the products of its chunks in order, then the lanes' sums are added in order. Masked
// weights get a zero gradient.
type convGradWOp struct {
	opBase
	c   *convOp
	out outBuf
}

func (op *convGradWOp) Arity() int    { return 2 }
func (op *convGradWOp) Type() hm.Type { return fnType(4, 4, 4) }
func (op *convGradWOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	q := &op.c.q
	return tensor.Shape{q.oc, q.icg(), q.k, q.k}, nil
}

func (op *convGradWOp) Do(vals ...G.Value) (G.Value, error) {
	c := op.c
	q := &c.q
	x, err := f32(vals[0], q.n*q.c*q.h*q.w, op.id+" input")
	if err != nil {
		return nil, err
	}
	dy, err := f32(vals[1], q.n*q.oc*q.pixels(), op.id+" gradient")
	if err != nil {
		return nil, err
	}
	if op.out.t == nil {
		op.out = newOutBuf(q.oc, q.icg(), q.k, q.k)
	}
	dw := op.out.data
	in, out, kg, ocg := q.c*q.h*q.w, q.oc*q.pixels(), q.kg(), q.ocg()
	chunks := q.chunks()
	lanes := min(maxLanes, chunks)
	// With many output channels per group the transposed product, dw_gᵀ = col_g · gt_gᵀ,
	// packs the narrower operand transposed and runs faster (BenchmarkTrainStep on
	// vgg-small); the sums are transposed back at the end.
	trans := ocg >= 32
	slots := dw
	if lanes > 1 || trans {
		slots = grow(&c.ws.slots, lanes*len(dw))
	}
	c.ws.ready()
	parallelW(lanes, chunks/lanes*q.chunk()*out*kg, func(wk, lo, hi int) {
		for l := lo; l < hi; l++ {
			sum := slots[l*len(dw):][:len(dw)]
			for ch := l * chunks / lanes; ch < (l+1)*chunks/lanes; ch++ {
				n0, qc := q.part(ch)
				NP := qc.crows()
				col, buf := c.ws.scratch(wk, qc.cols()*NP, q.oc*NP)
				qc.columns(x[n0*in:], col)
				gt := qc.gather(dy[n0*out:], buf)
				beta := float32(1)
				if ch == l*chunks/lanes {
					beta = 0
				}
				for g := 0; g < q.g; g++ {
					a, b := gt[g*ocg*NP:], col[g*kg*NP:]
					if trans {
						// dw_gᵀ (kg x ocg) += col_g (kg x rows) · gt_gᵀ (rows x ocg)
						gemm1(false, true, kg, ocg, NP, 1, b, NP, a, NP, beta, sum[g*ocg*kg:], ocg)
						continue
					}
					// dw_g (ocg x kg) += gt_g (ocg x rows) · col_gᵀ (rows x kg)
					gemm1(false, true, ocg, kg, NP, 1, a, NP, b, NP, beta, sum[g*ocg*kg:], kg)
				}
			}
		}
	})
	if lanes > 1 || trans {
		total := slots[:len(dw)]
		for l := 1; l < lanes; l++ {
			kernel.Add(total, total, slots[l*len(dw):][:len(dw)])
		}
		if !trans {
			copy(dw, total)
		}
		for g := 0; trans && g < q.g; g++ {
			t, d := total[g*ocg*kg:], dw[g*ocg*kg:]
			for j := 0; j < kg; j++ {
				for o := 0; o < ocg; o++ {
					d[o*kg+j] = t[j*ocg+o]
				}
			}
		}
	}
	if c.mask != nil {
		for i, m := range c.mask {
			dw[i] *= m
		}
	}
	return op.out.get(), nil
}

// convGradBOp sums the output gradient over samples and pixels: the bias gradient.
type convGradBOp struct {
	opBase
	c   *convOp
	out outBuf
}

func (op *convGradBOp) Arity() int    { return 1 }
func (op *convGradBOp) Type() hm.Type { return fnType(4, 1) }
func (op *convGradBOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{op.c.q.oc}, nil
}

func (op *convGradBOp) Do(vals ...G.Value) (G.Value, error) {
	q := &op.c.q
	P := q.pixels()
	dy, err := f32(vals[0], q.n*q.oc*P, op.id)
	if err != nil {
		return nil, err
	}
	if op.out.t == nil {
		op.out = newOutBuf(q.oc)
	}
	db := op.out.data
	parallel(q.oc, q.n*P, func(lo, hi int) {
		for o := lo; o < hi; o++ {
			var sum float64
			for n := 0; n < q.n; n++ {
				s, _ := kernel.SumDev64(dy[(n*q.oc+o)*P:][:P], 0)
				sum += s
			}
			db[o] = float32(sum)
		}
	})
	return op.out.get(), nil
}
