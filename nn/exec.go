package nn

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/autoprune/autoprune/internal/kernel"
)

// Options tunes an Executor.
//
// With several threads, a batch whose size shares evenly among them (or is at least four
// times their number) is split by samples: each thread runs its samples through all the
// layers between fully connected ones. Otherwise, and for fully connected layers,
// the threads split the work inside each layer (output pixels of a convolution, output
// features of a fully connected layer, channel planes of the other layers). Layers too
// small to gain from it run on the calling goroutine alone.
type Options struct {
	Threads int // worker goroutines for the heavy loops; <= 0 means 1 (at most 256)
}

// maxThreads bounds Options.Threads.
const maxThreads = 256

// parallelWork is the smallest amount of work (multiply-adds or element operations over the
// whole batch) worth waking the helper goroutines for.
const parallelWork = 1 << 17

// Executor runs a model's forward pass for a fixed batch size. All buffers are planned once
// in NewExecutor: Forward allocates nothing in steady state.
//
// NewExecutor copies every weight it needs (with batch norms folded into the convolution
// before them, or else into a per-channel scale and shift, and masks applied), so the executor does not see later changes to the model: a
// model whose weights, masks or architecture changed afterwards needs a new Executor.
//
// An Executor is not safe for concurrent use; its helper goroutines (Threads-1 of them)
// stop once the Executor is garbage collected.
type Executor struct {
	batch int
	in    Shape
	out   Shape

	input  *tensor            // the model input, set by Forward
	result *tensor            // the output layer's buffer
	acts   map[string]*tensor // every layer's output by name
	steps  []step
	pool   *pool
}

// tensor is a batch of activations. Operators hold pointers to tensors so that the model
// input can be swapped in by Forward.
type tensor struct{ data []float32 }

// op is one layer's computation, split into independent tasks that workers run in ranges.
type op interface {
	run(w *worker, lo, hi int)
}

type step struct {
	op       op
	tasks    int
	parallel bool
	job      *job // when parallel
	work     int  // rough count of multiply-adds or element operations
	// perSample is the number of tasks per sample when task t only touches sample
	// t/perSample (every operator but Linear), 0 otherwise.
	perSample int
}

func newStep(o op, tasks, work, threads int) step {
	st := step{op: o, tasks: tasks, work: work, parallel: tasks > 1 && worthThreads(work, threads)}
	if st.parallel {
		st.job = newJob(o, tasks, threads)
	}
	return st
}

// worthThreads tells whether work is large enough to share among threads.
func worthThreads(work, threads int) bool { return threads > 1 && work >= parallelWork }

// segment runs a sequence of per-sample operators depth first: all of them on one group of
// samples before the next, so that the group's activations are still in cache when the
// next layer reads them, and threads working on different groups need no barrier between
// layers. Task g is the samples g*group .. g*group+group-1. An operator that can take the
// whole group at once (a groupOp: a convolution over small planes) does; the others run
// sample by sample.
type segment struct {
	ops   []op
	per   []int
	group int
	batch int
}

// groupOp is an operator that can compute n samples from sample n0 in one go, when
// grouped says so.
type groupOp interface {
	grouped() bool
	runGroup(w *worker, n0, n int)
}

func (s *segment) run(w *worker, lo, hi int) {
	for g := lo; g < hi; g++ {
		n0 := g * s.group
		n1 := min(n0+s.group, s.batch)
		for i, o := range s.ops {
			if gop, ok := o.(groupOp); ok && gop.grouped() {
				gop.runGroup(w, n0, n1-n0)
				continue
			}
			o.run(w, n0*s.per[i], n1*s.per[i])
		}
	}
}

// maxGroup is the most samples a segment's task holds.
const maxGroup = 8

// worker is the private state of one thread: its SGEMM (with packing buffers) and its
// convolution scratch.
type worker struct {
	gemm kernel.SourceGemm
	// pads holds each convolution's zero-padded input planes (see convOp.slot). Their
	// borders are zeroed once, when they are made, and never written: padding an input
	// only copies its values in.
	pads   [][]float32
	cbuf   []float32 // a convolution's output for a group of samples, before it is scattered
	src    convSource
	rows   kernel.Rows
	denseT kernel.DenseT
}

