// Package kernel holds the numeric kernels of the inference engine: single precision matrix
// multiplication (SGEMM) behind a small interface, so that implementations can be swapped
// and compared, and a few vector loops for element-wise layers.
//
// On amd64 CPUs with AVX2 and FMA the inner loops are assembly; elsewhere (or when built
// with the purego tag) portable Go code does the same work.
//
// Every matrix is row-major. The kernels here never start goroutines (except the Gonum
// reference): callers split work across threads themselves and give each thread its own
// Gemm value.
package kernel

import "os"

// Gemm computes C = alpha*op(A)*op(B) + beta*C on row-major matrices, where op(X) is X or,
// when the matching trans flag is set, its transpose. op(A) is m x k, op(B) is k x n and C
// is m x n; lda, ldb and ldc are the row strides of A, B and C as stored. When beta is 0, C
// is overwritten without being read, so it may hold anything (even NaN).
//
// A Gemm value may keep scratch buffers and is not safe for concurrent use: give each
// goroutine its own.
type Gemm interface {
	Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int)
}

// PanelSource supplies the B operand of a product already packed, panel by panel, so that a
// matrix that only exists implicitly (such as the im2col matrix of a convolution) need not
// be written out first.
type PanelSource interface {
	// PackB writes rows p0..p0+kc-1 and columns j0..j0+nc-1 of B into dst as consecutive
	// slivers of nr columns: element (p0+p, j0+j) goes to dst[(j/nr)*kc*nr + p*nr + j%nr],
	// and the columns of the last sliver past nc are set to zero. With nr == nc this is
	// the kc x nc block in row-major order.
	PackB(dst []float32, p0, kc, j0, nc, nr int)
}

// DenseT is a PanelSource over the transpose of a stored row-major matrix with row stride
// Ld: element (p, j) of B is B[j*Ld+p].
type DenseT struct {
	B  []float32
	Ld int
}

// PackB implements PanelSource.
func (d *DenseT) PackB(dst []float32, p0, kc, j0, nc, nr int) {
	packB(dst, true, d.B, d.Ld, p0, kc, j0, nc, nr)
}

// Rows is a PanelSource whose row p is the run of values B[Offs[p]:] (column j is
// B[Offs[p]+j]): the im2col matrix of a stride-1 convolution over zero-padded planes, whose
// every row is a shifted window of the input. The offsets must be non-negative.
// SgemmSource of New's kernels reads such rows where they lie, without packing
// them, when the CPU has AVX2 or AVX-512.
type Rows struct {
	B    []float32
	Offs []int
}

// PackB implements PanelSource.
func (r *Rows) PackB(dst []float32, p0, kc, j0, nc, nr int) {
	for jr := 0; jr < nc; jr += nr {
		nw := min(nr, nc-jr)
		d := dst[jr*kc : (jr+nr)*kc]
		for p, o := range r.Offs[p0 : p0+kc] {
			dp := d[p*nr : p*nr+nr]
			o += j0 + jr
			copy(dp, r.B[o:o+nw])
			clear(dp[nw:])
		}
	}
}

// PackedA is a constant left operand (such as a layer's weights) laid out once for the
// micro-kernel of the SourceGemm that packed it. It is read-only, so one PackedA may serve
// several SourceGemm values of the same kind at once.
type PackedA struct {
	M, K  int
	mr    int       // sliver height of data (blocked kernels)
	data  []float32 // per K block of blockK rows, the slivers of every M block
	plain []float32 // the matrix itself, row-major with stride K (other kernels)
}

// SourceGemm is a Gemm that also multiplies a packed constant A by a B read from a
// PanelSource: the convolution case, where A holds the weights and B is the im2col matrix.
type SourceGemm interface {
	Gemm
	// PackA packs the m x k row-major matrix a (row stride lda) for SgemmSource.
	PackA(m, k int, a []float32, lda int) *PackedA
	// RepackA is PackA reusing the memory of p (which may be nil), when p was packed by a
	// SourceGemm of the same kind and is large enough: for weights that change at every
	// training step. It returns the packed matrix, p or a new one.
	RepackA(p *PackedA, m, k int, a []float32, lda int) *PackedA
	// SgemmSource computes C = A*B + beta*C, where A (m x k) was packed by PackA of a
	// SourceGemm of the same kind and B (k x n) is given by src.
	SgemmSource(a *PackedA, n int, src PanelSource, beta float32, c []float32, ldc int)
}

