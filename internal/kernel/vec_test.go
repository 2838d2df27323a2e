package kernel

import (
	"fmt"
	"math"
	"math/rand"
	"testing"
)

func TestVectorOps(t *testing.T) {
	rng := rand.New(rand.NewSource(5))
	nan := float32(math.NaN())
	for n := 0; n < 70; n++ {
		src := randSlice(rng, n)
		y := randSlice(rng, n)
		if n > 3 {
			src[3] = nan
		}
		got := make([]float32, n+1)
		got[n] = 42
		ScaleShift(got, src, 1.5, -0.25)
		for i, v := range src {
			if w := v*1.5 - 0.25; got[i] != w && !(w != w && got[i] != got[i]) && math.Abs(float64(got[i]-w)) > 1e-6 {
				t.Fatalf("ScaleShift n=%d [%d] = %v, want %v", n, i, got[i], w)
			}
		}
		for _, hi := range []float32{Inf, 6, 0.5} {
			Clamp(got, src, 0, hi)
			for i, v := range src {
				w := min(max(v, 0), hi)
				if got[i] != w && !(w != w && got[i] != got[i]) {
					t.Fatalf("Clamp(hi=%v) n=%d [%d] = %v, want %v", hi, n, i, got[i], w)
				}
			}
		}
		x := append([]float32(nil), src...)
		for i := range x {
			x[i] *= 8 // inputs on both sides of 0 and of 6
		}
		if n > 9 {
			x[5], x[6], x[7], x[8], x[9] = 0, 6, float32(math.Inf(1)), float32(math.Inf(-1)), -0.0
		}
		for _, top := range []float32{Inf, 6} {
			ReLUGrad(got, x, y, top)
			for i, v := range x {
				w := float32(0)
				if v > 0 && v < top {
					w = y[i]
				}
				if got[i] != w || math.Signbit(float64(got[i])) != math.Signbit(float64(w)) {
					t.Fatalf("ReLUGrad(top=%v) n=%d [%d] at %v = %v, want %v", top, n, i, v, got[i], w)
				}
			}
		}
		Add(got, src, y)
		for i, v := range src {
			if w := v + y[i]; got[i] != w && !(w != w && got[i] != got[i]) {
				t.Fatalf("Add n=%d [%d] = %v, want %v", n, i, got[i], w)
			}
		}
		if got[n] != 42 {
			t.Fatalf("n=%d: wrote past the end", n)
		}
	}
}

func TestCopyRows(t *testing.T) {
	rng := rand.New(rand.NewSource(6))
	src := randSlice(rng, 500)
	for n := 1; n <= 20; n++ {
		offs := []int{0, 3, 17, 40, 41, 100, 200}
		const stride, base = 21, 5
		dst := make([]float32, len(offs)*stride)
		CopyRows(dst, stride, src, base, offs, n)
		for p, o := range offs {
			for j := 0; j < stride; j++ {
				want := float32(0)
				if j < n {
					want = src[base+o+j]
				}
				if dst[p*stride+j] != want {
					t.Fatalf("n=%d row %d col %d: %v, want %v", n, p, j, dst[p*stride+j], want)
				}
			}
		}
	}
	for _, c := range []struct {
		name string
		f    func()
	}{
		{"src", func() { CopyRows(make([]float32, 100), 10, src, 0, []int{0, 495}, 8) }},
		{"dst", func() { CopyRows(make([]float32, 15), 10, src, 0, []int{0, 1}, 8) }},
		{"negative", func() { CopyRows(make([]float32, 100), 10, src, 0, []int{-1, 1}, 8) }},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s out of range: no panic", c.name)
				}
			}()
			c.f()
		}()
	}
}

func TestDepthwise3x3(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	var w [9]float32
	copy(w[:], randSlice(rng, 9))
	for oh := 1; oh < 10; oh++ {
		for ow := 1; ow < 30; ow++ {
			pw := ow + 2 + oh%3
			x := randSlice(rng, (oh+2)*pw+DepthwiseSlack)
			dst := make([]float32, oh*ow+8) // 8 guards: a full vector's store past the plane
			for i := oh * ow; i < len(dst); i++ {
				dst[i] = 42
			}
			// A ReLU6 clamp on odd planes, none on even ones.
			lo, hi := float32(-Inf), float32(Inf)
			if ow%2 == 1 {
				lo, hi = 0, 0.6
			}
			Depthwise3x3(dst, x, &w, 0.5, oh, ow, pw, lo, hi)
			for y := 0; y < oh; y++ {
				for i := 0; i < ow; i++ {
					want := 0.5
					for kh := 0; kh < 3; kh++ {
						for kw := 0; kw < 3; kw++ {
							want += float64(w[kh*3+kw]) * float64(x[(y+kh)*pw+i+kw])
						}
					}
					want = min(max(want, float64(lo)), float64(hi))
					if got := dst[y*ow+i]; math.Abs(float64(got)-want) > 1e-5 {
						t.Fatalf("oh=%d ow=%d (%d,%d): %v, want %v", oh, ow, y, i, got, want)
					}
				}
			}
			for i := oh * ow; i < len(dst); i++ {
				if dst[i] != 42 {
					t.Fatalf("oh=%d ow=%d: wrote past the plane at %d", oh, ow, i-oh*ow)
				}
			}
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("short input: no panic")
		}
	}()
	Depthwise3x3(make([]float32, 4), make([]float32, 16), &w, 0, 2, 2, 4, -Inf, Inf)
}

