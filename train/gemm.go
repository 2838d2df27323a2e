package train

import (
	"runtime"
	"sync"

	"github.com/autoprune/autoprune/internal/kernel"
)

// kernels holds GEMM kernels (each keeps packing buffers, so one per goroutine at a time).
var kernels = sync.Pool{New: func() any { return kernel.New() }}

// sgemm computes C = alpha·op(A)·op(B) + beta·C on row-major float32 matrices, where op(X)
// is X or, when its flag is set, Xᵀ; op(A) is m x k, op(B) k x n and C m x n, with row
// strides lda, ldb and ldc. Every matrix product of the package goes through here.
//
// It uses the project's blocked GEMM kernel (the same as the inference engine: AVX2/FMA
// where the CPU has it, portable Go elsewhere). Large products are split into row or
// column blocks of C across GOMAXPROCS goroutines; every element of C is still summed over
// k in the same order by one goroutine, so results do not depend on the number of threads.
func sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	w := runtime.GOMAXPROCS(0)
	if w <= 1 || m*n*k < 1<<20 {
		gemm1(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	var wg sync.WaitGroup
	if n >= m {
		// Column blocks, multiples of 16 (the kernel's panel width).
		step := (n/w + 15) &^ 15
		for j0 := 0; j0 < n; j0 += step {
			nb := min(step, n-j0)
			bo := j0 // first column of op(B)
			if transB {
				bo = j0 * ldb
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				gemm1(transA, transB, m, nb, k, alpha, a, lda, b[bo:], ldb, beta, c[j0:], ldc)
			}()
		}
	} else {
		step := (m/w + 5) / 6 * 6 // multiples of 6 (the kernel's row block)
		for i0 := 0; i0 < m; i0 += step {
			mb := min(step, m-i0)
			ao := i0 * lda // first row of op(A)
			if transA {
				ao = i0
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				gemm1(transA, transB, mb, n, k, alpha, a[ao:], lda, b, ldb, beta, c[i0*ldc:], ldc)
			}()
		}
	}
	wg.Wait()
}

func gemm1(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	g := kernels.Get().(kernel.SourceGemm)
	g.Sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
	kernels.Put(g)
}