// WithSource turns any Gemm into a SourceGemm: a SourceGemm is returned as is; otherwise
// PackA keeps a plain copy of A, and SgemmSource writes B out in full into a scratch buffer
// before calling g.Sgemm.
func WithSource(g Gemm) SourceGemm {
	if sg, ok := g.(SourceGemm); ok {
		return sg
	}
	return &sourceAdapter{Gemm: g}
}

type sourceAdapter struct {
	Gemm
	buf []float32
}

func (s *sourceAdapter) PackA(m, k int, a []float32, lda int) *PackedA {
	return &PackedA{M: m, K: k, plain: plainCopy(m, k, a, lda)}
}

func (s *sourceAdapter) RepackA(p *PackedA, m, k int, a []float32, lda int) *PackedA {
	if p == nil || p.data != nil || len(p.plain) != m*k {
		return s.PackA(m, k, a, lda)
	}
	p.M, p.K = m, k
	for i := 0; i < m; i++ {
		copy(p.plain[i*k:(i+1)*k], a[i*lda:i*lda+k])
	}
	return p
}

func (s *sourceAdapter) SgemmSource(a *PackedA, n int, src PanelSource, beta float32, c []float32, ldc int) {
	if a.M <= 0 || n <= 0 {
		return
	}
	s.buf = grow(s.buf, a.K*n)
	if a.K > 0 {
		src.PackB(s.buf, 0, a.K, 0, n, n)
	}
	s.Sgemm(false, false, a.M, n, a.K, 1, a.plain, a.K, s.buf, n, beta, c, ldc)
}

func plainCopy(m, k int, a []float32, lda int) []float32 {
	p := make([]float32, m*k)
	for i := 0; i < m; i++ {
		copy(p[i*k:(i+1)*k], a[i*lda:i*lda+k])
	}
	return p
}

// New returns the fastest SGEMM available on this machine: a cache-blocked kernel whose
// inner micro-kernel uses AVX-512 (an 8 x 32 tile) or AVX2 and FMA (6 x 16) instructions when
// the CPU has them, and portable Go code otherwise. It runs on the calling goroutine only.
func New() SourceGemm {
	if hasAVX512 && !avoidAVX512 {
		return newBlocked(avx512Micro)
	}
	if hasAVX2FMA {
		return newBlocked(asmMicro)
	}
	return newBlocked(goMicro)
}

// NewPortable returns the cache-blocked SGEMM with its portable Go micro-kernel, whatever
// the CPU. It is the fallback of New and a reference point for benchmarks.
func NewPortable() SourceGemm { return newBlocked(goMicro) }

// Accelerated reports whether New uses an assembly micro-kernel (AVX2/FMA, or AVX-512).
func Accelerated() bool { return hasAVX2FMA }

// avoidAVX512 is set by the environment variable AUTOPRUNE_NOAVX512=1: New then takes the
// AVX2 kernel on a CPU that has AVX-512 (to compare the two, or where 512-bit instructions
// lower the clock more than they gain).
var avoidAVX512 = os.Getenv("AUTOPRUNE_NOAVX512") == "1"

// Blocking sizes: a kc x nc panel of B and an mc x kc block of A are packed so that the
// micro-kernel streams through contiguous memory; a kc x nr sliver of B stays in L1 and
// the packed A block in L2.
const (
	blockK = 256
	blockM = 96
	blockN = 2048
)

// micro describes a register-blocked micro-kernel computing an mr x nr tile of C from a
// packed mr x kc sliver of A (column by column) and a packed kc x nr sliver of B (row by
// row). When load is set it adds the product to C, otherwise it overwrites C.
type micro struct {
	mr, nr int
	kern   func(kc int, a, b, c []float32, ldc int, load bool)
	// kernStrided, when not nil, is kern reading an unpacked kc x nr block of B whose rows
	// are ldb values apart.
	kernStrided func(kc int, a, b []float32, ldb int, c []float32, ldc int, load bool)
	// kernRows, when not nil, is kern reading row p of B at b[offs[p]:], unchecked: the
	// caller makes sure that every row read lies inside b.
	kernRows func(kc int, a, b []float32, offs []int, c []float32, ldc int, load bool)
	// dot returns the dot product of two equally long vectors.
	dot func(x, y []float32) float32
	// dots, when not nil, sets out[4i+j] to the dot product of the first n values of rows
	// i < 2 of a (row stride lda) and rows j < 4 of b (row stride ldb).
	dots func(n int, a []float32, lda int, b []float32, ldb int, out *[8]float32)
}