func TestMaxPool2x2(t *testing.T) {
	rng := rand.New(rand.NewSource(6))
	nan := float32(math.NaN())
	for n := 0; n < 30; n++ {
		for _, at := range []int{-1, 0, 1, 2 * n / 3, 4*n - 1} {
			r := randSlice(rng, 4*n+2)
			if n > 0 && at >= 0 {
				r[at] = nan // in either row, either column, first or second operand
			}
			if n > 2 {
				r[4], r[5], r[2*n+4], r[2*n+5] = float32(math.Inf(-1)), float32(math.Inf(-1)), float32(math.Inf(-1)), float32(math.Inf(-1))
			}
			r0, r1 := r[:2*n], r[2*n:4*n]
			got := make([]float32, n+1)
			got[n] = 42
			MaxPool2x2(got[:n], r0, r1)
			for x := 0; x < n; x++ {
				w := max(max(r0[2*x], r0[2*x+1]), max(r1[2*x], r1[2*x+1]))
				if got[x] != w && !(w != w && got[x] != got[x]) {
					t.Fatalf("n=%d nan at %d: [%d] = %v, want %v", n, at, x, got[x], w)
				}
			}
			if got[n] != 42 {
				t.Fatalf("n=%d: wrote past the end", n)
			}
		}
	}
}

func TestSumsAndAxpby(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	for n := 0; n < 70; n++ {
		x, y := randSlice(rng, n), randSlice(rng, n)
		c := 0.25
		var w1, w2, wx, wxy float64
		for i, v := range x {
			d := float64(v) - c
			w1, w2 = w1+d, w2+d*d
			wx, wxy = wx+float64(v), wxy+float64(v)*float64(y[i])
		}
		s1, s2 := SumDev64(x, c)
		sx, sxy := SumDot64(x, y)
		for _, p := range [][3]any{{"SumDev64 s1", s1, w1}, {"SumDev64 s2", s2, w2}, {"SumDot64 sx", sx, wx}, {"SumDot64 sxy", sxy, wxy}} {
			if got, want := p[1].(float64), p[2].(float64); math.Abs(got-want) > 1e-12*(1+math.Abs(want)) {
				t.Fatalf("n=%d %s = %v, want %v", n, p[0], got, want)
			}
		}
		got := make([]float32, n+1)
		got[n] = 42
		Axpby(got, x, y, 1.5, -0.5, 0.125)
		for i := range x {
			if w := 1.5*float64(x[i]) - 0.5*float64(y[i]) + 0.125; math.Abs(float64(got[i])-w) > 1e-6 {
				t.Fatalf("n=%d Axpby [%d] = %v, want %v", n, i, got[i], w)
			}
		}
		if got[n] != 42 {
			t.Fatalf("n=%d: Axpby wrote past the end", n)
		}
	}
}

func TestStridedRows(t *testing.T) {
	rng := rand.New(rand.NewSource(8))

	for _, n := range []int{1, 3, 4, 5, 7, 8, 9, 14, 16, 17, 28, 33} {
		for _, rows := range []int{1, 2, 7} {
			for _, cl := range []struct{ b, lo, hi float32 }{{negZero, Inf * -1, Inf}, {0.75, Inf * -1, Inf}, {0.25, 0, Inf}, {-0.5, 0, 0.6}} {
				b := cl.b
				lds, ldd := n+3, n+5
				src := randSlice(rng, (rows-1)*lds+n)
				src[0] = negZero
				if n > 2 {
					src[2] = float32(math.NaN())
				}
				dst := randSlice(rng, (rows-1)*ldd+n+1)
				keep := append([]float32(nil), dst...)
				StridedRows(dst, ldd, src, lds, rows, n, b, cl.lo, cl.hi)
				for i := range dst {
					r, c := i/ldd, i%ldd
					want := keep[i]
					if r < rows && c < n {
						want = min(max(src[r*lds+c]+b, cl.lo), cl.hi)
					}
					if math.Float32bits(dst[i]) != math.Float32bits(want) && !(want != want && dst[i] != dst[i]) {
						t.Fatalf("n=%d rows=%d b=%v: dst[%d] = %v, want %v", n, rows, b, i, dst[i], want)
					}
				}
			}
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("no panic on a row past the end")
		}
	}()
	StridedRows(make([]float32, 10), 5, make([]float32, 20), 5, 3, 4, 0, 0, Inf)
}

