package kernel

import (
	"fmt"
	"math"
	"math/rand"
	"testing"
)

// naive computes C = alpha*op(A)*op(B) + beta*C in float64.
func naive(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float64
			for p := 0; p < k; p++ {
				var av, bv float32
				if transA {
					av = a[p*lda+i]
				} else {
					av = a[i*lda+p]
				}
				if transB {
					bv = b[j*ldb+p]
				} else {
					bv = b[p*ldb+j]
				}
				s += float64(av) * float64(bv)
			}
			v := float64(alpha) * s
			if beta != 0 {
				v += float64(beta) * float64(c[i*ldc+j])
			}
			c[i*ldc+j] = float32(v)
		}
	}
}

func randSlice(rng *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(rng.NormFloat64())
	}
	return s
}

func impls() map[string]Gemm {
	m := map[string]Gemm{"default": New(), "portable": NewPortable(), "gonum": Gonum{}}
	if hasAVX512 {
		m["avx2"] = newBlocked(asmMicro) // New takes the AVX-512 kernel here
	}
	return m
}

func TestSgemm(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	type dims struct{ m, n, k int }
	sizes := []dims{{1, 1, 1}, {1, 7, 3}, {2, 5, 9}, {3, 17, 40}, {4, 4, 4}, {5, 33, 7},
		{6, 16, 1}, {7, 19, 300}, {13, 31, 257}, {64, 49, 576}, {97, 130, 20}, {100, 2100, 3},
		{32, 128, 3136}, {10, 23, 1100}, {24, 48, 600}, {36, 35, 520}, {37, 17, 9}}
	for name, g := range impls() {
		for _, d := range sizes {
			for _, ta := range []bool{false, true} {
				for _, tb := range []bool{false, true} {
					for _, ab := range [][2]float32{{1, 0}, {1, 1}, {0.5, -2}} {
						alpha, beta := ab[0], ab[1]
						lda, ldb, ldc := d.k+3, d.n+2, d.n+5
						if ta {
							lda = d.m + 1
						}
						if tb {
							ldb = d.k + 4
						}
						rowsA, rowsB := d.m, d.k
						if ta {
							rowsA = d.k
						}
						if tb {
							rowsB = d.n
						}
						a := randSlice(rng, rowsA*lda)
						b := randSlice(rng, rowsB*ldb)
						c := randSlice(rng, d.m*ldc)
						if beta == 0 {
							for i := range c {
								c[i] = float32(math.NaN())
							}
						}
						want := append([]float32(nil), c...)
						naive(ta, tb, d.m, d.n, d.k, alpha, a, lda, b, ldb, beta, want, ldc)
						got := append([]float32(nil), c...)
						g.Sgemm(ta, tb, d.m, d.n, d.k, alpha, a, lda, b, ldb, beta, got, ldc)
						for i := 0; i < d.m; i++ {
							for j := 0; j < ldc; j++ {
								w, v := want[i*ldc+j], got[i*ldc+j]
								if j >= d.n {
									// Padding between rows must be left alone.
									if math.Float32bits(v) != math.Float32bits(c[i*ldc+j]) {
										t.Fatalf("%s %v ta=%v tb=%v: wrote outside C at (%d,%d)", name, d, ta, tb, i, j)
									}
									continue
								}
								tol := 1e-5 * (1 + math.Sqrt(float64(d.k))) * (1 + math.Abs(float64(w)))
								if math.Abs(float64(v-w)) > tol || v != v {
									t.Fatalf("%s %v ta=%v tb=%v alpha=%v beta=%v: C[%d,%d] = %v, want %v", name, d, ta, tb, alpha, beta, i, j, v, w)
								}
							}
						}
					}
				}
			}
		}
	}
}

// shiftedSource is a PanelSource whose B(p, j) is x[p*3+j]: overlapping rows, as in an
// implicit im2col matrix.
type shiftedSource struct{ x []float32 }

func (s *shiftedSource) PackB(dst []float32, p0, kc, j0, nc, nr int) {
	for j := 0; j < roundUp(nc, nr); j++ {
		for p := 0; p < kc; p++ {
			v := float32(0)
			if j < nc {
				v = s.x[(p0+p)*3+j0+j]
			}
			dst[(j/nr)*kc*nr+p*nr+j%nr] = v
		}
	}
}

