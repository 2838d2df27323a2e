package train

import (
	"fmt"
	"hash"
	"hash/fnv"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// The layer operations of this package are gorgonia Ops written for float32 NCHW tensors.
// gorgonia v0.9's own layer ops do not fit: Conv2d has no groups (depthwise convolutions),
// AveragePool2D divides by the input width instead of the window size,
// GlobalAveragePool2D panics when differentiated and BatchNorm keeps its running statistics
// private. So each layer kind has a forward Op here plus Ops for its input gradients, with
// PyTorch's semantics; gorgonia provides the graph, the symbolic differentiation (including
// the summing of gradients at fan-outs, e.g. residual blocks), element-wise additions and
// the tape machine that runs it all.
//
// Conventions shared by every Op:
//   - activations are 4-D (N, C, H, W); a feature vector is (N, F, 1, 1);
//   - an Op owns its output tensor and overwrites it on every run, so a step allocates
//     nothing here; an Op never writes to its inputs;
//   - state a gradient Op needs from the forward pass (normalised activations, arg-max
//     indices, softmax probabilities) lives in the forward Op, never in a tensor handed to
//     the machine, so register reuse cannot clobber it; a gradient Op that needs a forward
//     input (a convolution's, to build its columns again) takes it as an input node;
//   - every Op has a unique hash: gorgonia merges nodes with equal ops and equal inputs.

var opSerial atomic.Uint64

// opBase implements the bookkeeping methods of gorgonia.Op.
type opBase struct{ id string }

func newBase(kind, name string) opBase {
	return opBase{id: fmt.Sprintf("%s(%s)#%d", kind, name, opSerial.Add(1))}
}

func (o *opBase) ReturnsPtr() bool      { return false }
func (o *opBase) CallsExtern() bool     { return false }
func (o *opBase) OverwritesInput() int  { return -1 }
func (o *opBase) WriteHash(h hash.Hash) { fmt.Fprint(h, o.id) }
func (o *opBase) String() string        { return o.id }
func (o *opBase) Hashcode() uint32 {
	h := fnv.New32a()
	o.WriteHash(h)
	return h.Sum32()
}

var typeVar = hm.TypeVariable('a')

// tt returns the gorgonia type of a float tensor with the given number of dimensions.
func tt(dims int) hm.Type { return G.TensorType{Dims: dims, Of: typeVar} }

// fnType builds the type of an Op from its input and output dimensions.
func fnType(dims ...int) hm.Type {
	ts := make([]hm.Type, len(dims))
	for i, d := range dims {
		ts[i] = tt(d)
	}
	return hm.NewFnType(ts...)
}

// outBuf is an output tensor owned by an Op and reused on every run.
type outBuf struct {
	t     *tensor.Dense
	data  []float32
	shape tensor.Shape
}

func newOutBuf(shape ...int) outBuf {
	n := 1
	for _, d := range shape {
		n *= d
	}
	data := make([]float32, n)
	return outBuf{data: data, shape: tensor.Shape(shape).Clone(),
		t: tensor.New(tensor.WithShape(shape...), tensor.WithBacking(data))}
}

// get returns the output tensor with its proper shape (in case a consumer reshaped it).
func (b *outBuf) get() *tensor.Dense {
	if !b.t.Shape().Eq(b.shape) {
		if err := b.t.Reshape(b.shape...); err != nil {
			b.t = tensor.New(tensor.WithShape(b.shape...), tensor.WithBacking(b.data))
		}
	}
	return b.t
}

// f32 returns the float32 data of a tensor value and checks its length.
func f32(v G.Value, want int, what string) ([]float32, error) {
	if t, ok := v.(*tensor.Dense); ok && t.Dtype() == tensor.Float32 && !t.IsScalar() {
		// The typed view of the storage: Data would build the slice through reflection,
		// an allocation per call, several hundred per training step.
		d := t.Float32s()
		if want >= 0 && len(d) != want {
			return nil, fmt.Errorf("train: %s: %d values, want %d", what, len(d), want)
		}
		return d, nil
	}
	t, ok := v.(tensor.Tensor)
	if !ok {
		return nil, fmt.Errorf("train: %s: expected a tensor, got %T", what, v)
	}
	d, ok := t.Data().([]float32)
	if !ok {
		return nil, fmt.Errorf("train: %s: expected float32 data, got %T", what, t.Data())
	}
	if want >= 0 && len(d) != want {
		return nil, fmt.Errorf("train: %s: %d values, want %d", what, len(d), want)
	}
	return d, nil
}

// scalar returns the value of a scalar (or one-element tensor) value.
func scalar(v G.Value) (float32, error) {
	switch s := v.(type) {
	case *G.F32:
		return float32(*s), nil
	case *G.F64:
		return float32(*s), nil
	case tensor.Tensor:
		switch d := s.Data().(type) {
		case []float32:
			if len(d) == 1 {
				return d[0], nil
			}
		case float32:
			return d, nil
		}
	}
	return 0, fmt.Errorf("train: expected a scalar, got %T", v)
}

func checkArity(op G.Op, n int) error {
	if op.Arity() >= 0 && n != op.Arity() {
		return fmt.Errorf("train: %v takes %d inputs, got %d", op, op.Arity(), n)
	}
	return nil
}

// parallel runs fn over [0, n) split into contiguous chunks, one goroutine per chunk, when
// the total work (n*cost, roughly in multiply-adds) is worth it. Chunks must write
// disjoint memory; results then do not depend on the number of workers.
func parallel(n, cost int, fn func(lo, hi int)) {
	parallelW(n, cost, func(_, lo, hi int) { fn(lo, hi) })
}

// perWorker grows s to one entry per possible worker of parallelW (GOMAXPROCS). Call it in
// the calling goroutine before parallelW: each worker then touches only its own entry.
func perWorker[T any](s *[]T) {
	for n := runtime.GOMAXPROCS(0); len(*s) < n; {
		var zero T
		*s = append(*s, zero)
	}
}

// parallelW is parallel that also tells fn which worker it is, in [0, GOMAXPROCS): a
// worker's scratch memory is its own (see perWorker).
func parallelW(n, cost int, fn func(worker, lo, hi int)) {
	w := runtime.GOMAXPROCS(0)
	if w > n {
		w = n
	}
	if w <= 1 || n*cost < 1<<15 {
		fn(0, 0, n)
		return
	}
	var wg sync.WaitGroup
	for i := 0; i < w; i++ {
		lo, hi := i*n/w, (i+1)*n/w
		if lo == hi {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(i, lo, hi)
		}()
	}
	wg.Wait()
}
