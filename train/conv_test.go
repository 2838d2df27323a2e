package train

import (
	"fmt"
	"math"
	"math/rand"
	"runtime"
	"testing"

	"gorgonia.org/tensor"
)

// convPasses runs a convOp of geometry q (samples per chunk per) forward and backward on
// fixed random data and returns y, dx, dw and db.
func convPasses(t *testing.T, q convGeom, per int) [4][]float32 {
	t.Helper()
	rng := rand.New(rand.NewSource(int64(q.n*131 + q.k)))
	fill := func(n int) *tensor.Dense {
		d := make([]float32, n)
		for i := range d {
			d[i] = float32(rng.NormFloat64())
		}
		return tensor.New(tensor.WithShape(n), tensor.WithBacking(d))
	}
	x := fill(q.n * q.c * q.h * q.w)
	w := fill(q.oc * q.kg())
	b := fill(q.oc)
	dy := fill(q.n * q.oc * q.oh * q.ow)
	q.per = per
	op := newConvOp("c", q, true, nil, true, &workspace{})
	y, err := op.Do(x, w, b)
	if err != nil {
		t.Fatal(err)
	}
	dx, err := (&convGradXOp{opBase: newBase("gx", "c"), c: op}).Do(w, dy)
	if err != nil {
		t.Fatal(err)
	}
	dw, err := (&convGradWOp{opBase: newBase("gw", "c"), c: op}).Do(x, dy)
	if err != nil {
		t.Fatal(err)
	}
	db, err := (&convGradBOp{opBase: newBase("gb", "c"), c: op}).Do(dy)
	if err != nil {
		t.Fatal(err)
	}
	var out [4][]float32
	for i, v := range []any{y, dx, dw, db} {
		out[i] = append([]float32(nil), v.(*tensor.Dense).Float32s()...)
	}
	// The output, the input gradient and the weight gradient against direct loops.
	xs, dys, ws, bs := x.Float32s(), dy.Float32s(), w.Float32s(), b.Float32s()
	icg, ocg := q.icg(), q.ocg()
	wantY := make([]float64, len(out[0]))
	wantDX := make([]float64, len(out[1]))
	for n := 0; n < q.n; n++ {
		for o := 0; o < q.oc; o++ {
			for oy := 0; oy < q.oh; oy++ {
				for ox := 0; ox < q.ow; ox++ {
					yi := ((n*q.oc+o)*q.oh+oy)*q.ow + ox
					wantY[yi] = float64(bs[o])
					for ci := 0; ci < icg; ci++ {
						c := o/ocg*icg + ci
						for ky := 0; ky < q.k; ky++ {
							for kx := 0; kx < q.k; kx++ {
								iy, ix := oy*q.s-q.p+ky, ox*q.s-q.p+kx
								if iy < 0 || iy >= q.h || ix < 0 || ix >= q.w {
									continue
								}
								xi := ((n*q.c+c)*q.h+iy)*q.w + ix
								wv := float64(ws[((o*icg+ci)*q.k+ky)*q.k+kx])
								wantY[yi] += wv * float64(xs[xi])
								wantDX[xi] += wv * float64(dys[yi])
							}
						}
					}
				}
			}
		}
	}
	for i, name := range []string{"y", "dx"} {
		want := [][]float64{wantY, wantDX}[i]
		for j, v := range out[i] {
			if math.Abs(float64(v)-want[j]) > 1e-4*math.Max(1, math.Abs(want[j])) {
				t.Fatalf("%d per chunk: %s[%d] = %v, direct loops %v", per, name, j, v, want[j])
			}
		}
	}
	for o := 0; o < q.oc; o++ {
		for ci := 0; ci < icg; ci++ {
			for ky := 0; ky < q.k; ky++ {
				for kx := 0; kx < q.k; kx++ {
					var want float64
					for n := 0; n < q.n; n++ {
						for oy := 0; oy < q.oh; oy++ {
							for ox := 0; ox < q.ow; ox++ {
								iy, ix := oy*q.s-q.p+ky, ox*q.s-q.p+kx
								if iy < 0 || iy >= q.h || ix < 0 || ix >= q.w {
									continue
								}
								c := o/ocg*icg + ci
								want += float64(dys[((n*q.oc+o)*q.oh+oy)*q.ow+ox]) * float64(xs[((n*q.c+c)*q.h+iy)*q.w+ix])
							}
						}
					}
					got := float64(out[2][((o*icg+ci)*q.k+ky)*q.k+kx])
					if math.Abs(got-want) > 1e-3*math.Max(1, math.Abs(want)) {
						t.Fatalf("%d per chunk: dw[%d][%d][%d][%d] = %v, direct loops %v", per, o, ci, ky, kx, got, want)
					}
				}
			}
		}
	}
	return out
}

// TestConvChunks checks that a convolution cut into chunks of samples (and its weight
// gradient into lanes of chunks) computes what one chunk of the whole batch does: the same
// bits for the output and the input gradient, the same sums up to rounding for the weight
// gradient, and the same bits for any number of threads.
func TestConvChunks(t *testing.T) {
	geoms := []convGeom{
		{n: 11, c: 3, h: 9, w: 9, oc: 5, k: 3, s: 1, p: 1, g: 1, oh: 9, ow: 9},   // same size
		{n: 11, c: 2, h: 11, w: 11, oc: 3, k: 5, s: 2, p: 2, g: 1, oh: 6, ow: 6}, // strided
		{n: 11, c: 4, h: 7, w: 7, oc: 6, k: 3, s: 1, p: 0, g: 1, oh: 5, ow: 5},   // valid
		{n: 11, c: 4, h: 5, w: 5, oc: 6, k: 1, s: 1, p: 0, g: 2, oh: 5, ow: 5},   // grouped
		{n: 11, c: 4, h: 6, w: 6, oc: 64, k: 3, s: 1, p: 1, g: 2, oh: 6, ow: 6},  // wide: transposed weight gradient
	}
	names := []string{"y", "dx", "dw", "db"}
	for _, q := range geoms {
		t.Run(fmt.Sprintf("c%d_k%d_s%d_p%d_g%d", q.c, q.k, q.s, q.p, q.g), func(t *testing.T) {
			whole := convPasses(t, q, q.n)
			for _, per := range []int{1, 3, 4} {
				got := convPasses(t, q, per)
				for i, name := range names {
					for j, v := range got[i] {
						want := whole[i][j]
						if i == 2 { // the weight gradient sums in another order
							if d := math.Abs(float64(v - want)); d > 1e-4*math.Max(1, math.Abs(float64(want))) {
								t.Fatalf("%d per chunk: %s[%d] = %v, one chunk %v", per, name, j, v, want)
							}
						} else if v != want {
							t.Fatalf("%d per chunk: %s[%d] = %v, one chunk %v", per, name, j, v, want)
						}
					}
				}
				prev := runtime.GOMAXPROCS(1)
				one := convPasses(t, q, per)
				runtime.GOMAXPROCS(prev)
				for i, name := range names {
					for j := range one[i] {
						if math.Float32bits(one[i][j]) != math.Float32bits(got[i][j]) {
							t.Fatalf("%d per chunk: %s[%d] is %v on one thread, %v on %d", per, name, j, one[i][j], got[i][j], prev)
						}
					}
				}
			}
		})
	}
}