func TestSgemmSource(t *testing.T) {
	rng := rand.New(rand.NewSource(4))
	kinds := map[string]func() SourceGemm{
		"default":  New,
		"portable": NewPortable,
		"gonum":    func() SourceGemm { return WithSource(Gonum{}) },
	}
	for name, mk := range kinds {
		g := mk()
		for _, d := range []struct{ m, n, k int }{{1, 1, 1}, {6, 16, 5}, {7, 33, 300}, {100, 70, 600}, {64, 784, 288}, {13, 3000, 9}} {
			for _, beta := range []float32{0, 1, -0.5} {
				lda := d.k + 2
				a := randSlice(rng, d.m*lda)
				pa := g.PackA(d.m, d.k, a, lda)
				// A stored B, and an implicit one.
				ldb := d.n + 3
				b := randSlice(rng, d.k*ldb)
				x := randSlice(rng, d.k*3+d.n)
				shifted := make([]float32, d.k*d.n)
				for p := 0; p < d.k; p++ {
					copy(shifted[p*d.n:(p+1)*d.n], x[p*3:p*3+d.n])
				}
				for _, src := range []struct {
					ps    PanelSource
					b     []float32
					ldb   int
					label string
				}{{&matrixB{b: b, ldb: ldb}, b, ldb, "dense"}, {&shiftedSource{x}, shifted, d.n, "implicit"}} {
					ldc := d.n + 1
					c := randSlice(rng, d.m*ldc)
					want := append([]float32(nil), c...)
					naive(false, false, d.m, d.n, d.k, 1, a, lda, src.b, src.ldb, beta, want, ldc)
					got := append([]float32(nil), c...)
					g.SgemmSource(pa, d.n, src.ps, beta, got, ldc)
					for i := range got {
						tol := 1e-5 * (1 + math.Sqrt(float64(d.k))) * (1 + math.Abs(float64(want[i])))
						if math.Abs(float64(got[i]-want[i])) > tol {
							t.Fatalf("%s %v beta=%v %s: C[%d] = %v, want %v", name, d, beta, src.label, i, got[i], want[i])
						}
					}
				}
			}
		}
	}
}

func TestPackedForOtherKernel(t *testing.T) {
	if !Accelerated() {
		t.Skip("one kernel kind only")
	}
	pa := NewPortable().PackA(6, 4, make([]float32, 24), 4)
	defer func() {
		if recover() == nil {
			t.Error("no panic on a PackedA of another kernel")
		}
	}()
	New().SgemmSource(pa, 3, &matrixB{b: make([]float32, 12), ldb: 3}, 0, make([]float32, 18), 3)
}

func TestDot(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	for _, u := range []micro{goMicro, asmMicro, avx512Micro} {
		for n := 0; n < 80; n++ {
			x, y := randSlice(rng, n), randSlice(rng, n)
			var want float64
			for i := range x {
				want += float64(x[i]) * float64(y[i])
			}
			if got := u.dot(x, y); math.Abs(float64(got)-want) > 1e-5*(1+float64(n)) {
				t.Fatalf("n=%d: dot = %v, want %v", n, got, want)
			}
		}
	}
}

