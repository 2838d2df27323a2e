package train

import (
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// sgemm computes C = alpha·op(A)·op(B) + beta·C on row-major float32 matrices, where op(X)
// is X or, when its flag is set, Xᵀ; op(A) is m x k, op(B) k x n and C m x n, with row
// strides lda, ldb and ldc. Every matrix product of the package goes through here.
//
// The implementation is gonum's pure-Go SGEMM, which splits large products across
// goroutines; each element of C is computed by one goroutine in a fixed order, so results
// do not depend on the number of threads.
func sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	gonum.Implementation{}.Sgemm(trans(transA), trans(transB), m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

func trans(t bool) blas.Transpose {
	if t {
		return blas.Trans
	}
	return blas.NoTrans
}
