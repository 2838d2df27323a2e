package train

import (
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/autoprune/autoprune/internal/kernel"
)

// kernels holds GEMM kernels (each keeps packing buffers, so one per goroutine at a time).
var kernels = sync.Pool{New: func() any { return kernel.New() }}

// sgemm computes C = alpha·op(A)·op(B) + beta·C on row-major float32 matrices, where op(X)
// is X or, when its flag is set, Xᵀ; op(A) is m x k, op(B) k x n and C m x n, with row
// strides lda, ldb and ldc. Every matrix product of the package goes through here.
//
// It uses the project's blocked GEMM kernel (the same as the inference engine: AVX2/FMA
// where the CPU has it, portable Go elsewhere). Large products are cut into up to
// splitBlocks row or column blocks of C, and GOMAXPROCS goroutines share the blocks. The
// cut depends on the shape only, never on the number of threads, and every element of C is
// summed over k by one call of the kernel, so results are bit-identical for any GOMAXPROCS.
func sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m*n*k < 1<<20 {
		gemm1(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	var run func(lo, hi int)
	var cuts []int
	if n >= m {
		// Column blocks, multiples of 32 (the widest kernel panel: AVX-512's 32, twice AVX2's 16).
		cuts = splitPoints(n, 32)
		run = func(j0, j1 int) {
			bo := j0 // first column of op(B)
			if transB {
				bo = j0 * ldb
			}
			gemm1(transA, transB, m, j1-j0, k, alpha, a, lda, b[bo:], ldb, beta, c[j0:], ldc)
		}
	} else {
		// Row blocks, multiples of 6 (the kernel's row block).
		cuts = splitPoints(m, 6)
		run = func(i0, i1 int) {
			ao := i0 * lda // first row of op(A)
			if transA {
				ao = i0
			}
			gemm1(transA, transB, i1-i0, n, k, alpha, a[ao:], lda, b, ldb, beta, c[i0*ldc:], ldc)
		}
	}
	blocks := len(cuts) - 1
	w := min(runtime.GOMAXPROCS(0), blocks)
	if w <= 1 {
		for i := 0; i < blocks; i++ {
			run(cuts[i], cuts[i+1])
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range w {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < blocks; i = int(next.Add(1) - 1) {
				run(cuts[i], cuts[i+1])
			}
		}()
	}
	wg.Wait()
}

// splitBlocks is the most blocks a product is cut into.
const splitBlocks = 8

// splitPoints cuts [0, size) into at most splitBlocks blocks whose sizes are multiples of
// unit, except the last, which is at least unit long (a shorter tail joins the block before
// it): the kernel takes other paths for very thin blocks, which would sum in another order.
func splitPoints(size, unit int) []int {
	step := ((size+splitBlocks-1)/splitBlocks + unit - 1) / unit * unit
	cuts := []int{0}
	for at := step; size-at >= unit; at += step {
		cuts = append(cuts, at)
	}
	return append(cuts, size)
}

func gemm1(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	g := kernels.Get().(kernel.SourceGemm)
	g.Sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
	kernels.Put(g)
}
