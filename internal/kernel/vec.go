package kernel

import "math"

// ScaleShift sets dst[i] = src[i]*a + b. dst must be at least as long as src.
func ScaleShift(dst, src []float32, a, b float32) {
	dst = dst[:len(src)]
	n := 0
	if hasAVX2FMA && len(src) >= 8 {
		n = len(src) &^ 7
		scaleShiftAVX(&dst[0], &src[0], n, a, b)
	}
	for i := n; i < len(src); i++ {
		dst[i] = src[i]*a + b
	}
}

// ScaleShift2 is two ScaleShifts and a Clamp in one pass, the normalisation of a training
// batch norm and its activation: xh[i] = x[i]*a + b and y[i] = min(max(xh[i]*g + c, lo), hi),
// with the same bits as the three calls (lo = -Inf and hi = +Inf for none). xh and y must
// be at least as long as x.
func ScaleShift2(xh, y, x []float32, a, b, g, c, lo, hi float32) {
	xh, y = xh[:len(x)], y[:len(x)]
	n := 0
	if hasAVX2FMA && len(x) >= 8 {
		n = len(x) &^ 7
		scaleShift2AVX(&xh[0], &y[0], &x[0], n, a, b, g, c, lo, hi)
	}
	for i := n; i < len(x); i++ {
		h := x[i]*a + b
		xh[i] = h
		y[i] = min(max(h*g+c, lo), hi)
	}
}

// Clamp sets dst[i] = min(max(src[i], lo), hi), keeping NaN. Pass hi = +Inf for a ReLU.
// dst must be at least as long as src.
func Clamp(dst, src []float32, lo, hi float32) {
	dst = dst[:len(src)]
	n := 0
	if hasAVX2FMA && len(src) >= 8 {
		n = len(src) &^ 7
		clampAVX(&dst[0], &src[0], n, lo, hi)
	}
	for i := n; i < len(src); i++ {
		dst[i] = min(max(src[i], lo), hi)
	}
}

// ReLUGrad sets dx[i] = dy[i] where 0 < x[i] < top and dx[i] = 0 elsewhere (NaN included):
// the gradient of a ReLU (top = +Inf) or a ReLU6 (top = 6) at its inputs x. dx and dy must
// be at least as long as x.
func ReLUGrad(dx, x, dy []float32, top float32) {
	dx = dx[:len(x)]
	dy = dy[:len(x)]
	n := 0
	if hasAVX2FMA && len(x) >= 8 {
		n = len(x) &^ 7
		reluGradAVX(&dx[0], &x[0], &dy[0], n, top)
	}
	for i := n; i < len(x); i++ {
		if v := x[i]; v > 0 && v < top {
			dx[i] = dy[i]
		} else {
			dx[i] = 0
		}
	}
}

// MaxPool2x2 sets dst[x] to the largest of r0[2x], r0[2x+1], r1[2x] and r1[2x+1], NaN if
// any of them is, for x < len(dst): one output row of a 2 x 2 max pool with stride 2, from
// its two input rows. r0 and r1 must hold at least 2*len(dst) values.
func MaxPool2x2(dst, r0, r1 []float32) {
	n := len(dst)
	r0, r1 = r0[:2*n], r1[:2*n]
	done := 0
	if hasAVX2FMA && n >= 4 {
		done = n &^ 3
		maxPool2x2AVX(&dst[0], &r0[0], &r1[0], done)
	}
	for x := done; x < n; x++ {
		dst[x] = max(max(r0[2*x], r0[2*x+1]), max(r1[2*x], r1[2*x+1]))
	}
}

// MaxPool2x2Arg is one output row of a training 2 x 2 max pool with stride 2 that also
// records where each maximum is: for x from 0, dst[x] is the first of r0[2x], r0[2x+1],
// r1[2x], r1[2x+1] (in that order) equal to their maximum and idx[x] its position in the
// input plane, start+2x plus 0, 1, w or w+1 (r1 is r0's next row, w values on). It does
// what it can on vector registers, groups of 8 outputs without NaN, and returns how many
// outputs it wrote (a multiple of 8, possibly 0); the caller does the rest, a window with a
// NaN first. r0 and r1 must hold 2*len(dst) values and idx len(dst).
func MaxPool2x2Arg(dst []float32, idx []int32, r0, r1 []float32, start, w int) int {
	n := len(dst) &^ 7
	if !hasAVX2FMA || n == 0 {
		return 0
	}
	_, _, _ = idx[n-1], r0[2*n-1], r1[2*n-1]
	return maxPoolArgAVX(&dst[0], &idx[0], &r0[0], &r1[0], n, int32(start), int32(w), &iota2)
}

