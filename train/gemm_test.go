package train

import (
	"fmt"
	"math"
	"math/rand"
	"runtime"
	"testing"
)

func TestSplitPoints(t *testing.T) {
	for _, tc := range []struct {
		size, unit int
		want       []int
	}{
		{100, 6, []int{0, 18, 36, 54, 72, 90, 100}},
		{13, 6, []int{0, 6, 13}},
		{5, 6, []int{0, 5}},
		{1568, 16, []int{0, 208, 416, 624, 832, 1040, 1248, 1456, 1568}},
		{50, 6, []int{0, 12, 24, 36, 50}},
	} {
		got := splitPoints(tc.size, tc.unit)
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("splitPoints(%d, %d) = %v, want %v", tc.size, tc.unit, got, tc.want)
		}
	}
}

// The split product equals a naive one, for every transpose case and for shapes that split
// by rows and by columns, and does not depend on the number of threads.
func TestSgemmSplit(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for _, sh := range [][3]int{{7, 300, 600}, {300, 9, 500}, {64, 1568, 150}, {3, 5, 2}, {13, 9, 9000}, {50, 49, 600}, {2, 700, 800}} {
		m, n, k := sh[0], sh[1], sh[2]
		for _, ta := range []bool{false, true} {
			for _, tb := range []bool{false, true} {
				a := make([]float32, m*k)
				b := make([]float32, k*n)
				for i := range a {
					a[i] = rng.Float32() - 0.5
				}
				for i := range b {
					b[i] = rng.Float32() - 0.5
				}
				lda, ldb := k, n
				if ta {
					lda = m
				}
				if tb {
					ldb = k
				}
				at := func(i, p int) float32 {
					if ta {
						return a[p*lda+i]
					}
					return a[i*lda+p]
				}
				bt := func(p, j int) float32 {
					if tb {
						return b[j*ldb+p]
					}
					return b[p*ldb+j]
				}
				var outs [3][]float32
				for r, procs := range []int{1, 2, 3} {
					old := runtime.GOMAXPROCS(procs)
					c := make([]float32, m*n)
					for i := range c {
						c[i] = 1
					}
					sgemm(ta, tb, m, n, k, 2, a, lda, b, ldb, 0.5, c, n)
					runtime.GOMAXPROCS(old)
					outs[r] = c
				}
				for i := 0; i < m; i++ {
					for j := 0; j < n; j++ {
						var want float64 = 0.5
						for p := 0; p < k; p++ {
							want += 2 * float64(at(i, p)) * float64(bt(p, j))
						}
						got := outs[1][i*n+j]
						if math.Abs(float64(got)-want) > 1e-3 {
							t.Fatalf("%v ta=%v tb=%v: C[%d,%d] = %v, want %v", sh, ta, tb, i, j, got, want)
						}
						if got != outs[0][i*n+j] || got != outs[2][i*n+j] {
							t.Fatalf("%v ta=%v tb=%v: 1, 2 and 3 threads differ at [%d,%d]", sh, ta, tb, i, j)
						}
					}
				}
			}
		}
	}
}