func TestDeinterleave(t *testing.T) {
	rng := rand.New(rand.NewSource(12))
	for _, n := range []int{0, 1, 7, 8, 9, 14, 16, 17, 33, 98} {
		src := randSlice(rng, 2*n+1) // an odd last value is left alone
		even, odd := randSlice(rng, n+1), randSlice(rng, n+1)
		e9, o9 := even[n], odd[n]
		Deinterleave(even, odd, src)
		for i := 0; i < n; i++ {
			if even[i] != src[2*i] || odd[i] != src[2*i+1] {
				t.Fatalf("n=%d: [%d] = %v, %v; want %v, %v", n, i, even[i], odd[i], src[2*i], src[2*i+1])
			}
		}
		if even[n] != e9 || odd[n] != o9 {
			t.Fatalf("n=%d: wrote past n", n)
		}
	}
}

func TestStridedRowsBias(t *testing.T) {
	rng := rand.New(rand.NewSource(13))
	for _, n := range []int{1, 4, 7, 8, 49} {
		rows, lds, ldd := 5, n+2, n+1
		src := randSlice(rng, (rows-1)*lds+n)
		bias := randSlice(rng, rows)
		dst := make([]float32, (rows-1)*ldd+n)
		StridedRowsBias(dst, ldd, src, lds, rows, n, bias, 0, 6)
		for r := 0; r < rows; r++ {
			for i := 0; i < n; i++ {
				if want := min(max(src[r*lds+i]+bias[r], 0), 6); dst[r*ldd+i] != want {
					t.Fatalf("n=%d: row %d [%d] = %v, want %v", n, r, i, dst[r*ldd+i], want)
				}
			}
		}
	}
}

func TestDepthwise3x3S2(t *testing.T) {
	rng := rand.New(rand.NewSource(14))
	var w [9]float32
	copy(w[:], randSlice(rng, 9))
	for oh := 1; oh < 10; oh++ {
		for ow := 1; ow < 21; ow++ {
			// A padded plane of 2*oh+1 rows and 2*ow+1 (+1 on odd sizes) columns, laid out
			// as its four phases one after another (oh+1 rows of ld columns each), and as
			// the even and the odd columns of the plane made of even width.
			hp, wp := 2*oh+1+ow%2, 2*ow+1+oh%2
			plane := randSlice(rng, hp*wp)
			ld := (wp + 1) / 2
			pl := ((hp + 1) / 2) * ld
			x := make([]float32, 4*pl+DepthwiseSlack)
			for r := 0; r < hp; r++ {
				for c := 0; c < wp; c++ {
					x[((r%2)*2+c%2)*pl+(r/2)*ld+c/2] = plane[r*wp+c]
				}
			}
			we := wp + wp%2
			even := make([]float32, hp*we+DepthwiseSlack)
			for r := 0; r < hp; r++ {
				for c := 0; c < wp; c++ {
					even[(c%2)*(hp*we/2)+r*we/2+c/2] = plane[r*wp+c]
				}
			}
			lo, hi := float32(-Inf), float32(Inf)
			if ow%3 == 0 {
				lo, hi = 0, 0.6
			}
			for _, layout := range []struct {
				name      string
				x         []float32
				pl, q, ld int
			}{{"phases", x, pl, 2 * pl, ld}, {"columns", even, hp * we / 2, we / 2, we}} {
				dst := make([]float32, oh*ow+8) // 8 guards: a full vector's store past the plane
				for i := oh * ow; i < len(dst); i++ {
					dst[i] = 42
				}
				Depthwise3x3S2(dst, layout.x, layout.pl, layout.q, layout.ld, &w, 0.25, oh, ow, lo, hi)
				for y := 0; y < oh; y++ {
					for i := 0; i < ow; i++ {
						want := 0.25
						for kh := 0; kh < 3; kh++ {
							for kw := 0; kw < 3; kw++ {
								want += float64(w[kh*3+kw]) * float64(plane[(2*y+kh)*wp+2*i+kw])
							}
						}
						want = min(max(want, float64(lo)), float64(hi))
						if got := dst[y*ow+i]; math.Abs(float64(got)-want) > 1e-5 {
							t.Fatalf("%s: oh=%d ow=%d (%d,%d): %v, want %v", layout.name, oh, ow, y, i, got, want)
						}
					}
				}
				for i := oh * ow; i < len(dst); i++ {
					if dst[i] != 42 {
						t.Fatalf("%s: oh=%d ow=%d: wrote past the plane at %d", layout.name, oh, ow, i-oh*ow)
					}
				}
			}
		}
	}
}