// NewExecutor validates m and plans the forward pass for batch samples at a time.
func NewExecutor(m *Model, batch int, opt Options) (*Executor, error) {
	if m == nil {
		return nil, fmt.Errorf("%w: nil model", ErrInvalid)
	}
	if batch <= 0 || batch > 1<<20 {
		return nil, fmt.Errorf("nn: batch size %d out of range 1..%d", batch, 1<<20)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	shapes, err := m.Shapes()
	if err != nil {
		return nil, err
	}
	threads := opt.Threads
	if threads <= 0 {
		threads = 1
	}
	threads = min(threads, maxThreads)

	e := &Executor{
		batch: batch,
		in:    m.Input,
		out:   shapes[len(shapes)-1],
		input: &tensor{},
		acts:  make(map[string]*tensor, len(m.Layers)),
	}
	// With several samples that share evenly among the threads, each thread runs whole
	// samples through the layers before the fully connected ones (see segment); otherwise
	// threads split the work inside each layer.
	bySample := batch > 1 && (threads == 1 || batch%threads == 0 || batch >= 4*threads)
	// Samples go through a segment in groups, so that a convolution over small planes
	// multiplies its weights by the columns of several samples at once.
	group := 1
	if bySample {
		group = max(1, min(maxGroup, batch/threads))
	}
	known := map[string]*tensor{InputName: e.input}
	shapeOf := map[string]Shape{InputName: m.Input}
	var need scratch
	var pads []int         // each convolution's padded-input buffer, by its slot
	packer := kernel.New() // packs weights for the workers' kernels, which are of the same kind
	folded := foldable(m)
	fused := fusable(m, folded) // activation -> convolution
	actOf := map[string]*Layer{}
	for a, c := range fused {
		actOf[c] = m.Layer(a)
	}
	for i, l := range m.Layers {
		outS := shapes[i]
		if bn := folded[l.Name]; bn != nil {
			l = foldBatchNorm(l, bn)
		}
		if int64(batch)*int64(outS.Size()) > math.MaxInt32 {
			return nil, fmt.Errorf("nn: layer %q: %d samples of %v do not fit in memory", l.Name, batch, outS)
		}
		n := batch * outS.Size()
		ins := make([]*tensor, len(l.Inputs))
		inShapes := make([]Shape, len(l.Inputs))
		for j, name := range l.Inputs {
			ins[j], inShapes[j] = known[name], shapeOf[name]
		}
		var out *tensor
		isFolded := l.Kind == BatchNorm && folded[l.Inputs[0]] == l
		_, isFused := fused[l.Name]
		switch {
		case isFolded || isFused:
			// Folded into the convolution before it, which already wrote its output.
			out = ins[0]
			delete(e.acts, l.Inputs[0])
		case l.Kind == Flatten && ins[0] != e.input:
			// Flattening NCHW data changes nothing but the shape: share the buffer.
			out = ins[0]
		default:
			out = &tensor{data: make([]float32, n)}
		}
		lt := threads
		if bySample && l.Kind != Linear {
			lt = 1
		}
		var st step
		var sc scratch
		if !isFolded && !isFused {
			st, sc = plan(l, batch, lt, packer, ins, inShapes, out, outS)
		}
		if act := actOf[l.Name]; act != nil {
			hi := kernel.Inf
			if act.Kind == ReLU6 {
				hi = 6
			}
			switch o := st.op.(type) {
			case *convOp:
				o.fused, o.lo, o.hi = true, 0, hi
			case *addOp:
				o.fused, o.hi = true, hi
			}
		}
		if co, ok := st.op.(*convOp); ok && bySample && group > 1 && co.batchable() {
			sc = co.batch(group)
		}
		if co, ok := st.op.(*convOp); ok && sc.pad > 0 {
			co.slot = len(pads)
			pads = append(pads, sc.pad)
		}
		need.c = max(need.c, sc.c)
		if st.op != nil {
			if l.Kind != Linear {
				st.perSample = st.tasks / batch
			}
			e.steps = append(e.steps, st)
		}
		known[l.Name], shapeOf[l.Name] = out, outS
		e.acts[l.Name] = out
	}
	e.result = known[m.Layers[len(m.Layers)-1].Name]
	if bySample {
		e.steps = segments(e.steps, batch, threads, group)
	}

	workers := make([]*worker, threads)
	for i := range workers {
		workers[i] = &worker{gemm: kernel.New(), pads: make([][]float32, len(pads)), cbuf: make([]float32, need.c)}
		for j, n := range pads {
			workers[i].pads[j] = make([]float32, n)
		}
	}
	e.pool = newPool(workers)
	if threads > 1 {
		runtime.AddCleanup(e, (*pool).stop, e.pool)
	}
	return e, nil
}

// foldable returns, by convolution name, the batch norms that can be folded into the
// convolution they follow: its output feeds that batch norm alone and is not the model's
// output.
func foldable(m *Model) map[string]*Layer {
	uses := map[string]int{}
	for _, l := range m.Layers {
		for _, in := range l.Inputs {
			uses[in]++
		}
	}
	last := m.Layers[len(m.Layers)-1].Name
	out := map[string]*Layer{}
	for _, l := range m.Layers {
		if l.Kind != BatchNorm || len(l.Inputs) != 1 {
			continue
		}
		if c := m.Layer(l.Inputs[0]); c != nil && c.Kind == Conv2D && uses[c.Name] == 1 && c.Name != last {
			out[c.Name] = l
		}
	}
	return out
}

// fusable returns the ReLU and ReLU6 layers that can be applied by the layer before them as
// it writes its output, by name, with that layer's name: their input is a convolution, a
// batch norm folded into one (see foldable) or an addition, which feeds them alone and is
// not the model's output.
func fusable(m *Model, folded map[string]*Layer) map[string]string {
	uses := map[string]int{}
	for _, l := range m.Layers {
		for _, in := range l.Inputs {
			uses[in]++
		}
	}
	last := m.Layers[len(m.Layers)-1].Name
	out := map[string]string{}
	for _, l := range m.Layers {
		if (l.Kind != ReLU && l.Kind != ReLU6) || len(l.Inputs) != 1 {
			continue
		}
		in := m.Layer(l.Inputs[0])
		if in == nil || uses[in.Name] != 1 || in.Name == last {
			continue
		}
		switch {
		case in.Kind == Conv2D && folded[in.Name] == nil, in.Kind == Add:
			out[l.Name] = in.Name
		case in.Kind == BatchNorm && len(in.Inputs) == 1 && folded[in.Inputs[0]] == in:
			out[l.Name] = in.Inputs[0]
		}
	}
	return out
}

// foldBatchNorm returns a copy of the convolution c that also applies the inference batch
// norm bn after it: each filter (its mask applied) scaled by gamma/sqrt(var+eps), and a bias
// shifted to beta - mean*scale (plus the scaled bias of c). One pass over the output less,
// and the same result up to rounding.
func foldBatchNorm(c, bn *Layer) *Layer {
	f := *c
	f.Weight = append([]float32(nil), c.Weight...)
	if c.Mask != nil {
		for i, m := range c.Mask {
			f.Weight[i] *= m
		}
	}
	f.Mask = nil
	f.Bias = make([]float32, c.Out)
	f.HasBias = true
	per := len(f.Weight) / c.Out
	eps := float64(bn.EpsOrDefault())
	for oc := 0; oc < c.Out; oc++ {
		scale := float64(bn.Gamma[oc]) / math.Sqrt(float64(bn.Var[oc])+eps)
		for i := oc * per; i < (oc+1)*per; i++ {
			f.Weight[i] = float32(float64(f.Weight[i]) * scale)
		}
		b := 0.0
		if c.HasBias {
			b = float64(c.Bias[oc])
		}
		f.Bias[oc] = float32(float64(bn.Beta[oc]) + (b-float64(bn.Mean[oc]))*scale)
	}
	return &f
}

// segments replaces each run of per-sample steps by one segment step over the samples:
// over groups of group samples when one of its operators computes a group at once, over
// single samples otherwise (so the activations of one sample stay in cache).
func segments(steps []step, batch, threads, group int) []step {
	var out []step
	var seg *segment
	for _, st := range steps {
		if st.perSample == 0 {
			out = append(out, st)
			seg = nil
			continue
		}
		if seg == nil {
			seg = &segment{group: 1, batch: batch}
			out = append(out, step{op: seg})
		}
		seg.ops = append(seg.ops, st.op)
		seg.per = append(seg.per, st.perSample)
		if gop, ok := st.op.(groupOp); ok && gop.grouped() {
			seg.group = group
		}
		out[len(out)-1].work += st.work
	}
	for i := range out {
		seg, ok := out[i].op.(*segment)
		if !ok {
			continue
		}
		st := &out[i]
		st.tasks = (batch + seg.group - 1) / seg.group
		st.parallel = st.tasks > 1 && worthThreads(st.work, threads)
		if st.parallel {
			st.job = newJob(seg, st.tasks, threads)
		}
	}
	return out
}

// ErrInputSize is wrapped by Forward's error when the input has the wrong length.
var ErrInputSize = errors.New("nn: wrong input size")

// Forward runs the model on x, batch samples of C*H*W values each in NCHW order, and returns
// the output layer's values (batch x OutputShape().Size(), sample by sample). The returned
// slice belongs to the executor and is overwritten by the next call.
func (e *Executor) Forward(x []float32) ([]float32, error) {
	return e.ForwardContext(context.Background(), x)
}

// ForwardContext is Forward that stops once ctx is done, with ctx's error: it looks at ctx
// between layers and, inside a layer, between runs of tasks, so a deadline bounds a pass by
// a fraction of one layer's time, not the whole network's.
func (e *Executor) ForwardContext(ctx context.Context, x []float32) ([]float32, error) {
	if want := e.batch * e.in.Size(); len(x) != want {
		return nil, fmt.Errorf("%w: got %d values, want %d (batch %d x %v)", ErrInputSize, len(x), want, e.batch, e.in)
	}
	done := ctx.Done()
	e.input.data = x
	defer func() { e.input.data = nil }()
	for _, s := range e.steps {
		if isDone(done) {
			return nil, ctx.Err()
		}
		switch {
		case s.parallel:
			e.pool.do(s.job, done)
		case done == nil:
			s.op.run(e.pool.workers[0], 0, s.tasks)
		default:
			// Tasks in runs of about interruptWork, so that a deadline also stops a
			// long layer (a huge pooling window, one sample of a big segment).
			run := max(1, s.tasks*interruptWork/max(1, s.work))
			for lo := 0; lo < s.tasks; lo += run {
				if lo > 0 && isDone(done) {
					return nil, ctx.Err()
				}
				s.op.run(e.pool.workers[0], lo, min(lo+run, s.tasks))
			}
		}
	}
	if isDone(done) {
		return nil, ctx.Err() // a parallel step may have stopped part-way
	}
	return e.result.data, nil
}

// interruptWork is about how much work (multiply-adds or element operations) a pass does
// between two looks at its context.
const interruptWork = 1 << 18

func isDone(done <-chan struct{}) bool {
	if done == nil {
		return false
	}
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// Activation returns the output buffer of the named layer after the last Forward (batch
// samples in NCHW order), or nil for an unknown name, the model input, a convolution whose
// batch norm was folded into it (its output is then the batch norm's), or a convolution or
// folded batch norm or addition whose ReLU was fused into it (its output is then the ReLU's). The slice belongs
// to the executor: it is overwritten by the next Forward and must not be modified.
func (e *Executor) Activation(name string) []float32 {
	if t, ok := e.acts[name]; ok {
		return t.data
	}
	return nil
}

// Batch returns the number of samples per Forward.
func (e *Executor) Batch() int { return e.batch }

// OutputShape returns the per-sample shape of the model output.
func (e *Executor) OutputShape() Shape { return e.out }

// scratch gives the sizes, in values, of the per-worker buffers an operator needs: its own
// padded input planes and a group's output (a buffer shared by all operators).
type scratch struct{ pad, c int }

// plan builds the operator of one layer, packing weights with packer. It returns the step
// (with a nil op for layers that need no work) and the scratch each worker needs for it.
func plan(l *Layer, batch, threads int, packer kernel.SourceGemm, ins []*tensor, inS []Shape, out *tensor, outS Shape) (step, scratch) {
	planes := batch * outS.C
	elems := batch * outS.Size()
	switch l.Kind {
	case Conv2D:
		return planConv(l, batch, threads, packer, ins[0], inS[0], out, outS)
	case Linear:
		return planLinear(l, batch, threads, packer, ins[0], out)
	case BatchNorm:
		o := &bnOp{in: ins[0], out: out, c: outS.C, hw: outS.H * outS.W,
			scale: make([]float32, outS.C), shift: make([]float32, outS.C)}
		eps := float64(l.EpsOrDefault())
		for c := range o.scale {
			s := float64(l.Gamma[c]) / math.Sqrt(float64(l.Var[c])+eps)
			o.scale[c] = float32(s)
			o.shift[c] = float32(float64(l.Beta[c]) - float64(l.Mean[c])*s)
		}
		return newStep(o, planes, elems, threads), scratch{}
	case ReLU, ReLU6:
		o := &clipOp{in: ins[0], out: out, hw: outS.H * outS.W, six: l.Kind == ReLU6}
		return newStep(o, planes, elems, threads), scratch{}
	case LeakyReLU, Sigmoid, HardSigmoid, HardSwish:
		o := &actOp{l: l, in: ins[0], out: out, hw: outS.H * outS.W}
		return newStep(o, planes, elems, threads), scratch{}
	case MaxPool, AvgPool:
		o := &poolOp{in: ins[0], out: out, inS: inS[0], outS: outS, k: l.Kernel,
			s: l.StrideOrOne(), pad: l.Pad, isMax: l.Kind == MaxPool}
		o.owLo, o.owHi = validCols(inS[0].W, outS.W, l.Kernel, o.s, l.Pad)
		return newStep(o, planes, elems*l.Kernel*l.Kernel, threads), scratch{}
	case GlobalAvgPool:
		o := &gapOp{in: ins[0], out: out, hw: inS[0].H * inS[0].W}
		return newStep(o, planes, batch*inS[0].Size(), threads), scratch{}
	case Flatten:
		if out == ins[0] {
			return step{}, scratch{}
		}
		return newStep(&copyOp{in: ins[0], out: out, hw: outS.Size()}, batch, elems, 1), scratch{}
	case Add:
		o := &addOp{ins: ins, out: out, hw: outS.H * outS.W}
		return newStep(o, planes, elems*len(ins), threads), scratch{}
	case Concat:
		o := &concatOp{ins: ins, out: out, sizes: make([]int, len(ins))}
		for i := range ins {
			o.sizes[i] = inS[i].Size()
		}
		return newStep(o, batch, elems, threads), scratch{}
	}
	// Validate rejects unknown kinds before planning.
	panic("nn: unknown layer kind " + string(l.Kind))
}

// validCols returns, for each kernel column kw, the range [lo, hi) of output columns whose
// input column ow*s-pad+kw falls inside 0..w-1.
func validCols(w, ow, k, s, pad int) (lo, hi []int) {
	lo, hi = make([]int, k), make([]int, k)
	for kw := 0; kw < k; kw++ {
		l := 0
		if d := pad - kw; d > 0 {
			l = (d + s - 1) / s
		}
		h := 0
		if num := w - 1 + pad - kw; num >= 0 {
			h = num/s + 1
		}
		lo[kw], hi[kw] = min(l, ow), min(h, ow)
		if hi[kw] < lo[kw] {
			hi[kw] = lo[kw]
		}
	}
	return lo, hi
}

// ---- convolution ----

// convOp is a 2-D convolution. Groups with one input channel each (depthwise convolutions)
// are computed directly; others as a matrix product of the weights with the im2col matrix
// of the input, over a range of output pixels (a chunk) of one sample per task. The im2col
// matrix is never stored: the GEMM packs its panels straight from the padded input.
type convOp struct {
	in, out   *tensor
	inS, outS Shape
	k, s, pad int
	groups    int
	icg, ocg  int       // input and output channels per group
	rows      int       // icg*k*k: the inner dimension of the product
	w         []float32 // direct path: the weights (OC, 1, k, k)
	bias      []float32
	direct    bool              // one input channel per group
	pointwise bool              // 1x1 kernel, stride 1, no padding: the input is the im2col matrix
	chunks    int               // tasks per sample (GEMM path)
	chunkCols int               // output pixels per chunk
	rowOff    []int             // GEMM path: offset of each im2col row in the padded input planes
	packed    []*kernel.PackedA // GEMM path: each group's weights, packed for the kernel
	group     int               // samples computed in one product (see runGroup); 0: one at a time
	slot      int               // index of the worker's padded-input buffer of this convolution
	// fused: a ReLU or ReLU6 after the convolution (and its folded batch norm) is applied
	// as the output is written, clamped to [lo, hi] (-Inf, +Inf when not fused).
	fused  bool
	lo, hi float32
	// shifted: stride 1 or 2 (but not a pointwise convolution of one sample, which reads
	// its input in place anyway), with a kernel that reads the rows of B in place. With
	// stride 1, each row of the im2col matrix is a shifted window of the padded input, if
	// the product runs over a grid as wide as the padded planes (wq = pw columns per output
	// row, the last pw-ow of them unused): the GEMM reads the padded input itself instead
	// of packing the im2col matrix, and the rows of the grid are copied out afterwards (see
	// runShifted and runShiftedGroup). With stride 2, the padded input is first split into
	// its four phases (even and odd rows by even and odd columns, each hq x wq): kernel tap
	// (kh, kw) reads phase (kh%2, kw%2) shifted by (kh/2, kw/2), a window again. A
	// pointwise convolution over a group of samples is shifted too: side by side, the
	// samples' planes are rows the kernel reads in place.
	shifted   bool
	hq, wq    int   // shifted: rows and columns of a phase plane (the padded plane for stride 1); depthwise 3x3 stride 2: of the padded plane, made of even width
	chunkRows int   // shifted: output rows per chunk
	wideOff   []int // shifted group: the im2col row offsets in the group's side-by-side planes
}

// phaseOffsets returns, for each im2col row (input channel, kernel row, kernel column), its
// offset in a shifted convolution's phase planes, whose rows are ld values apart, plane
// after plane (the s*s phases of channel 0, then of channel 1, ...), each pl values long.
func (o *convOp) phaseOffsets(ld, pl int) []int {
	s := o.s
	offs := make([]int, o.rows)
	for r := range offs {
		c, kh, kw := r/(o.k*o.k), r/o.k%o.k, r%o.k
		offs[r] = (c*s*s+(kh%s)*s+kw%s)*pl + (kh/s)*ld + kw/s
	}
	return offs
}

// fillPhases writes one input plane (h x w) into its zero-bordered phase planes at dst,
// whose rows are ld values apart and which are pl values apart: a plain padded copy for
// stride 1; for stride 2, value (y, x) goes to phase ((y+pad)%2, (x+pad)%2) at row
// (y+pad)/2 and column (x+pad)/2. tmp is scratch for h*w values.
func (o *convOp) fillPhases(dst []float32, ld, pl int, src, tmp []float32) {
	h, w, pad := o.inS.H, o.inS.W, o.pad
	src = src[:h*w]
	if o.s == 1 {
		kernel.CopyStrided(dst[pad*ld+pad:], ld, src, w, h, w)
		return
	}
	if w%2 != 0 {
		// Row by row: the even columns to one phase, the odd ones to the other.
		pe := (pad&1)*pl + pad>>1         // the even columns' phase and first column
		po := ((pad+1)&1)*pl + (pad+1)>>1 // the odd columns'
		for y := 0; y < h; y++ {
			py, row := y+pad, src[y*w:(y+1)*w]
			at := (py&1)*2*pl + (py>>1)*ld
			even := dst[at+pe:][:(w+1)/2]
			odd := dst[at+po:][:w/2]
			for j := range even {
				even[j] = row[2*j]
			}
			for j := range odd {
				odd[j] = row[2*j+1]
			}
		}
		return
	}
	// The even and the odd columns of every row, end to end; then for each parity of the
	// rows, its rows of each into their phase plane.
	half := w / 2
	even, odd := tmp[:h*half], tmp[h*half:h*w]
	kernel.Deinterleave(even, odd, src)
	for q := 0; q < 2 && q < h; q++ {
		rows := (h - q + 1) / 2
		py := q + pad
		for _, part := range [2]struct {
			v  []float32
			px int
		}{{even, pad}, {odd, pad + 1}} {
			at := ((py%2)*2+part.px%2)*pl + (py/2)*ld + part.px/2
			kernel.CopyStrided(dst[at:], ld, part.v[q*half:], 2*half, rows, half)
		}
	}
}

// smallPlane is the most output pixels per sample for which a convolution inside a
// segment multiplies its weights by a whole group of samples at once: a product with so
// few columns would leave much of the micro-kernel's width idle.
const smallPlane = 64

// batchable tells whether the convolution can run a group of samples as one product.
func (o *convOp) batchable() bool {
	return !o.direct && o.groups == 1 && o.outS.H*o.outS.W <= smallPlane
}

// batch makes the convolution compute group samples per product and returns the scratch
// that needs: the group's padded input planes and its output before the scatter.
func (o *convOp) batch(group int) scratch {
	o.group = group
	sc := scratch{c: group * o.outS.C * o.outS.H * o.outS.W}
	if o.pad > 0 {
		sc.pad = group * o.icg * (o.inS.H + 2*o.pad) * (o.inS.W + 2*o.pad)
	}
	if o.pointwise && kernel.Accelerated() {
		// Pixels are independent: each plane is one row of h*w values.
		o.shifted, o.hq, o.wq = true, 1, o.inS.H*o.inS.W
	}
	if o.shifted {
		// The group's phase planes side by side: each is hq rows of group*wq values.
		wg := group * o.wq
		o.wideOff = o.phaseOffsets(wg, o.hq*wg)
		gh := o.outS.H
		if o.pointwise {
			gh = 1
		}
		sc = scratch{pad: o.icg * o.s * o.s * o.hq * wg, c: max(o.outS.C*gh*wg, o.inS.H*o.inS.W)}
	}
	return sc
}

func (o *convOp) grouped() bool { return o.group > 1 }

// runGroup computes samples n0..n0+n-1 as one product: the weights times the im2col
// columns of every sample side by side, written to the worker's scratch and scattered
// into the samples' planes with the bias.
func (o *convOp) runGroup(w *worker, n0, n int) {
	if o.shifted {
		o.runShiftedGroup(w, n0, n)
		return
	}
	ohw := o.outS.H * o.outS.W
	cols := n * ohw
	inSize := o.inS.Size()
	x, ss := o.in.data[n0*inSize:(n0+n)*inSize], inSize
	if o.pad > 0 {
		ss = o.icg * (o.inS.H + 2*o.pad) * (o.inS.W + 2*o.pad)
		for i := 0; i < n; i++ {
			o.padInput(o.padBuf(w)[i*ss:], o.in.data[(n0+i)*inSize:(n0+i+1)*inSize])
		}
		x = o.padBuf(w)[:n*ss]
	}
	c := w.cbuf[:o.outS.C*cols]
	w.src = convSource{o: o, x: x, ss: ss}
	w.gemm.SgemmSource(o.packed[0], cols, &w.src, 0, c, cols)
	w.src = convSource{}
	for i := 0; i < n; i++ {
		outN := o.out.data[(n0+i)*o.outS.Size():]
		for oc := 0; oc < o.outS.C; oc++ {
			row := outN[oc*ohw : (oc+1)*ohw]
			src := c[oc*cols+i*ohw : oc*cols+(i+1)*ohw]
			if o.bias != nil {
				kernel.ScaleShift(row, src, 1, o.bias[oc])
			} else {
				copy(row, src)
			}
			o.clamp(row)
		}
	}
}

func planConv(l *Layer, batch, threads int, packer kernel.SourceGemm, in *tensor, inS Shape, out *tensor, outS Shape) (step, scratch) {
	g := l.GroupsOrOne()
	o := &convOp{in: in, out: out, inS: inS, outS: outS, k: l.Kernel, s: l.StrideOrOne(),
		pad: l.Pad, groups: g, icg: l.In / g, ocg: l.Out / g, slot: -1, lo: negInf, hi: kernel.Inf}
	o.rows = o.icg * o.k * o.k
	o.w = make([]float32, len(l.Weight))
	copy(o.w, l.Weight)
	if l.Mask != nil {
		for i, m := range l.Mask {
			o.w[i] *= m
		}
	}
	if l.HasBias {
		o.bias = append([]float32(nil), l.Bias...)
	}
	ohw := outS.H * outS.W
	work := batch * ohw * l.Out * o.rows
	par := worthThreads(work, threads)
	// One input channel per group and at most two outputs per group (depthwise): a direct
	// loop. A single-channel convolution with many filters is a better matrix product.
	if o.icg == 1 && o.ocg <= 2 && g > 1 {
		o.direct = true
		sc := scratch{pad: (inS.H+2*o.pad)*(inS.W+2*o.pad) + kernel.DepthwiseSlack}
		if o.k == 3 && o.s == 2 {
			// The padded plane made of even width (hq x wq), then its even and its odd
			// columns: the input's four phases (see directPlane).
			o.hq, o.wq = inS.H+2*o.pad, roundUp(inS.W+2*o.pad, 2)
			sc = scratch{pad: 2*o.hq*o.wq + kernel.DepthwiseSlack}
		}
		return newStep(o, batch*l.Out, work, threads), sc
	}
	o.pointwise = o.k == 1 && o.s == 1 && o.pad == 0
	o.shifted = !o.pointwise && (o.s == 1 || o.s == 2) && kernel.Accelerated()
	if o.shifted {
		o.hq = (inS.H + 2*o.pad + o.s - 1) / o.s
		o.wq = (inS.W + 2*o.pad + o.s - 1) / o.s
	}
	o.packed = make([]*kernel.PackedA, g)
	for i := range o.packed {
		o.packed[i] = packer.PackA(o.ocg, o.rows, o.w[i*o.ocg*o.rows:], o.rows)
	}
	o.w = nil
	// Split each sample into enough pixel chunks that batch*chunks tasks share evenly
	// among the threads, with chunks a multiple of the micro-kernel width.
	chunks := 1
	if par {
		chunks = threads / gcd(batch, threads)
	}
	o.chunkCols = roundUp((ohw+chunks-1)/chunks, 16)
	o.chunks = (ohw + o.chunkCols - 1) / o.chunkCols
	if o.shifted {
		o.chunkRows = (outS.H + chunks - 1) / chunks
		o.chunks = (outS.H + o.chunkRows - 1) / o.chunkRows
		o.rowOff = o.phaseOffsets(o.wq, o.hq*o.wq)
		sc := scratch{pad: o.icg * o.s * o.s * o.hq * o.wq, c: max(o.ocg*o.chunkRows*o.wq, inS.H*inS.W)}
		return newStep(o, batch*o.chunks, work, threads), sc
	}
	// Offset of each im2col row (input channel, kernel row, kernel column) in the padded
	// planes of a group (a pointwise convolution reads its input in place one sample at
	// a time, through these offsets only for a group of samples).
	var sc scratch
	pw := inS.W + 2*o.pad
	ps := (inS.H + 2*o.pad) * pw
	o.rowOff = make([]int, o.rows)
	for r := range o.rowOff {
		c, kh, kw := r/(o.k*o.k), r/o.k%o.k, r%o.k
		o.rowOff[r] = c*ps + kh*pw + kw
	}
	if o.pad > 0 {
		sc.pad = o.icg * ps
	}
	return newStep(o, batch*o.chunks, work, threads), sc
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func roundUp(x, to int) int { return (x + to - 1) / to * to }

func (o *convOp) run(w *worker, lo, hi int) {
	for t := lo; t < hi; t++ {
		if o.direct {
			o.runDirect(w, t/o.outS.C, t%o.outS.C)
		} else if o.shifted {
			o.runShifted(w, t/o.chunks, t%o.chunks)
		} else {
			o.runGemm(w, t/o.chunks, t%o.chunks)
		}
	}
}

func (o *convOp) runGemm(w *worker, n, chunk int) {
	h, wd := o.inS.H, o.inS.W
	ohw := o.outS.H * o.outS.W
	j0 := chunk * o.chunkCols
	j1 := min(j0+o.chunkCols, ohw)
	nc := j1 - j0
	inN := o.in.data[n*o.inS.Size() : (n+1)*o.inS.Size()]
	outN := o.out.data[n*o.outS.Size() : (n+1)*o.outS.Size()]
	for g := 0; g < o.groups; g++ {
		plane := inN[g*o.icg*h*wd : (g+1)*o.icg*h*wd]
		c := outN[g*o.ocg*ohw+j0:]
		if o.pointwise {
			// Row p of the product is input channel p: read in place.
			w.rows = kernel.Rows{B: plane[j0:], Offs: o.rowOff}
			w.gemm.SgemmSource(o.packed[g], nc, &w.rows, 0, c, ohw)
			w.rows = kernel.Rows{}
		} else {
			w.src = convSource{o: o, x: o.padInput(o.padBuf(w), plane), j0: j0}
			w.gemm.SgemmSource(o.packed[g], nc, &w.src, 0, c, ohw)
			w.src = convSource{}
		}
		if o.bias != nil || o.fused {
			for oc := 0; oc < o.ocg; oc++ {
				row := c[oc*ohw : oc*ohw+nc]
				if o.bias != nil {
					kernel.ScaleShift(row, row, 1, o.bias[g*o.ocg+oc])
				}
				o.clamp(row)
			}
		}
	}
}

// runShifted computes output rows chunk*chunkRows.. of sample n of a shifted convolution:
// the product over a grid of wq columns per output row reads the phase planes in place, and
// each grid row's first ow values (plus the bias) are the output row.
func (o *convOp) runShifted(w *worker, n, chunk int) {
	h, wd := o.inS.H, o.inS.W
	oh, ow, wq := o.outS.H, o.outS.W, o.wq
	pl := o.hq * wq
	y0 := chunk * o.chunkRows
	y1 := min(y0+o.chunkRows, oh)
	cols := (y1-y0-1)*wq + ow
	ld := (y1 - y0) * wq
	inN := o.in.data[n*o.inS.Size() : (n+1)*o.inS.Size()]
	outN := o.out.data[n*o.outS.Size() : (n+1)*o.outS.Size()]
	x := o.padBuf(w)
	for g := 0; g < o.groups; g++ {
		for c := 0; c < o.icg; c++ {
			o.fillPhases(x[c*o.s*o.s*pl:], wq, pl, inN[(g*o.icg+c)*h*wd:], w.cbuf)
		}
		c := w.cbuf[:o.ocg*ld]
		w.rows = kernel.Rows{B: x[y0*wq:], Offs: o.rowOff}
		w.gemm.SgemmSource(o.packed[g], cols, &w.rows, 0, c, ld)
		w.rows = kernel.Rows{}
		for oc := 0; oc < o.ocg; oc++ {
			kernel.StridedRows(outN[(g*o.ocg+oc)*oh*ow+y0*ow:], ow, c[oc*ld:], wq, y1-y0, ow, o.biasOf(g*o.ocg+oc), o.lo, o.hi)
		}
	}
}

// runShiftedGroup is runGroup for a shifted convolution: the samples' phase planes are laid
// side by side (row y of a phase plane of channel c holds row y of every sample), so that
// the product runs over one grid of group*wq columns per output row for the whole group.
func (o *convOp) runShiftedGroup(w *worker, n0, n int) {
	h, wd := o.inS.H, o.inS.W
	oh, ow, wq := o.outS.H, o.outS.W, o.wq
	wg := o.group * wq
	pl := o.hq * wg
	inSize, outSize := o.inS.Size(), o.outS.Size()
	x := o.padBuf(w)
	if o.pointwise {
		o.runPointwiseGroup(w, x, n0, n)
		return
	}
	for i := 0; i < n; i++ {
		src := o.in.data[(n0+i)*inSize:]
		for c := 0; c < o.icg; c++ {
			o.fillPhases(x[c*o.s*o.s*pl+i*wq:], wg, pl, src[c*h*wd:], w.cbuf)
		}
	}
	cols := (oh-1)*wg + (n-1)*wq + ow
	ld := oh * wg
	c := w.cbuf[:o.outS.C*ld]
	w.rows = kernel.Rows{B: x, Offs: o.wideOff}
	w.gemm.SgemmSource(o.packed[0], cols, &w.rows, 0, c, ld)
	w.rows = kernel.Rows{}
	for i := 0; i < n; i++ {
		outN := o.out.data[(n0+i)*outSize:]
		for oc := 0; oc < o.outS.C; oc++ {
			kernel.StridedRows(outN[oc*oh*ow:], ow, c[oc*ld+i*wq:], wg, oh, ow, o.biasOf(oc), o.lo, o.hi)
		}
	}
}

// runPointwiseGroup is runShiftedGroup for a pointwise convolution: row c of x holds plane c
// of every sample of the group, one after another, so that one product covers the group,
// and each sample's planes come in and go out in one move of all its channels.
func (o *convOp) runPointwiseGroup(w *worker, x []float32, n0, n int) {
	hw := o.inS.H * o.inS.W
	wg := o.group * hw
	inSize, outSize := o.inS.Size(), o.outS.Size()
	for i := 0; i < n; i++ {
		kernel.CopyStrided(x[i*hw:], wg, o.in.data[(n0+i)*inSize:], hw, o.icg, hw)
	}
	c := w.cbuf[:o.outS.C*wg]
	w.rows = kernel.Rows{B: x, Offs: o.wideOff}
	w.gemm.SgemmSource(o.packed[0], n*hw, &w.rows, 0, c, wg)
	w.rows = kernel.Rows{}
	for i := 0; i < n; i++ {
		out := o.out.data[(n0+i)*outSize:]
		if o.bias != nil {
			kernel.StridedRowsBias(out, hw, c[i*hw:], wg, o.outS.C, hw, o.bias, o.lo, o.hi)
		} else {
			kernel.StridedRows(out, hw, c[i*hw:], wg, o.outS.C, hw, negZero, o.lo, o.hi)
		}
	}
}

// biasOf returns the bias of output channel oc, or -0 (which adds nothing, not even to a
// negative zero) without biases.
func (o *convOp) biasOf(oc int) float32 {
	if o.bias != nil {
		return o.bias[oc]
	}
	return negZero
}

// negZero is -0: x + negZero is x for every x.
var negZero = float32(math.Copysign(0, -1))

// negInf is -Inf, the lower bound of a clamp that changes nothing.
var negInf = float32(math.Inf(-1))

// clamp applies the convolution's fused activation (if any) to values it just wrote.
func (o *convOp) clamp(v []float32) {
	if o.fused {
		kernel.Clamp(v, v, o.lo, o.hi)
	}
}

// padBuf returns the worker's padded-input buffer of this convolution (nil if it has none).
func (o *convOp) padBuf(w *worker) []float32 {
	if o.slot < 0 {
		return nil
	}
	return w.pads[o.slot]
}

// padInput returns the input channels of one group with pad zeros around each plane, in
// buf (the convolution's own padded-input buffer, whose borders are zero), or the planes
// themselves when there is no padding.
func (o *convOp) padInput(buf, planes []float32) []float32 {
	if o.pad == 0 {
		return planes
	}
	h, w := o.inS.H, o.inS.W
	pw := w + 2*o.pad
	ps := (h + 2*o.pad) * pw
	for c := 0; c < o.icg; c++ {
		o.padPlane(buf[c*ps:(c+1)*ps], planes[c*h*w:(c+1)*h*w])
	}
	return buf[:o.icg*ps]
}

// padPlane copies one input plane into the inside of buf, a padded plane whose borders are
// zero, and returns buf, which keeps its length.
func (o *convOp) padPlane(buf, src []float32) []float32 {
	pad, h, w := o.pad, o.inS.H, o.inS.W
	pw := w + 2*pad
	kernel.CopyStrided(buf[pad*pw+pad:], pw, src, w, h, w)
	return buf
}

// convSource is the im2col matrix of a convolution (one row per input channel and kernel
// position, one column per output pixel) for one sample and group, read on demand from the
// zero-padded input planes, as a kernel.PanelSource.
type convSource struct {
	o  *convOp
	x  []float32 // padded input planes of the group
	j0 int       // output pixel of column 0
	// ss, when not 0, is the distance in x between two samples' planes: the columns are
	// then the output pixels of one sample after another (see runGroup).
	ss int
}

// PackB implements kernel.PanelSource. Each sliver of nr output pixels is cut into runs
// that lie in one output row; a run reads consecutive inputs (every s-th with stride s) from
// each row of the im2col matrix.
func (cs *convSource) PackB(dst []float32, p0, kc, j0, nc, nr int) {
	o := cs.o
	s, ow, oh, pw := o.s, o.outS.W, o.outS.H, o.inS.W+2*o.pad
	rowOff := o.rowOff[p0 : p0+kc]
	for jr := 0; jr < nc; jr += nr {
		nw := min(nr, nc-jr)
		d := dst[jr*kc : jr*kc+nr*kc]
		q := cs.j0 + j0 + jr
		smp := 0
		if cs.ss > 0 {
			smp, q = q/(oh*ow), q%(oh*ow)
		}
		y, x := q/ow, q%ow
		for c0 := 0; c0 < nw; {
			n := min(nw-c0, ow-x)
			base := smp*cs.ss + y*s*pw + x*s
			switch {
			case s == 1 && n >= 4:
				// CopyRows moves up to 16 values a row: wider slivers (the AVX-512
				// kernel's 32) go in pieces, a last piece under 4 as one more of 4.
				for c := 0; c < n; c += 16 {
					m := min(16, n-c)
					if m < 4 {
						c, m = n-4, 4
					}
					kernel.CopyRows(d[c0+c:], nr, cs.x, base+c, rowOff, m)
				}
			case s == 1:
				for p, ro := range rowOff {
					copy(d[p*nr+c0:p*nr+c0+n], cs.x[ro+base:ro+base+n])
				}
			default:
				for p, ro := range rowOff {
					dp := d[p*nr+c0 : p*nr+c0+n]
					sx := cs.x[ro+base : ro+base+(n-1)*s+1]
					for i := range dp {
						dp[i] = sx[i*s]
					}
				}
			}
			c0 += n
			if x += n; x == ow {
				x, y = 0, y+1
				if y == oh {
					y, smp = 0, smp+1
				}
			}
		}
		if nw < nr {
			for p := 0; p < kc; p++ {
				clear(d[p*nr+nw : p*nr+nr])
			}
		}
	}
}

// runDirect computes output channel oc of sample n of a convolution with one input channel
// per group. The input plane is first copied into a zero-padded scratch plane so that the
// inner loops need no bounds tests.
func (o *convOp) runDirect(wk *worker, n, oc int) {
	if dst := o.directPlane(wk, n, oc); dst != nil {
		o.clamp(dst)
	}
}

// directPlane computes output plane oc of sample n of runDirect. The vector kernel applies
// the fused activation itself, and directPlane then returns nil; otherwise it returns the
// plane, still to be clamped.
func (o *convOp) directPlane(wk *worker, n, oc int) []float32 {
	h, w := o.inS.H, o.inS.W
	oh, ow := o.outS.H, o.outS.W
	k, s, pad := o.k, o.s, o.pad
	ci := oc / o.ocg
	src := o.in.data[n*o.inS.Size()+ci*h*w:][:h*w]
	dst := o.out.data[n*o.outS.Size()+oc*oh*ow:][:oh*ow]
	wt := o.w[oc*k*k : (oc+1)*k*k]
	var bv float32
	if o.bias != nil {
		bv = o.bias[oc]
	}
	pw := w + 2*pad
	xp := src
	if k == 3 && s == 1 {
		// The vector kernel reads a little past the plane: always use the scratch copy.
		xp = o.padPlane(o.padBuf(wk), src)
		kernel.Depthwise3x3(dst, xp, (*[9]float32)(wt), bv, oh, ow, pw, o.lo, o.hi)
		return nil
	}
	if k == 3 && s == 2 {
		// The padded plane, made of even width, split into its even and its odd columns
		// (each a whole plane of half the width) is the input's four phases, read by the
		// vector kernel at stride 1: the even columns of the even rows, the odd columns of
		// the even rows, then the same of the odd rows, half a padded row further on.
		buf, hp, wp := o.padBuf(wk), o.hq, o.wq
		kernel.CopyStrided(buf[pad*wp+pad:], wp, src, w, h, w)
		half := hp * wp / 2
		x := buf[2*half:]
		kernel.Deinterleave(x[:half], x[half:2*half], buf[:2*half])
		kernel.Depthwise3x3S2(dst, x, half, wp/2, wp, (*[9]float32)(wt), bv, oh, ow, o.lo, o.hi)
		return nil
	}
	if pad > 0 {
		xp = o.padPlane(o.padBuf(wk), src)
	}
	if k == 3 {
		w0, w1, w2, w3, w4, w5, w6, w7, w8 := wt[0], wt[1], wt[2], wt[3], wt[4], wt[5], wt[6], wt[7], wt[8]
		for y := 0; y < oh; y++ {
			base := y * s * pw
			r0 := xp[base : base+pw]
			r1 := xp[base+pw : base+2*pw]
			r2 := xp[base+2*pw : base+3*pw]
			row := dst[y*ow : (y+1)*ow]
			for x := range row {
				i := x * s
				a, b, c := r0[i:i+3], r1[i:i+3], r2[i:i+3]
				row[x] = bv + (w0*a[0] + w1*a[1] + w2*a[2]) + (w3*b[0] + w4*b[1] + w5*b[2]) +
					(w6*c[0] + w7*c[1] + w8*c[2])
			}
		}
		return dst
	}
	for y := 0; y < oh; y++ {
		row := dst[y*ow : (y+1)*ow]
		for x := range row {
			acc := bv
			for kh := 0; kh < k; kh++ {
				r := xp[(y*s+kh)*pw+x*s:][:k]
				wr := wt[kh*k : kh*k+k]
				for kw, v := range r {
					acc += wr[kw] * v
				}
			}
			row[x] = acc
		}
	}
	return dst
}

// ---- fully connected ----

// linearOp computes y = x W^T + b as one matrix product per range of output features.
type linearOp struct {
	in, out   *tensor
	batch     int
	nIn, nOut int
	w, bias   []float32
	cols      int // output features per task
	// From linearPackedBatch samples on, each task's rows of the weights are packed once
	// and the task computes its features for the whole batch as W x^T into t (features by
	// samples), then writes them out transposed: the weights are not packed again at every
	// pass, as a product with x on the left would need.
	packed []*kernel.PackedA
	t      [][]float32
}

// linearPackedBatch is the batch from which a linear layer multiplies with packed weights;
// below it, dot products over the weight rows are faster.
const linearPackedBatch = 4

func planLinear(l *Layer, batch, threads int, packer kernel.SourceGemm, in, out *tensor) (step, scratch) {
	o := &linearOp{in: in, out: out, batch: batch, nIn: l.In, nOut: l.Out}
	o.w = make([]float32, len(l.Weight))
	copy(o.w, l.Weight)
	if l.Mask != nil {
		for i, m := range l.Mask {
			o.w[i] *= m
		}
	}
	if l.HasBias {
		o.bias = append([]float32(nil), l.Bias...)
	}
	work := batch * l.In * l.Out
	par := worthThreads(work, threads)
	tasks := 1
	if par {
		tasks = min(threads, (l.Out+15)/16)
	}
	o.cols = roundUp((l.Out+tasks-1)/tasks, 16)
	tasks = (l.Out + o.cols - 1) / o.cols
	if batch >= linearPackedBatch {
		for t := 0; t < tasks; t++ {
			j0 := t * o.cols
			j1 := min(j0+o.cols, o.nOut)
			o.packed = append(o.packed, packer.PackA(j1-j0, o.nIn, o.w[j0*o.nIn:], o.nIn))
			o.t = append(o.t, make([]float32, (j1-j0)*batch))
		}
	}
	return newStep(o, tasks, work, threads), scratch{}
}

func (o *linearOp) run(w *worker, lo, hi int) {
	for t := lo; t < hi; t++ {
		j0 := t * o.cols
		j1 := min(j0+o.cols, o.nOut)
		if o.packed != nil {
			w.denseT = kernel.DenseT{B: o.in.data, Ld: o.nIn}
			w.gemm.SgemmSource(o.packed[t], o.batch, &w.denseT, 0, o.t[t], o.batch)
			w.denseT = kernel.DenseT{}
			for j := j0; j < j1; j++ {
				col := o.t[t][(j-j0)*o.batch : (j-j0+1)*o.batch]
				b := float32(0)
				if o.bias != nil {
					b = o.bias[j]
				}
				for n, v := range col {
					o.out.data[n*o.nOut+j] = v + b
				}
			}
			continue
		}
		c := o.out.data[j0:]
		w.gemm.Sgemm(false, true, o.batch, j1-j0, o.nIn, 1, o.in.data, o.nIn, o.w[j0*o.nIn:], o.nIn, 0, c, o.nOut)
		if o.bias != nil {
			b := o.bias[j0:j1]
			for n := 0; n < o.batch; n++ {
				row := c[n*o.nOut : n*o.nOut+len(b)]
				for j, v := range b {
					row[j] += v
				}
			}
		}
	}
}

// ---- element-wise operators; a task is one channel plane of one sample ----

// bnOp is an inference batch norm folded into y = x*scale[c] + shift[c].
type bnOp struct {
	in, out      *tensor
	c, hw        int
	scale, shift []float32
}

func (o *bnOp) run(_ *worker, lo, hi int) {
	for p := lo; p < hi; p++ {
		c := p % o.c
		kernel.ScaleShift(o.out.data[p*o.hw:(p+1)*o.hw], o.in.data[p*o.hw:(p+1)*o.hw], o.scale[c], o.shift[c])
	}
}

// clipOp is ReLU, or ReLU6 when six is set. NaN passes through, as in PyTorch.
type clipOp struct {
	in, out *tensor
	hw      int
	six     bool
}

func (o *clipOp) run(_ *worker, lo, hi int) {
	top := kernel.Inf
	if o.six {
		top = 6
	}
	kernel.Clamp(o.out.data[lo*o.hw:hi*o.hw], o.in.data[lo*o.hw:hi*o.hw], 0, top)
}

// concatOp joins its inputs' channels, sample by sample; sizes are the inputs' values per
// sample.
type concatOp struct {
	ins   []*tensor
	out   *tensor
	sizes []int
}

func (o *concatOp) run(_ *worker, lo, hi int) {
	total := 0
	for _, n := range o.sizes {
		total += n
	}
	for b := lo; b < hi; b++ {
		dst := o.out.data[b*total : (b+1)*total]
		for i, in := range o.ins {
			n := o.sizes[i]
			copy(dst[:n], in.data[b*n:(b+1)*n])
			dst = dst[n:]
		}
	}
}

// actOp is an element-wise activation other than ReLU and ReLU6 (see Layer.Activate).
type actOp struct {
	l       *Layer
	in, out *tensor
	hw      int
}

func (o *actOp) run(_ *worker, lo, hi int) {
	o.l.Activate(o.out.data[lo*o.hw:hi*o.hw], o.in.data[lo*o.hw:hi*o.hw])
}

// poolOp is a max pool (padding counts as -inf) or an average pool (dividing by the full
// window area, padding included).
type poolOp struct {
	in, out    *tensor
	inS, outS  Shape
	k, s, pad  int
	isMax      bool
	owLo, owHi []int
}

func (o *poolOp) run(_ *worker, lo, hi int) {
	h, w := o.inS.H, o.inS.W
	oh, ow := o.outS.H, o.outS.W
	k, s, pad := o.k, o.s, o.pad
	if k == 2 && s == 2 && pad == 0 {
		o.run2x2(lo, hi)
		return
	}
	init := float32(0)
	if o.isMax {
		init = float32(math.Inf(-1))
	}
	inv := 1 / float32(k*k)
	for p := lo; p < hi; p++ {
		src := o.in.data[p*h*w : (p+1)*h*w]
		dst := o.out.data[p*oh*ow : (p+1)*oh*ow]
		for y := 0; y < oh; y++ {
			row := dst[y*ow : (y+1)*ow]
			for i := range row {
				row[i] = init
			}
			for kh := 0; kh < k; kh++ {
				ih := y*s - pad + kh
				if ih < 0 || ih >= h {
					continue
				}
				srow := src[ih*w : (ih+1)*w]
				for kw := 0; kw < k; kw++ {
					a, b := o.owLo[kw], o.owHi[kw]
					if a >= b {
						continue
					}
					d := row[a:b]
					start := a*s - pad + kw
					if o.isMax {
						// max keeps NaN, as PyTorch does.
						for i := range d {
							d[i] = max(d[i], srow[start+i*s])
						}
					} else {
						for i := range d {
							d[i] += srow[start+i*s]
						}
					}
				}
			}
			if !o.isMax {
				for i := range row {
					row[i] *= inv
				}
			}
		}
	}
}

// run2x2 is run for the common 2x2 window with stride 2 and no padding.
func (o *poolOp) run2x2(lo, hi int) {
	h, w := o.inS.H, o.inS.W
	oh, ow := o.outS.H, o.outS.W
	for p := lo; p < hi; p++ {
		src := o.in.data[p*h*w : (p+1)*h*w]
		dst := o.out.data[p*oh*ow : (p+1)*oh*ow]
		for y := 0; y < oh; y++ {
			r0 := src[2*y*w : 2*y*w+2*ow]
			r1 := src[(2*y+1)*w : (2*y+1)*w+2*ow]
			row := dst[y*ow : (y+1)*ow]
			if o.isMax {
				kernel.MaxPool2x2(row, r0, r1)
			} else {
				for x := range row {
					a, b := r0[2*x:2*x+2], r1[2*x:2*x+2]
					row[x] = ((a[0] + a[1]) + (b[0] + b[1])) * 0.25
				}
			}
		}
	}
}

// gapOp is a global average pool: one mean per channel plane, summed in float64.
type gapOp struct {
	in, out *tensor
	hw      int
}

func (o *gapOp) run(_ *worker, lo, hi int) {
	for p := lo; p < hi; p++ {
		var sum float64
		for _, v := range o.in.data[p*o.hw : (p+1)*o.hw] {
			sum += float64(v)
		}
		o.out.data[p] = float32(sum / float64(o.hw))
	}
}

// copyOp copies its input (a flatten of the model input, which Forward does not own).
type copyOp struct {
	in, out *tensor
	hw      int
}

func (o *copyOp) run(_ *worker, lo, hi int) {
	copy(o.out.data[lo*o.hw:hi*o.hw], o.in.data[lo*o.hw:hi*o.hw])
}

// addOp sums its inputs element by element.
type addOp struct {
	ins []*tensor
	out *tensor
	hw  int
	// fused: a ReLU (or ReLU6, hi = 6) after the addition is applied to each plane as soon
	// as it is summed.
	fused bool
	hi    float32
}

func (o *addOp) run(_ *worker, lo, hi int) {
	a, b := lo*o.hw, hi*o.hw
	dst := o.out.data[a:b]
	kernel.Add(dst, o.ins[0].data[a:b], o.ins[1].data[a:b])
	for _, t := range o.ins[2:] {
		kernel.Add(dst, dst, t.data[a:b])
	}
	if o.fused {
		kernel.Clamp(dst, dst, 0, o.hi)
	}
}

// ---- thread pool ----

// job is a parallel step's tasks as the pool shares them out. Each parallel step owns one
// job, reused by every Forward: o, n and grain never change, next and done count the
// tasks taken and finished in the current run.
type job struct {
	o     op
	n     int // tasks
	grain int // tasks taken at a time
	next  atomic.Int64
	done  atomic.Int64
	quit  atomic.Value // the current run's <-chan struct{} (a context's Done): once closed, no task is started
}

func newJob(o op, n, threads int) *job {
	return &job{o: o, n: n, grain: max(1, n/(4*threads))}
}

// pool runs a job's tasks on the calling goroutine and len(workers)-1 helper goroutines.
// Tasks are taken from a shared counter, so a helper that the scheduler runs late (on a
// busy machine) leaves its share to the others instead of holding everyone up. Which
// worker runs a task does not change its result. The pool does not refer to the Executor,
// so that an unreachable Executor can be collected and its helpers stopped.
type pool struct {
	workers  []*worker
	start    []chan struct{} // wakes helper i; start[0] is unused
	finished chan struct{}   // a helper finished the last task of the current run
	cur      atomic.Pointer[job]
	once     sync.Once
}

func newPool(workers []*worker) *pool {
	p := &pool{workers: workers, start: make([]chan struct{}, len(workers)),
		finished: make(chan struct{}, 1)}
	for i := 1; i < len(workers); i++ {
		p.start[i] = make(chan struct{}, 1)
		go p.loop(i)
	}
	return p
}

func (p *pool) loop(i int) {
	for range p.start[i] {
		if j := p.cur.Load(); j != nil && p.work(j, p.workers[i]) {
			p.finished <- struct{}{}
		}
	}
}

// work runs tasks of j on w until none are left to take, and reports whether it finished
// the last task of the run.
func (p *pool) work(j *job, w *worker) bool {
	last := false
	for {
		if q, _ := j.quit.Load().(<-chan struct{}); isDone(q) {
			// Take every task not yet started and count it as finished.
			if lo := int(j.next.Swap(int64(j.n))); lo < j.n && int(j.done.Add(int64(j.n-lo))) == j.n {
				last = true
			}
			return last
		}
		lo := int(j.next.Add(int64(j.grain))) - j.grain
		if lo >= j.n {
			return last
		}
		hi := min(lo+j.grain, j.n)
		j.o.run(w, lo, hi)
		if int(j.done.Add(int64(hi-lo))) == j.n {
			last = true
		}
	}
}

// do runs all tasks of j and returns when they are finished, or, once quit is closed,
// when the tasks already started are. A helper that takes a task after the run is over
// finds none left: the counters only restart in the next do of the same job, after every
// task of this run has finished.
func (p *pool) do(j *job, quit <-chan struct{}) {
	j.done.Store(0)
	j.next.Store(0)
	j.quit.Store(quit)
	p.cur.Store(j)
	for i := 1; i < min(len(p.workers), j.n); i++ {
		select {
		case p.start[i] <- struct{}{}:
		default: // already has a wake-up pending
		}
	}
	if !p.work(j, p.workers[0]) {
		<-p.finished
	}
}

// stop ends the helper goroutines.
func (p *pool) stop() {
	p.once.Do(func() {
		for _, c := range p.start[1:] {
			close(c)
		}
	})
}
