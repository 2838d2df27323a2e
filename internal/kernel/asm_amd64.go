//go:build amd64 && !purego

package kernel

// hasAVX2FMA tells whether the CPU and the operating system support AVX2 and FMA.
var hasAVX2FMA = detectAVX2FMA()

// hasAVX512 tells whether the CPU and the operating system also support AVX-512F.
var hasAVX512 = hasAVX2FMA && detectAVX512()

// asmMicro is the AVX2/FMA micro-kernel: a 6 x 16 tile held in twelve YMM accumulators.
var asmMicro = micro{mr: 6, nr: 16, kern: asmKern6x16, kernStrided: asmKern6x16Strided, kernRows: asmKern6x16Rows, dot: asmDot, dots: asmDots2x4}

// avx512Micro is the AVX-512 micro-kernel: an 8 x 32 tile held in sixteen of the 32 ZMM
// registers, more than twice the work of asmMicro per instruction (and per cycle on a CPU
// with full-width 512-bit units). Eight rows also fit the channel counts of convolutions
// (16, 32, 64) without an idle row.
var avx512Micro = micro{mr: 8, nr: 32, kern: asmKern8x32, kernStrided: asmKern8x32Strided, kernRows: asmKern8x32Rows, dot: asmDot, dots: asmDots2x4}

func detectAVX512() bool {
	_, ebx7, _, _ := cpuid(7, 0)
	const avx512f = 1 << 16
	if ebx7&avx512f == 0 {
		return false
	}
	// The OS must save the opmask and all 512 bits of the 32 ZMM registers.
	xcr0, _ := xgetbv()
	return xcr0&0xe6 == 0xe6
}

func detectAVX2FMA() bool {
	maxID, _, _, _ := cpuid(0, 0)
	if maxID < 7 {
		return false
	}
	_, _, ecx1, _ := cpuid(1, 0)
	const fma, osxsave, avx = 1 << 12, 1 << 27, 1 << 28
	if ecx1&fma == 0 || ecx1&osxsave == 0 || ecx1&avx == 0 {
		return false
	}
	// The OS must save the XMM and YMM state.
	if xcr0, _ := xgetbv(); xcr0&6 != 6 {
		return false
	}
	_, ebx7, _, _ := cpuid(7, 0)
	const avx2 = 1 << 5
	return ebx7&avx2 != 0
}

func cpuid(eaxArg, ecxArg uint32) (eax, ebx, ecx, edx uint32)

func xgetbv() (eax, edx uint32)

// kern6x16 computes the 6 x 16 tile c (row stride ldc) = or += the product of a packed
// 6 x kc sliver a and a kc x 16 sliver b whose rows are ldb values apart (16 when packed).
// kc must be at least 1.
//
//go:noescape
func kern6x16(kc int, a, b *float32, ldb int, c *float32, ldc int, load bool)

// dots2x4AVX sets acc[8*(4i+j)+l] to the sum over p < n, p%8 == l, of
// a[i*lda+p]*b[j*ldb+p] for i < 2, j < 4; n is a positive multiple of 8.
//
//go:noescape
func dots2x4AVX(n int, a *float32, lda int, b *float32, ldb int, acc *[64]float32)

func asmDots2x4(n int, a []float32, lda int, b []float32, ldb int, out *[8]float32) {
	_ = a[lda+n-1]
	_ = b[3*ldb+n-1]
	n8 := n &^ 7
	*out = [8]float32{}
	if n8 > 0 {
		var acc [64]float32
		dots2x4AVX(n8, &a[0], lda, &b[0], ldb, &acc)
		for t := range out {
			l := acc[8*t : 8*t+8]
			out[t] = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))
		}
	}
	for p := n8; p < n; p++ {
		for i := 0; i < 2; i++ {
			for j := 0; j < 4; j++ {
				out[4*i+j] += a[i*lda+p] * b[j*ldb+p]
			}
		}
	}
}

// dotAVX returns the dot product of n values of x and y.
//
//go:noescape
func dotAVX(n int, x, y *float32) float32