// iota2 holds 2x for the lanes x of an AVX register.
var iota2 = [8]int32{0, 2, 4, 6, 8, 10, 12, 14}

// SumDev64 returns the sums of x[i]-c and of (x[i]-c)², accumulated in float64: the mean
// (c = 0) and the variance (c = the mean) of a batch-norm channel.
func SumDev64(x []float32, c float64) (s1, s2 float64) {
	n := 0
	if hasAVX2FMA && len(x) >= 8 {
		n = len(x) &^ 7
		var out [2]float64
		sumDev64AVX(&x[0], n, c, &out)
		s1, s2 = out[0], out[1]
	}
	for _, v := range x[n:] {
		d := float64(v) - c
		s1 += d
		s2 += d * d
	}
	return s1, s2
}

// SumDot64 returns the sums of x[i] and of x[i]*y[i], accumulated in float64. y must be at
// least as long as x.
func SumDot64(x, y []float32) (sx, sxy float64) {
	y = y[:len(x)]
	n := 0
	if hasAVX2FMA && len(x) >= 8 {
		n = len(x) &^ 7
		var out [2]float64
		sumDot64AVX(&x[0], &y[0], n, &out)
		sx, sxy = out[0], out[1]
	}
	for i, v := range x[n:] {
		sx += float64(v)
		sxy += float64(v) * float64(y[n+i])
	}
	return sx, sxy
}

// Axpby sets dst[i] = a*x[i] + (b*y[i] + c). dst and y must be at least as long as x.
func Axpby(dst, x, y []float32, a, b, c float32) {
	dst = dst[:len(x)]
	y = y[:len(x)]
	n := 0
	if hasAVX2FMA && len(x) >= 8 {
		n = len(x) &^ 7
		axpbyAVX(&dst[0], &x[0], &y[0], n, a, b, c)
	}
	for i := n; i < len(x); i++ {
		dst[i] = a*x[i] + (b*y[i] + c)
	}
}

// AdamParams are the constants of one Adam step: the moment decays B1 and B2 with their
// complements NB1 = 1-B1 and NB2 = 1-B2 (given, not computed in float32), the learning
// rate, the L2 weight decay added to the gradient, the bias corrections C1 = 1/(1-B1^t)
// and C2 = 1/(1-B2^t), and Eps. The field order is the assembly's.
type AdamParams struct {
	B1, NB1, B2, NB2, LR, Decay, C1, C2, Eps float32
}

// Adam applies one step of Adam (PyTorch's, with L2 decay) to the weights w, with gradient
// g and moments m and v, all of equal length:
//
//	g' = g + Decay·w;  m = B1·m + NB1·g';  v = B2·v + NB2·g'·g'
//	w -= LR·(m·C1) / (sqrt(v·C2) + Eps)
//
// every operation rounded to float32 in that order (no fused multiply-add), so the vector
// and scalar paths agree bit for bit.
func Adam(w, g, m, v []float32, p *AdamParams) {
	g, m, v = g[:len(w)], m[:len(w)], v[:len(w)]
	n := 0
	if hasAVX2FMA && len(w) >= 8 {
		n = len(w) &^ 7
		adamAVX(&w[0], &g[0], &m[0], &v[0], n, p)
	}
	for i := n; i < len(w); i++ {
		gi := g[i] + p.Decay*w[i]
		mi := p.B1*m[i] + p.NB1*gi
		vi := p.B2*v[i] + p.NB2*gi*gi
		m[i], v[i] = mi, vi
		w[i] -= p.LR * (mi * p.C1) / (float32(math.Sqrt(float64(vi*p.C2))) + p.Eps)
	}
}

// Add sets dst[i] = x[i] + y[i]. dst and y must be at least as long as x.
func Add(dst, x, y []float32) {
	dst = dst[:len(x)]
	y = y[:len(x)]
	n := 0
	if hasAVX2FMA && len(x) >= 8 {
		n = len(x) &^ 7
		addAVX(&dst[0], &x[0], &y[0], n)
	}
	for i := n; i < len(x); i++ {
		dst[i] = x[i] + y[i]
	}
}

// Inf is +Inf as a float32, the upper bound of a ReLU for Clamp.
var Inf = float32(math.Inf(1))