func BenchmarkSgemm(b *testing.B) {
	rng := rand.New(rand.NewSource(3))
	for _, d := range []struct{ m, n, k int }{{64, 784, 288}, {64, 196, 576}, {128, 3136, 64}, {32, 128, 3136}} {
		a := randSlice(rng, d.m*d.k)
		bb := randSlice(rng, d.k*d.n)
		c := make([]float32, d.m*d.n)
		for _, name := range []string{"default", "avx2", "portable", "gonum"} {
			g, ok := impls()[name]
			if !ok {
				continue
			}
			b.Run(fmt.Sprintf("%dx%dx%d/%s", d.m, d.n, d.k, name), func(b *testing.B) {
				for b.Loop() {
					g.Sgemm(false, false, d.m, d.n, d.k, 1, a, d.k, bb, d.n, 0, c, d.n)
				}
				flops := 2 * float64(d.m*d.n*d.k) * float64(b.N)
				b.ReportMetric(flops/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}

// BenchmarkSgemmShapes times products of LeNet-5's and vgg-small's training steps at batch
// 64: few rows (output channels) against long or transposed operands, where packing can
// cost more than the multiply-adds.
func BenchmarkSgemmShapes(b *testing.B) {
	rng := rand.New(rand.NewSource(3))
	for _, d := range []struct {
		name           string
		transA, transB bool
		m, n, k        int
	}{
		{"conv1-forward", false, false, 6, 36864, 25},
		{"conv2-forward", false, false, 16, 4096, 150},
		{"conv1-gradW", false, true, 6, 25, 36864},
		{"conv2-gradW", false, true, 16, 150, 4096},
		{"conv2-gradX", true, false, 150, 4096, 16},
		{"vgg-conv3-forward", false, false, 64, 12544, 288},
		{"vgg-conv3-gradW", false, true, 64, 288, 12544},
	} {
		a := randSlice(rng, d.m*d.k)
		bb := randSlice(rng, d.k*d.n)
		c := make([]float32, d.m*d.n)
		lda, ldb := d.k, d.n
		if d.transA {
			lda = d.m
		}
		if d.transB {
			ldb = d.k
		}
		g := New()
		b.Run(d.name, func(b *testing.B) {
			for b.Loop() {
				g.Sgemm(d.transA, d.transB, d.m, d.n, d.k, 1, a, lda, bb, ldb, 0, c, d.n)
			}
			flops := 2 * float64(d.m*d.n*d.k) * float64(b.N)
			b.ReportMetric(flops/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// TestAVX512SameBits checks that the AVX-512 and AVX2 kernels give the same bits (each sums
// every element of C over k in the same order), so a study repeats on either kind of CPU.
func TestAVX512SameBits(t *testing.T) {
	if !hasAVX512 {
		t.Skip("no AVX-512 here")
	}
	rng := rand.New(rand.NewSource(9))
	wide, narrow := newBlocked(avx512Micro), newBlocked(asmMicro)
	for _, d := range []struct{ m, n, k int }{{6, 32, 1}, {13, 70, 300}, {64, 784, 288}, {300, 45, 700}, {20, 1000, 9}} {
		for _, tb := range []bool{false, true} {
			ldb := d.n
			if tb {
				ldb = d.k
			}
			a, b := randSlice(rng, d.m*d.k), randSlice(rng, d.k*d.n)
			c1, c2 := make([]float32, d.m*d.n), make([]float32, d.m*d.n)
			wide.Sgemm(false, tb, d.m, d.n, d.k, 1, a, d.k, b, ldb, 0, c1, d.n)
			narrow.Sgemm(false, tb, d.m, d.n, d.k, 1, a, d.k, b, ldb, 0, c2, d.n)
			for i := range c1 {
				if math.Float32bits(c1[i]) != math.Float32bits(c2[i]) {
					t.Fatalf("%v transB=%v: C[%d] = %v with AVX-512, %v with AVX2", d, tb, i, c1[i], c2[i])
				}
			}
		}
	}
}

// packedOnly hides the type of a PanelSource, so that SgemmSource packs it.
type packedOnly struct{ PanelSource }

func TestSgemmRows(t *testing.T) {
	rng := rand.New(rand.NewSource(11))
	kernels := map[string]SourceGemm{"default": New(), "portable": NewPortable()}
	if hasAVX512 {
		kernels["avx2"] = newBlocked(asmMicro)
	}
	for name, g := range kernels {
		for _, d := range []struct{ m, n, k int }{{1, 1, 1}, {3, 17, 1}, {6, 16, 9}, {7, 33, 17}, {17, 100, 300}, {64, 392, 576}, {16, 838, 144}, {33, 31, 3}} {
			for _, beta := range []float32{0, 1, -0.5} {
				// Offsets with gaps and overlaps, in any order, like a strided
				// convolution's over the phases of its input.
				offs := make([]int, d.k)
				hi := 0
				for p := range offs {
					offs[p] = rng.Intn(4 * d.k)
					hi = max(hi, offs[p])
				}
				x := randSlice(rng, hi+d.n)
				b := make([]float32, d.k*d.n)
				for p, o := range offs {
					copy(b[p*d.n:(p+1)*d.n], x[o:o+d.n])
				}
				a := randSlice(rng, d.m*d.k)
				pa := g.PackA(d.m, d.k, a, d.k)
				ldc := d.n + 2
				c := randSlice(rng, d.m*ldc)
				want := append([]float32(nil), c...)
				naive(false, false, d.m, d.n, d.k, 1, a, d.k, b, d.n, beta, want, ldc)
				got := append([]float32(nil), c...)
				rows := &Rows{B: x, Offs: offs}
				g.SgemmSource(pa, d.n, rows, beta, got, ldc)
				packed := append([]float32(nil), c...)
				g.SgemmSource(pa, d.n, packedOnly{rows}, beta, packed, ldc)
				for i := range got {
					tol := 1e-5 * (1 + math.Sqrt(float64(d.k))) * (1 + math.Abs(float64(want[i])))
					if math.Abs(float64(got[i]-want[i])) > tol {
						t.Fatalf("%s %v beta=%v: C[%d] = %v, want %v", name, d, beta, i, got[i], want[i])
					}
					if math.Float32bits(got[i]) != math.Float32bits(packed[i]) {
						t.Fatalf("%s %v beta=%v: C[%d] = %v in place, %v packed", name, d, beta, i, got[i], packed[i])
					}
				}
			}
		}
	}
}

func TestRowsOutOfRange(t *testing.T) {
	g := New()
	pa := g.PackA(6, 2, make([]float32, 12), 2)
	for _, r := range []*Rows{
		{B: make([]float32, 40), Offs: []int{0, 10}}, // the second row runs past B
		{B: make([]float32, 80), Offs: []int{50, 0}}, // the first row runs past B
		{B: make([]float32, 80), Offs: []int{-1, 0}}, // negative
	} {
		func() {
			defer func() {
				if recover() == nil && Accelerated() {
					t.Errorf("offsets %v over %d values: no panic", r.Offs, len(r.B))
				}
			}()
			g.SgemmSource(pa, 32, r, 0, make([]float32, 6*32), 32)
		}()
	}
}

// BenchmarkSgemmRows compares a product whose B is the im2col matrix of a 3x3 convolution
// read in place (Rows) with the same product through packed panels, on the shapes of
// resnet-small's stages over their padded planes.
func BenchmarkSgemmRows(b *testing.B) {
	rng := rand.New(rand.NewSource(1))
	for _, d := range []struct{ m, c, w int }{{16, 16, 30}, {32, 32, 16}, {64, 64, 9}} {
		k, n := d.c*9, d.w*(d.w-2)-2
		x := randSlice(rng, d.c*d.w*d.w)
		offs := make([]int, k)
		for r := range offs {
			offs[r] = r/9*d.w*d.w + r/3%3*d.w + r%3
		}
		g := New()
		pa := g.PackA(d.m, k, randSlice(rng, d.m*k), k)
		c := make([]float32, d.m*n)
		rows := &Rows{B: x, Offs: offs}
		for _, v := range []struct {
			name string
			src  PanelSource
		}{{"in-place", rows}, {"packed", packedOnly{rows}}} {
			b.Run(fmt.Sprintf("%dx%dx%d/%s", d.m, n, k, v.name), func(b *testing.B) {
				for b.Loop() {
					g.SgemmSource(pa, n, v.src, 0, c, n)
				}
				b.ReportMetric(2*float64(d.m*n*k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}

// TestRepackA checks that RepackA packs like PackA, into the memory it is given when that
// fits (a smaller matrix, then the same size again) and into new memory when it does not.
func TestRepackA(t *testing.T) {
	rng := rand.New(rand.NewSource(12))
	for name, g := range map[string]SourceGemm{"default": New(), "portable": NewPortable(), "gonum": WithSource(Gonum{})} {
		var p *PackedA
		for _, d := range []struct{ m, k int }{{17, 300}, {9, 33}, {17, 300}, {40, 600}} {
			a := randSlice(rng, d.m*d.k)
			old := p
			p = g.RepackA(p, d.m, d.k, a, d.k)
			if name != "gonum" && old != nil && d.m*d.k <= 17*300 && p != old {
				t.Errorf("%s %v: a new PackedA, though the old one was large enough", name, d)
			}
			const n = 40
			b := randSlice(rng, d.k*n)
			got, want := make([]float32, d.m*n), make([]float32, d.m*n)
			g.SgemmSource(p, n, packedOnly{&Rows{B: b, Offs: rowOffsets(d.k, n)}}, 0, got, n)
			g.SgemmSource(g.PackA(d.m, d.k, a, d.k), n, packedOnly{&Rows{B: b, Offs: rowOffsets(d.k, n)}}, 0, want, n)
			for i := range got {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("%s %v: C[%d] = %v repacked, %v packed", name, d, i, got[i], want[i])
				}
			}
		}
	}
}

// rowOffsets returns the offsets of the k rows of a k x n row-major matrix.
func rowOffsets(k, n int) []int {
	offs := make([]int, k)
	for p := range offs {
		offs[p] = p * n
	}
	return offs
}