// tile calls the assembly micro-kernel k for a 6 x nr tile after checking that a, b (rows
// ldb apart) and c (rows ldc apart) hold what it reads and writes.
func tile(k func(kc int, a, b *float32, ldb int, c *float32, ldc int, load bool), nr, kc int, a, b []float32, ldb int, c []float32, ldc int, load bool) {
	if kc <= 0 {
		return
	}
	_ = a[6*kc-1]
	_ = b[(kc-1)*ldb+nr-1]
	_ = c[5*ldc+nr-1]
	k(kc, &a[0], &b[0], ldb, &c[0], ldc, load)
}

func asmKern6x16(kc int, a, b, c []float32, ldc int, load bool) {
	tile(kern6x16, 16, kc, a, b, 16, c, ldc, load)
}

func asmKern6x16Strided(kc int, a, b []float32, ldb int, c []float32, ldc int, load bool) {
	tile(kern6x16, 16, kc, a, b, ldb, c, ldc, load)
}

// kern6x16Rows is kern6x16 with row p of b at b+offs[p] values.
//
//go:noescape
func kern6x16Rows(kc int, a, b *float32, offs *int, c *float32, ldc int, load bool)

// asmKern6x16Rows (and asmKern8x32Rows) check a, offs and c; the caller (runRows) has
// checked that every row of b they read lies inside b.
func asmKern6x16Rows(kc int, a, b []float32, offs []int, c []float32, ldc int, load bool) {
	_ = a[6*kc-1]
	_ = offs[kc-1]
	_ = c[5*ldc+15]
	kern6x16Rows(kc, &a[0], &b[0], &offs[0], &c[0], ldc, load)
}

// kern8x32 computes the 8 x 32 tile c (row stride ldc) = or += the product of a packed
// 8 x kc sliver a and a kc x 32 sliver b whose rows are ldb values apart (32 when packed),
// with AVX-512. kc must be at least 1.
//
//go:noescape
func kern8x32(kc int, a, b *float32, ldb int, c *float32, ldc int, load bool)

// kern8x32Rows is kern8x32 with row p of b at b+offs[p] values.
//
//go:noescape
func kern8x32Rows(kc int, a, b *float32, offs *int, c *float32, ldc int, load bool)

func asmKern8x32(kc int, a, b, c []float32, ldc int, load bool) {
	tile8(kern8x32, kc, a, b, 32, c, ldc, load)
}

func asmKern8x32Strided(kc int, a, b []float32, ldb int, c []float32, ldc int, load bool) {
	tile8(kern8x32, kc, a, b, ldb, c, ldc, load)
}

// tile8 is tile for the 8-row kernel.
func tile8(k func(kc int, a, b *float32, ldb int, c *float32, ldc int, load bool), kc int, a, b []float32, ldb int, c []float32, ldc int, load bool) {
	if kc <= 0 {
		return
	}
	_ = a[8*kc-1]
	_ = b[(kc-1)*ldb+31]
	_ = c[7*ldc+31]
	k(kc, &a[0], &b[0], ldb, &c[0], ldc, load)
}

func asmKern8x32Rows(kc int, a, b []float32, offs []int, c []float32, ldc int, load bool) {
	_ = a[8*kc-1]
	_ = offs[kc-1]
	_ = c[7*ldc+31]
	kern8x32Rows(kc, &a[0], &b[0], &offs[0], &c[0], ldc, load)
}

func asmDot(x, y []float32) float32 {
	if len(x) == 0 {
		return 0
	}
	_ = y[len(x)-1]
	return dotAVX(len(x), &x[0], &y[0])
}

// scaleShiftAVX sets dst[i] = src[i]*a + b for n values, n a multiple of 8.
//
//go:noescape
func scaleShiftAVX(dst, src *float32, n int, a, b float32)

// clampAVX sets dst[i] = min(max(src[i], lo), hi) for n values, n a multiple of 8.
//
//go:noescape
func clampAVX(dst, src *float32, n int, lo, hi float32)

// reluGradAVX sets dx[i] = dy[i] where 0 < x[i] < top and 0 elsewhere, for n values, n a
// multiple of 8.
//
//go:noescape
func reluGradAVX(dx, x, dy *float32, n int, top float32)