// CopyRows copies n values from src[base+offs[p]:] to dst[p*stride:] for every p in
// 0..len(offs)-1. The offsets must be non-negative and ascending; it panics when a row falls
// outside src or dst.
func CopyRows(dst []float32, stride int, src []float32, base int, offs []int, n int) {
	rows := len(offs)
	if rows == 0 || n <= 0 {
		return
	}
	if base < 0 || offs[0] < 0 || base+offs[rows-1]+n > len(src) || (rows-1)*stride+n > len(dst) || stride < 0 {
		panic("kernel: CopyRows out of range")
	}
	if hasAVX2FMA && n >= 4 && n <= 16 {
		copyRowsAVX(&dst[0], stride, &src[base], &offs[0], rows, n)
		return
	}
	for p, o := range offs {
		copy(dst[p*stride:p*stride+n], src[base+o:base+o+n])
	}
}

// StridedRows sets dst[r*ldd+i] = min(max(src[r*lds+i]+b, lo), hi) for every r < rows and
// i < n, keeping NaN: a block of rows moved between two row strides (a plane into its
// zero-padded copy, or a product's wide grid into the output planes), with a bias and the
// clamp of a ReLU or ReLU6. With b = -0 (math.Copysign(0, -1)), lo = -Inf and hi = +Inf it
// copies every value exactly, signed zeros included. A destination row must not overlap
// its source row; it panics when a row falls outside dst or src.
func StridedRows(dst []float32, ldd int, src []float32, lds int, rows, n int, b, lo, hi float32) {
	bb := [1]float32{b}
	moveRows(dst, ldd, src, lds, rows, n, bb[:], 0, lo, hi)
}

// CopyStrided copies rows of n values between two row strides: dst[r*ldd+i] = src[r*lds+i]
// for r < rows and i < n, exactly (StridedRows adding -0 without a clamp).
func CopyStrided(dst []float32, ldd int, src []float32, lds int, rows, n int) {
	StridedRows(dst, ldd, src, lds, rows, n, negZero, -Inf, Inf)
}

// AddStrided adds rows of n values between two row strides: dst[r*ldd+i] += src[r*lds+i]
// for r < rows and i < n (the adjoint of CopyStrided). A destination row must not overlap
// its source row; it panics when a row falls outside dst or src.
func AddStrided(dst []float32, ldd int, src []float32, lds int, rows, n int) {
	if rows <= 0 || n <= 0 {
		return
	}
	if ldd < 0 || lds < 0 || (rows-1)*ldd+n > len(dst) || (rows-1)*lds+n > len(src) {
		panic("kernel: AddStrided out of range")
	}
	if hasAVX2FMA {
		addRowsAVX(&dst[0], ldd, &src[0], lds, rows, n)
		return
	}
	for r := 0; r < rows; r++ {
		d := dst[r*ldd : r*ldd+n]
		for i, v := range src[r*lds : r*lds+n] {
			d[i] += v
		}
	}
}

// negZero is -0: x + negZero is x for every x, signed zeros included.
var negZero = float32(math.Copysign(0, -1))

// StridedRowsBias is StridedRows with a bias per row: row r adds bias[r].
func StridedRowsBias(dst []float32, ldd int, src []float32, lds int, rows, n int, bias []float32, lo, hi float32) {
	if rows > 0 && len(bias) < rows {
		panic("kernel: StridedRowsBias has fewer biases than rows")
	}
	moveRows(dst, ldd, src, lds, rows, n, bias, 1, lo, hi)
}

// moveRows is StridedRows with row r adding bias[r*bs].
func moveRows(dst []float32, ldd int, src []float32, lds int, rows, n int, bias []float32, bs int, lo, hi float32) {
	if rows <= 0 || n <= 0 {
		return
	}
	if ldd < 0 || lds < 0 || (rows-1)*ldd+n > len(dst) || (rows-1)*lds+n > len(src) {
		panic("kernel: StridedRows out of range")
	}
	if hasAVX2FMA && n >= 4 {
		stridedRowsAVX(&dst[0], ldd, &src[0], lds, rows, n, &bias[0], bs, lo, hi)
		return
	}
	for r := 0; r < rows; r++ {
		d := dst[r*ldd : r*ldd+n]
		br := bias[r*bs]
		for i, v := range src[r*lds : r*lds+n] {
			d[i] = min(max(v+br, lo), hi)
		}
	}
}

// Deinterleave sets even[i] = src[2i] and odd[i] = src[2i+1] for every i < len(src)/2: the
// even and odd columns of rows of even length, laid end to end. It panics if even or odd is
// shorter than len(src)/2.
func Deinterleave(even, odd, src []float32) {
	n := len(src) / 2
	if len(even) < n || len(odd) < n {
		panic("kernel: Deinterleave out of range")
	}
	i := 0
	if hasAVX2FMA && n >= 8 {
		deinterleaveAVX(&even[0], &odd[0], &src[0], n)
		i = n
	}
	for ; i < n; i++ {
		even[i], odd[i] = src[2*i], src[2*i+1]
	}
}

