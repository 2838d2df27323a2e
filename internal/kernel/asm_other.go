//go:build !amd64 || purego

package kernel

// hasAVX2FMA is false where no assembly micro-kernel is built.
const hasAVX2FMA = false

// hasAVX512 is false where no assembly micro-kernel is built.
const hasAVX512 = false

// asmMicro and avx512Micro fall back to the portable micro-kernel.
var asmMicro, avx512Micro = goMicro, goMicro

func scaleShiftAVX(dst, src *float32, n int, a, b float32) { panic("unreachable") }
func clampAVX(dst, src *float32, n int, lo, hi float32)    { panic("unreachable") }
func scaleShift2AVX(xh, y, x *float32, n int, a, b, gm, c, lo, hi float32) {
	panic("unreachable")
}
func addAVX(dst, x, y *float32, n int)                   { panic("unreachable") }
func reluGradAVX(dx, x, dy *float32, n int, top float32) { panic("unreachable") }
func maxPool2x2AVX(dst, r0, r1 *float32, n int)          { panic("unreachable") }
func maxPoolArgAVX(dst *float32, idx *int32, r0, r1 *float32, n int, start, w int32, iota *[8]int32) int {
	panic("unreachable")
}
func sumDev64AVX(x *float32, n int, c float64, out *[2]float64) {
	panic("unreachable")
}
func sumDot64AVX(x, y *float32, n int, out *[2]float64)    { panic("unreachable") }
func axpbyAVX(dst, x, y *float32, n int, a, b, c float32)  { panic("unreachable") }
func adamAVX(w, grad, m, v *float32, n int, p *AdamParams) { panic("unreachable") }
func transpose8x8AVX(dst *float32, ldd int, src *float32, lds int, blocks int) {
	panic("unreachable")
}
func copyRowsAVX(dst *float32, stride int, src *float32, offs *int, rows, n int) {
	panic("unreachable")
}

func stridedRowsAVX(dst *float32, ldd int, src *float32, lds int, rows, n int, b *float32, bs int, lo, hi float32) {
	panic("unreachable")
}

func deinterleaveAVX(even, odd, src *float32, n int) { panic("unreachable") }

func transpose6x8AVX(dst, src *float32, lds, blocks int) { panic("unreachable") }

func addRowsAVX(dst *float32, ldd int, src *float32, lds int, rows, n int) { panic("unreachable") }

func depthwise3x3s2AVX(dst, x *float32, pl, q, ld int, w *[9]float32, bias float32, oh, ow int, lo, hi float32) {
	panic("unreachable")
}

func depthwise3x3AVX(dst, x *float32, w *[9]float32, bias float32, oh, ow, pw int, lo, hi float32) {
	panic("unreachable")
}