func TestAddStrided(t *testing.T) {
	rng := rand.New(rand.NewSource(15))
	for _, n := range []int{1, 3, 7, 8, 9, 10, 16, 23} {
		rows, lds, ldd := 4, n+3, n+2
		src := randSlice(rng, (rows-1)*lds+n)
		dst := randSlice(rng, (rows-1)*ldd+n+1)
		want := append([]float32(nil), dst...)
		for r := 0; r < rows; r++ {
			for i := 0; i < n; i++ {
				want[r*ldd+i] += src[r*lds+i]
			}
		}
		AddStrided(dst, ldd, src, lds, rows, n)
		for i := range dst {
			if dst[i] != want[i] {
				t.Fatalf("n=%d: dst[%d] = %v, want %v", n, i, dst[i], want[i])
			}
		}
	}
}

// TestAdam checks the Adam step against the scalar formula, bit for bit, on lengths around
// the vector width.
func TestAdam(t *testing.T) {
	rng := rand.New(rand.NewSource(9))
	p := &AdamParams{B1: 0.9, NB1: 0.1, B2: 0.999, NB2: 0.001, LR: 1e-3, Decay: 1e-4, C1: 1 / (1 - 0.9*0.9), C2: 1 / (1 - 0.999*0.999), Eps: 1e-8}
	for _, n := range []int{0, 1, 7, 8, 9, 17, 33, 64} {
		w, g, m, v := randSlice(rng, n), randSlice(rng, n), randSlice(rng, n), randSlice(rng, n)
		for i := range v {
			v[i] *= v[i] // a second moment is not negative
		}
		ww, wm, wv := append([]float32(nil), w...), append([]float32(nil), m...), append([]float32(nil), v...)
		for i := range ww {
			gi := g[i] + p.Decay*ww[i]
			wm[i] = p.B1*wm[i] + p.NB1*gi
			wv[i] = p.B2*wv[i] + p.NB2*gi*gi
			ww[i] -= p.LR * (wm[i] * p.C1) / (float32(math.Sqrt(float64(wv[i]*p.C2))) + p.Eps)
		}
		Adam(w, g, m, v, p)
		for i := range w {
			if math.Float32bits(w[i]) != math.Float32bits(ww[i]) || m[i] != wm[i] || v[i] != wv[i] {
				t.Fatalf("n=%d [%d]: w, m, v = %v, %v, %v, want %v, %v, %v", n, i, w[i], m[i], v[i], ww[i], wm[i], wv[i])
			}
		}
	}
}

// TestScaleShift2 checks the fused pass against two ScaleShifts and a Clamp, bit for bit.
func TestScaleShift2(t *testing.T) {
	rng := rand.New(rand.NewSource(4))
	for _, n := range []int{0, 1, 7, 8, 9, 17, 33} {
		x := randSlice(rng, n)
		if n > 5 {
			x[5] = float32(math.NaN())
		}
		for _, c := range [][2]float32{{-Inf, Inf}, {0, Inf}, {0, 0.5}} {
			xh, y := make([]float32, n), make([]float32, n)
			wh, wy := make([]float32, n), make([]float32, n)
			ScaleShift2(xh, y, x, 1.7, -0.3, 0.6, 0.25, c[0], c[1])
			ScaleShift(wh, x, 1.7, -0.3)
			ScaleShift(wy, wh, 0.6, 0.25)
			Clamp(wy, wy, c[0], c[1])
			for i := range x {
				if math.Float32bits(xh[i]) != math.Float32bits(wh[i]) || math.Float32bits(y[i]) != math.Float32bits(wy[i]) {
					t.Fatalf("n=%d clamp %v [%d]: %v, %v, want %v, %v", n, c, i, xh[i], y[i], wh[i], wy[i])
				}
			}
		}
	}
}

// BenchmarkDepthwise3x3 times one plane of the depthwise kernel at the plane sizes of the
// zoo's small models: rows of 7 and 14 end in a partial vector, rows of 8 and 16 do not.
func BenchmarkDepthwise3x3(b *testing.B) {
	rng := rand.New(rand.NewSource(1))
	w := [9]float32{}
	for i := range w {
		w[i] = rng.Float32()
	}
	for _, n := range []int{4, 7, 8, 14, 16} {
		pw := n + 2
		x := randSlice(rng, (n+2)*pw+DepthwiseSlack)
		dst := make([]float32, n*n)
		b.Run(fmt.Sprintf("%dx%d", n, n), func(b *testing.B) {
			for b.Loop() {
				Depthwise3x3(dst, x, &w, 0.5, n, n, pw, 0, 6)
			}
			b.ReportMetric(float64(n*n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "Gpixel/s")
		})
	}
}