// Depthwise3x3S2 computes one output plane (oh x ow) of a 3x3 convolution with stride 2 from
// the four phases of a zero-padded input plane: phase p holds the padded rows 2i+p/2 and
// columns 2j+p%2, with rows ld values apart (so ld >= ow+1, and each phase holds oh+1 rows),
// phase 0 at x[0:], phase 1 at x[pl:], phase 2 at x[q:] and phase 3 at x[pl+q:]. Phases
// stored one after another are q = 2*pl; the even and the odd columns of a padded plane of
// even width wp, each taken as a whole (Deinterleave), are the phases with pl = half the
// plane, ld = wp and q = wp/2. Like Depthwise3x3 it adds bias and clamps to [lo, hi]:
// dst[y*ow+i] = bias + sum over kh, kw of w[kh*3+kw] * padded[2y+kh][2i+kw], summed in the
// same order as Depthwise3x3's. x must extend DepthwiseSlack values past the last row of
// phase 3.
func Depthwise3x3S2(dst, x []float32, pl, q, ld int, w *[9]float32, bias float32, oh, ow int, lo, hi float32) {
	if oh <= 0 || ow <= 0 {
		return
	}
	// The last values read: row oh of phase 1, row oh-1 of phase 3 (ow of each), and their
	// vectors' reach past them, within DepthwiseSlack.
	if ld < ow+1 || pl < 0 || q < 0 || len(dst) < oh*ow || len(x) < pl+max(oh*ld, q+(oh-1)*ld)+ow+1+DepthwiseSlack {
		panic("kernel: Depthwise3x3S2 out of range")
	}
	if hasAVX2FMA {
		depthwise3x3s2AVX(&dst[0], &x[0], pl, q, ld, w, bias, oh, ow, lo, hi)
		return
	}
	w0, w1, w2, w3, w4, w5, w6, w7, w8 := w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8]
	for y := 0; y < oh; y++ {
		e0, o0 := x[y*ld:], x[pl+y*ld:]
		e1, o1 := x[q+y*ld:], x[pl+q+y*ld:]
		e2, o2 := x[(y+1)*ld:], x[pl+(y+1)*ld:]
		row := dst[y*ow : (y+1)*ow]
		for i := range row {
			v := bias + (w0*e0[i] + w1*o0[i] + w2*e0[i+1]) + (w3*e1[i] + w4*o1[i] + w5*e1[i+1]) +
				(w6*e2[i] + w7*o2[i] + w8*e2[i+1])
			row[i] = min(max(v, lo), hi)
		}
	}
}

// DepthwiseSlack is how many values past the end of its padded input plane Depthwise3x3 may
// read (and ignore).
const DepthwiseSlack = 16

// Depthwise3x3 computes one output plane (oh x ow) of a 3x3 convolution with stride 1 over
// one zero-padded input plane x with row stride pw (so pw >= ow+2 and x holds oh+2 rows),
// plus bias, clamped to [lo, hi] (NaN kept; -Inf and +Inf for no clamp, 0 and 6 for a fused
// ReLU6): dst[y*ow+i] = bias + sum over kh, kw of w[kh*3+kw] * x[(y+kh)*pw+i+kw]. x must
// extend DepthwiseSlack values past its last row.
func Depthwise3x3(dst, x []float32, w *[9]float32, bias float32, oh, ow, pw int, lo, hi float32) {
	if oh <= 0 || ow <= 0 {
		return
	}
	if pw < ow+2 || len(dst) < oh*ow || len(x) < (oh+2)*pw+DepthwiseSlack {
		panic("kernel: Depthwise3x3 out of range")
	}
	if hasAVX2FMA {
		depthwise3x3AVX(&dst[0], &x[0], w, bias, oh, ow, pw, lo, hi)
		return
	}
	w0, w1, w2, w3, w4, w5, w6, w7, w8 := w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8]
	for y := 0; y < oh; y++ {
		r0 := x[y*pw : y*pw+ow+2]
		r1 := x[(y+1)*pw : (y+1)*pw+ow+2]
		r2 := x[(y+2)*pw : (y+2)*pw+ow+2]
		row := dst[y*ow : (y+1)*ow]
		for i := range row {
			a, b, c := r0[i:i+3], r1[i:i+3], r2[i:i+3]
			v := bias + (w0*a[0] + w1*a[1] + w2*a[2]) + (w3*b[0] + w4*b[1] + w5*b[2]) +
				(w6*c[0] + w7*c[1] + w8*c[2])
			row[i] = min(max(v, lo), hi)
		}
	}
}
