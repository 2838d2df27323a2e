package data

import "fmt"

// Batch is one mini-batch of samples.
//
// The slices may share memory with the Batcher's internal buffers or with the
// Dataset itself: they are valid only until the next call to Next or Reset
// and must be treated as read-only. Copy them to keep them longer.
type Batch struct {
	// Images holds N*C*H*W pixel values in NCHW order.
	Images []float32
	// Labels holds the N class labels.
	Labels []uint8
	// N is the number of samples in the batch; only the last batch of an
	// epoch can be smaller than the batch size.
	N int
	// Index holds the N positions of the samples in the Dataset, so callers
	// can look up per-sample data kept beside it (such as teacher logits).
	Index []int
}

// Batcher yields the samples of a Dataset as mini-batches, one epoch at a
// time. With shuffling, the sample order of an epoch is a permutation
// determined by the seed alone; pass a different seed to Reset (for example
// one derived from the epoch number) to get a new order each epoch.
type Batcher struct {
	d         *Dataset
	batchSize int
	shuffle   bool
	dropLast  bool
	order     []int // sample order for this epoch; nil means 0..N-1
	seq       []int // 0..N-1, the order without shuffling
	pos       int   // index into the order of the next sample
	images    []float32
	labels    []uint8
}

// NewBatcher returns a Batcher over d with the given batch size. If shuffle
// is true the first epoch's order is a permutation determined by seed;
// otherwise samples come in dataset order. If dropLast is true a final batch
// smaller than batchSize is skipped. It panics if d is nil or batchSize < 1.
func NewBatcher(d *Dataset, batchSize int, shuffle bool, seed int64, dropLast bool) *Batcher {
	if d == nil {
		panic("data: NewBatcher: nil Dataset")
	}
	if batchSize < 1 {
		panic(fmt.Sprintf("data: NewBatcher: batch size %d, want at least 1", batchSize))
	}
	b := &Batcher{d: d, batchSize: batchSize, shuffle: shuffle, dropLast: dropLast}
	b.Reset(seed)
	return b
}

// Next returns the next batch of the current epoch. It returns false when
// the epoch is over; call Reset to start another.
//
// Without shuffling, the batch slices are views into the Dataset; with
// shuffling, they are buffers owned by the Batcher and overwritten by the
// following call.
func (b *Batcher) Next() (Batch, bool) {
	remaining := b.d.N - b.pos
	if remaining <= 0 || (b.dropLast && remaining < b.batchSize) {
		return Batch{}, false
	}
	n := min(b.batchSize, remaining)
	s := b.d.SampleSize()
	start := b.pos
	b.pos += n
	if b.order == nil {
		if b.seq == nil {
			b.seq = make([]int, b.d.N)
			for i := range b.seq {
				b.seq[i] = i
			}
		}
		return Batch{
			Images: b.d.Images[start*s : (start+n)*s : (start+n)*s],
			Labels: b.d.Labels[start : start+n : start+n],
			N:      n,
			Index:  b.seq[start : start+n : start+n],
		}, true
	}
	if b.images == nil {
		b.images = make([]float32, b.batchSize*s)
		b.labels = make([]uint8, b.batchSize)
	}
	for j, i := range b.order[start : start+n] {
		copy(b.images[j*s:(j+1)*s], b.d.Images[i*s:(i+1)*s])
		b.labels[j] = b.d.Labels[i]
	}
	return Batch{Images: b.images[:n*s], Labels: b.labels[:n], N: n, Index: b.order[start : start+n : start+n]}, true
}

// Reset starts a new epoch. With shuffling, the new order is the permutation
// determined by seed; without shuffling, seed is ignored.
func (b *Batcher) Reset(seed int64) {
	b.pos = 0
	if b.shuffle {
		if b.order == nil {
			b.order = make([]int, b.d.N)
		}
		permute(b.order, seed)
	}
}

// Len returns the number of batches in one epoch.
func (b *Batcher) Len() int {
	if b.dropLast {
		return b.d.N / b.batchSize
	}
	return (b.d.N + b.batchSize - 1) / b.batchSize
}