// transpose6x8AVX writes, for b < blocks, the transpose of the 6 x 8 block at src+8b
// (rows lds values apart) to dst+48b: dst[48b+6p+i] = src[8b+i*lds+p].
//
//go:noescape
func transpose6x8AVX(dst, src *float32, lds, blocks int)

// transpose8x8AVX writes, for b < blocks, the transpose of the 8 x 8 block at src+8b (rows
// lds values apart) to dst+8b*ldd (rows ldd values apart).
//
//go:noescape
func transpose8x8AVX(dst *float32, ldd int, src *float32, lds int, blocks int)

// maxPool2x2AVX sets dst[x] to the largest of r0[2x], r0[2x+1], r1[2x] and r1[2x+1] (NaN
// if any is) for x < n, n a multiple of 4 (at most one group of 4 past the last 8).
//
//go:noescape
func maxPool2x2AVX(dst, r0, r1 *float32, n int)

// sumDev64AVX sets out to the sums of x[i]-c and of (x[i]-c)² in float64, for n values,
// n a positive multiple of 8.
//
//go:noescape
func sumDev64AVX(x *float32, n int, c float64, out *[2]float64)

// sumDot64AVX sets out to the sums of x[i] and of x[i]*y[i] in float64, for n values, n a
// positive multiple of 8.
//
//go:noescape
func sumDot64AVX(x, y *float32, n int, out *[2]float64)

// axpbyAVX sets dst[i] = a*x[i] + (b*y[i] + c) for n values, n a multiple of 8.
//
//go:noescape
func axpbyAVX(dst, x, y *float32, n int, a, b, c float32)

// scaleShift2AVX is ScaleShift2 for n values, n a multiple of 8.
//
//go:noescape
func scaleShift2AVX(xh, y, x *float32, n int, a, b, gm, c, lo, hi float32)

// maxPoolArgAVX is MaxPool2x2Arg for n outputs, n a multiple of 8; iota holds 2x for each
// lane x.
//
//go:noescape
func maxPoolArgAVX(dst *float32, idx *int32, r0, r1 *float32, n int, start, w int32, iota *[8]int32) int

// adamAVX is Adam for n values, n a multiple of 8.
//
//go:noescape
func adamAVX(w, grad, m, v *float32, n int, p *AdamParams)

// addAVX sets dst[i] = x[i] + y[i] for n values, n a multiple of 8.
//
//go:noescape
func addAVX(dst, x, y *float32, n int)

// copyRowsAVX copies n values (4 <= n <= 16) from src[offs[p]:] to dst[p*stride:] for p
// in 0..rows-1.
//
//go:noescape
func copyRowsAVX(dst *float32, stride int, src *float32, offs *int, rows, n int)

// stridedRowsAVX sets dst[r*ldd+i] = min(max(src[r*lds+i]+b[r*bs], lo), hi) for r < rows
// and i < n (NaN kept), with
// 4 <= n and rows >= 1; a destination row must not overlap its source row.
//
//go:noescape
func stridedRowsAVX(dst *float32, ldd int, src *float32, lds int, rows, n int, b *float32, bs int, lo, hi float32)

// deinterleaveAVX sets even[i] = src[2i] and odd[i] = src[2i+1] for i < n, n >= 8.
//
//go:noescape
func deinterleaveAVX(even, odd, src *float32, n int)

// addRowsAVX sets dst[r*ldd+i] += src[r*lds+i] for r < rows and i < n, rows >= 1.
//
//go:noescape
func addRowsAVX(dst *float32, ldd int, src *float32, lds int, rows, n int)

// depthwise3x3s2AVX is Depthwise3x3S2 without the checks.
//
//go:noescape
func depthwise3x3s2AVX(dst, x *float32, pl, q, ld int, w *[9]float32, bias float32, oh, ow int, lo, hi float32)

// depthwise3x3AVX is Depthwise3x3 without the checks.
//
//go:noescape
func depthwise3x3AVX(dst, x *float32, w *[9]float32, bias float32, oh, ow, pw int, lo, hi float32)