// blocked is the packing SGEMM driver shared by the micro-kernels.
type blocked struct {
	micro
	packA []float32
	packB []float32
	tile  []float32
	mat   matrixB
}

func newBlocked(u micro) *blocked {
	return &blocked{micro: u, tile: make([]float32, u.mr*u.nr)}
}

// operandA is the left operand of run: prepacked, or stored (and packed block by block).
type operandA struct {
	packed *PackedA
	trans  bool
	alpha  float32
	a      []float32
	lda    int
}

// Sgemm implements Gemm.
func (g *blocked) Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m <= 0 || n <= 0 {
		return
	}
	if k <= 0 || alpha == 0 {
		scaleC(m, n, beta, c, ldc)
		return
	}
	// A few rows times a transposed B (a fully connected layer on a small batch): plain dot
	// products over contiguous rows beat packing.
	if !transA && transB && m < 4 {
		for i := 0; i < m; i++ {
			ar := a[i*lda : i*lda+k]
			cr := c[i*ldc : i*ldc+n]
			for j := range cr {
				v := alpha * g.dot(ar, b[j*ldb:j*ldb+k])
				if beta != 0 {
					v += beta * cr[j]
				}
				cr[j] = v
			}
		}
		return
	}
	if !transA && transB && m <= dotRows && k >= 64 && g.dots != nil {
		g.runDots(m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	if !transB && m <= stridedRows && g.kernStrided != nil {
		g.runStrided(m, n, k, operandA{trans: transA, alpha: alpha, a: a, lda: lda}, b, ldb, beta, c, ldc)
		return
	}
	g.mat = matrixB{b: b, ldb: ldb, trans: transB}
	g.run(m, n, k, operandA{trans: transA, alpha: alpha, a: a, lda: lda}, &g.mat, beta, c, ldc)
	g.mat = matrixB{}
}

// PackA implements SourceGemm.
func (g *blocked) PackA(m, k int, a []float32, lda int) *PackedA {
	return g.RepackA(nil, m, k, a, lda)
}

// RepackA implements SourceGemm.
func (g *blocked) RepackA(p *PackedA, m, k int, a []float32, lda int) *PackedA {
	mp := roundUp(max(m, 0), g.mr)
	if p == nil || p.mr != g.mr || p.plain != nil || cap(p.data) < mp*max(k, 0) {
		p = &PackedA{}
	}
	*p = PackedA{M: m, K: k, mr: g.mr, data: p.data}
	if m <= 0 || k <= 0 {
		return p
	}
	if cap(p.data) < mp*k {
		p.data = make([]float32, mp*k)
	}
	p.data = p.data[:mp*k]
	for pc := 0; pc < k; pc += blockK {
		kc := min(blockK, k-pc)
		for ic := 0; ic < m; ic += blockM {
			mcb := min(blockM, m-ic)
			packA(p.data[pc*mp+ic*kc:], false, a, lda, ic, mcb, pc, kc, g.mr, 1)
		}
	}
	return p
}

// SgemmSource implements SourceGemm.
func (g *blocked) SgemmSource(a *PackedA, n int, src PanelSource, beta float32, c []float32, ldc int) {
	if a.M <= 0 || n <= 0 {
		return
	}
	if a.K <= 0 {
		scaleC(a.M, n, beta, c, ldc)
		return
	}
	if a.mr != g.mr {
		panic("kernel: PackedA was packed for another kernel")
	}
	if r, ok := src.(*Rows); ok && g.kernRows != nil && n >= g.nr {
		g.runRows(a, n, r, beta, c, ldc)
		return
	}
	g.run(a.M, n, a.K, operandA{packed: a}, src, beta, c, ldc)
}

// run is the blocked product: for each kc x nc panel of B, packed once, and each mc x kc
// block of A, it sweeps the micro-kernel over the matching block of C.
func (g *blocked) run(m, n, k int, a operandA, src PanelSource, beta float32, c []float32, ldc int) {
	if beta != 0 && beta != 1 {
		scaleC(m, n, beta, c, ldc)
		beta = 1
	}
	mr, nr := g.mr, g.nr
	mp := roundUp(m, mr)
	for jc := 0; jc < n; jc += blockN {
		nc := min(blockN, n-jc)
		ncp := roundUp(nc, nr)
		for pc := 0; pc < k; pc += blockK {
			kc := min(blockK, k-pc)
			load := pc > 0 || beta != 0
			g.packB = grow(g.packB, kc*ncp)
			src.PackB(g.packB, pc, kc, jc, nc, nr)
			for ic := 0; ic < m; ic += blockM {
				mcb := min(blockM, m-ic)
				mcp := roundUp(mcb, mr)
				var ap []float32
				if a.packed != nil {
					ap = a.packed.data[pc*mp+ic*kc : pc*mp+ic*kc+kc*mcp]
				} else {
					g.packA = grow(g.packA, kc*mcp)
					packA(g.packA, a.trans, a.a, a.lda, ic, mcb, pc, kc, mr, a.alpha)
					ap = g.packA
				}
				g.macro(ap, mcb, nc, kc, c[ic*ldc+jc:], ldc, load)
			}
		}
	}
}

// stridedRows is the most rows of A for which Sgemm reads an untransposed B in place. The
// strided micro-kernel then sweeps all the slivers of A (packed, kept in L2) over one kc x nr
// block of B, which stays in L1 after its first sliver, so packing B (one more read and
// write of all of it) buys nothing. Measured here (BenchmarkSgemm, BenchmarkSgemmShapes),
// reading in place is as fast or faster up to 128 rows, and several times faster for a few
// rows, the convolutions of a small network in training; past a few hundred rows the
// packed A block would no longer fit in L2.
const stridedRows = 256

// runStrided is run for an untransposed B read in place by the strided micro-kernel; only
// the last columns, short of a full sliver, are packed (with zeros past n). The sums run
// in the same order as run's.
func (g *blocked) runStrided(m, n, k int, a operandA, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if beta != 0 && beta != 1 {
		scaleC(m, n, beta, c, ldc)
		beta = 1
	}
	mr, nr := g.mr, g.nr
	mp := roundUp(m, mr)
	full := n / nr * nr
	for pc := 0; pc < k; pc += blockK {
		kc := min(blockK, k-pc)
		load := pc > 0 || beta != 0
		g.packA = grow(g.packA, kc*mp)
		packA(g.packA, a.trans, a.a, a.lda, 0, m, pc, kc, mr, a.alpha)
		rows := b[pc*ldb:]
		for jr := 0; jr < full; jr += nr {
			for ir := 0; ir < m; ir += mr {
				as := g.packA[ir*kc : (ir+mr)*kc]
				if mw := min(mr, m-ir); mw < mr {
					g.kernStrided(kc, as, rows[jr:], ldb, g.tile, nr, false)
					putTile(c[ir*ldc+jr:], ldc, g.tile, nr, mw, nr, load)
					continue
				}
				g.kernStrided(kc, as, rows[jr:], ldb, c[ir*ldc+jr:], ldc, load)
			}
		}
		if full < n {
			g.packB = grow(g.packB, kc*nr)
			packB(g.packB, false, b, ldb, pc, kc, full, n-full, nr)
			g.macro(g.packA, m, n-full, kc, c[full:], ldc, load)
		}
	}
}

// runRows is run for a B given as Rows, read in place by the rows micro-kernel: each kc x nr
// block of B stays in L1 while every sliver of the packed A sweeps it, as in runStrided.
// Only the last columns, short of a full sliver, are packed. The sums run in the same order
// as run's, so the result is the same to the bit.
func (g *blocked) runRows(a *PackedA, n int, r *Rows, beta float32, c []float32, ldc int) {
	m, k := a.M, a.K
	if len(r.Offs) < k {
		panic("kernel: Rows has fewer rows than A has columns")
	}
	if beta != 0 && beta != 1 {
		scaleC(m, n, beta, c, ldc)
		beta = 1
	}
	mr, nr := g.mr, g.nr
	mp := roundUp(m, mr)
	full := n / nr * nr
	_ = c[(m-1)*ldc+n-1]
	for pc := 0; pc < k; pc += blockK {
		kc := min(blockK, k-pc)
		load := pc > 0 || beta != 0
		offs := r.Offs[pc : pc+kc]
		// The furthest read is the last full sliver of the row that starts furthest.
		if lo, hi := minMax(offs); lo < 0 || hi+full > len(r.B) {
			panic("kernel: Rows out of range")
		}
		ap := a.data[pc*mp : pc*mp+kc*mp]
		for jr := 0; jr < full; jr += nr {
			b := r.B[jr:]
			for ir := 0; ir < m; ir += mr {
				as := ap[ir*kc : (ir+mr)*kc]
				if mw := min(mr, m-ir); mw < mr {
					g.kernRows(kc, as, b, offs, g.tile, nr, false)
					putTile(c[ir*ldc+jr:], ldc, g.tile, nr, mw, nr, load)
					continue
				}
				g.kernRows(kc, as, b, offs, c[ir*ldc+jr:], ldc, load)
			}
		}
		if full < n {
			g.packB = grow(g.packB, kc*nr)
			r.PackB(g.packB, pc, kc, full, n-full, nr)
			g.macro(ap, m, n-full, kc, c[full:], ldc, load)
		}
	}
}

func minMax(v []int) (lo, hi int) {
	lo, hi = v[0], v[0]
	for _, x := range v[1:] {
		lo, hi = min(lo, x), max(hi, x)
	}
	return lo, hi
}

// dotRows is the most rows of A for which Sgemm computes A·Bᵀ as dot products of stored
// rows: every operand is then read where it lies, while the packed path would transpose
// all of B for at most a few slivers of A. This is the weight gradient of a convolution in
// training (output channels x input patch, summed over every pixel of the batch).
const dotRows = 24

// dotBlock is how many values of k one pass of runDots covers, so that the block of B it
// sweeps stays in L2.
const dotBlock = 512

// runDots computes C = alpha·A·Bᵀ + beta·C, blocks of two rows of A by four rows of B at a
// time, dotBlock values of k per pass.
func (g *blocked) runDots(m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	var out [8]float32
	for pc := 0; pc < k; pc += dotBlock {
		kc := min(dotBlock, k-pc)
		put := func(i, j int, v float32) {
			v *= alpha
			switch {
			case pc > 0:
				v += c[i*ldc+j]
			case beta != 0:
				v += beta * c[i*ldc+j]
			}
			c[i*ldc+j] = v
		}
		for i := 0; i < m; i += 2 {
			for j := 0; j < n; j += 4 {
				if i+2 > m || j+4 > n {
					for i2 := i; i2 < min(i+2, m); i2++ {
						for j2 := j; j2 < min(j+4, n); j2++ {
							put(i2, j2, g.dot(a[i2*lda+pc:i2*lda+pc+kc], b[j2*ldb+pc:j2*ldb+pc+kc]))
						}
					}
					continue
				}
				g.dots(kc, a[i*lda+pc:], lda, b[j*ldb+pc:], ldb, &out)
				for t, v := range out {
					put(i+t/4, j+t%4, v)
				}
			}
		}
	}
}

// matrixB is a PanelSource over a stored matrix, transposed or not.
type matrixB struct {
	b     []float32
	ldb   int
	trans bool
}

func (s *matrixB) PackB(dst []float32, p0, kc, j0, nc, nr int) {
	packB(dst, s.trans, s.b, s.ldb, p0, kc, j0, nc, nr)
}

// macro multiplies the packed block ap of A by the packed panel of B into the mcb x nc
// block of C starting at c[0].
func (g *blocked) macro(ap []float32, mcb, nc, kc int, c []float32, ldc int, load bool) {
	mr, nr := g.mr, g.nr
	for jr := 0; jr < nc; jr += nr {
		nw := min(nr, nc-jr)
		bp := g.packB[jr*kc : (jr+nr)*kc]
		for ir := 0; ir < mcb; ir += mr {
			mw := min(mr, mcb-ir)
			as := ap[ir*kc : (ir+mr)*kc]
			off := ir*ldc + jr
			if mw == mr && nw == nr {
				g.kern(kc, as, bp, c[off:], ldc, load)
				continue
			}
			// Edge tile: compute into scratch, then copy the valid part out.
			g.kern(kc, as, bp, g.tile, nr, false)
			putTile(c[off:], ldc, g.tile, nr, mw, nw, load)
		}
	}
}

// putTile stores (or with load adds) the top-left mw x nw values of the tile t, whose rows
// are nr values apart, into c.
func putTile(c []float32, ldc int, t []float32, nr, mw, nw int, load bool) {
	for i := 0; i < mw; i++ {
		cr := c[i*ldc : i*ldc+nw]
		tr := t[i*nr : i*nr+nw]
		if load {
			for j, v := range tr {
				cr[j] += v
			}
		} else {
			copy(cr, tr)
		}
	}
}

// packA copies rows ic..ic+mcb and columns pc..pc+kc of op(A), times alpha, into dst as
// slivers of mr rows stored column by column; missing rows of the last sliver are zero.
func packA(dst []float32, trans bool, a []float32, lda, ic, mcb, pc, kc, mr int, alpha float32) {
	for ir := 0; ir < mcb; ir += mr {
		mw := min(mr, mcb-ir)
		d := dst[ir*kc : (ir+mr)*kc]
		if mw < mr {
			clear(d)
		}
		r0 := ic + ir
		if alpha == 1 && mw == mr {
			packSliverA(d, trans, a, lda, r0, pc, kc, mr)
			continue
		}
		for i := 0; i < mw; i++ {
			row := r0 + i
			if !trans {
				src := a[row*lda+pc : row*lda+pc+kc]
				for p, v := range src {
					d[p*mr+i] = alpha * v
				}
			} else {
				for p := 0; p < kc; p++ {
					d[p*mr+i] = alpha * a[(pc+p)*lda+row]
				}
			}
		}
	}
}

// packSliverA is packA for one full sliver of mr rows from row r0, without scaling: a
// transposed A is a copy of mr contiguous values per column; a stored A, when mr is 8 or 6
// on an AVX CPU, is 8 x 8 or 6 x 8 block transposes, and else one value at a time.
func packSliverA(d []float32, trans bool, a []float32, lda, r0, pc, kc, mr int) {
	if trans {
		switch mr {
		case 8:
			for p := 0; p < kc; p++ {
				*(*[8]float32)(d[p*8:]) = *(*[8]float32)(a[(pc+p)*lda+r0:])
			}
		case 6:
			for p := 0; p < kc; p++ {
				*(*[6]float32)(d[p*6:]) = *(*[6]float32)(a[(pc+p)*lda+r0:])
			}
		default:
			for p := 0; p < kc; p++ {
				copy(d[p*mr:p*mr+mr], a[(pc+p)*lda+r0:])
			}
		}
		return
	}
	p0 := 0
	if hasAVX2FMA && (mr == 8 || mr == 6) && kc >= 8 {
		blocks := kc / 8
		src := r0*lda + pc
		_ = a[src+(mr-1)*lda+kc-1]
		_ = d[kc*mr-1]
		if mr == 8 {
			transpose8x8AVX(&d[0], 8, &a[src], lda, blocks)
		} else {
			transpose6x8AVX(&d[0], &a[src], lda, blocks)
		}
		p0 = 8 * blocks
	}
	for i := 0; i < mr; i++ {
		row := a[(r0+i)*lda+pc:]
		for p := p0; p < kc; p++ {
			d[p*mr+i] = row[p]
		}
	}
}

// packB copies rows pc..pc+kc and columns jc..jc+nc of op(B) into dst as slivers of nr
// columns stored row by row; missing columns of the last sliver are zero.
func packB(dst []float32, trans bool, b []float32, ldb, pc, kc, jc, nc, nr int) {
	for jr := 0; jr < nc; jr += nr {
		nw := min(nr, nc-jr)
		d := dst[jr*kc : (jr+nr)*kc]
		if !trans {
			for p := 0; p < kc; p++ {
				row := (pc+p)*ldb + jc + jr
				dp := d[p*nr : p*nr+nr]
				copy(dp, b[row:row+nw])
				clear(dp[nw:])
			}
			continue
		}
		if nw < nr {
			clear(d)
		}
		p0 := 0
		if hasAVX2FMA && nw == nr && nr%8 == 0 && kc >= 8 {
			// A full sliver of an AVX kernel: stripes of 8 stored rows, transposed 8 x 8
			// at a time; the last kc%8 values below.
			blocks := kc / 8
			for h := 0; h < nr; h += 8 {
				col := (jc+jr+h)*ldb + pc
				_ = b[col+7*ldb+kc-1]
				_ = d[(kc-1)*nr+h+7]
				transpose8x8AVX(&d[h], nr, &b[col], ldb, blocks)
			}
			p0 = 8 * blocks
		}
		for j := 0; j < nw; j++ {
			col := (jc+jr+j)*ldb + pc
			for p := p0; p < kc; p++ {
				d[p*nr+j] = b[col+p]
			}
		}
	}
}

func scaleC(m, n int, beta float32, c []float32, ldc int) {
	for i := 0; i < m; i++ {
		cr := c[i*ldc : i*ldc+n]
		switch beta {
		case 0:
			clear(cr)
		case 1:
		default:
			for j := range cr {
				cr[j] *= beta
			}
		}
	}
}

func roundUp(x, to int) int { return (x + to - 1) / to * to }

// grow returns buf resized to n values, reallocating only when its capacity is too small.
func grow(buf []float32, n int) []float32 {
	if cap(buf) < n {
		return make([]float32, n)
	}
	return buf[:n]
}
