package train

import (
	"context"
	"fmt"
	"math"

	"github.com/autoprune/autoprune/data"
	"github.com/autoprune/autoprune/nn"
)

// StepDistill is Step with knowledge distillation from a teacher: teacher holds the
// teacher's logits for the batch (Batch() x classes). The loss is
// (1-alpha)·CE(student, labels) + alpha·T²·CE(softmax(teacher/T), softmax(student/T)) with
// T = cfg.Temperature and alpha = cfg.DistillWeight. With T = 1 the target is a mix of
// the label and the teacher's probabilities; with T > 1 the term approaches matching the
// teacher's logits on every class, which a pruned student of a few hundred steps cannot
// afford (see Config.Temperature).
func (t *Trainer) StepDistill(x []float32, labels []uint8, teacher []float32) (float64, error) {
	if t.gr == nil {
		return 0, fmt.Errorf("train: Step on a closed Trainer")
	}
	xo := t.gr.loss
	if len(teacher) != len(xo.teacher) {
		return 0, fmt.Errorf("train: %d teacher logits for a batch of %d x %d classes", len(teacher), xo.n, xo.k)
	}
	copy(xo.teacher, teacher)
	xo.distill, xo.temp, xo.alpha = true, t.cfg.Temperature, t.cfg.DistillWeight
	defer func() { xo.distill = false }()
	return t.Step(x, labels)
}

// checkDistill validates the distillation fields of a config.
func (c Config) checkDistill(ds *data.Dataset, classes int) error {
	if c.Teacher == nil {
		return nil
	}
	if len(c.Teacher) != ds.N*classes {
		return fmt.Errorf("train: %d teacher logits for %d samples x %d classes", len(c.Teacher), ds.N, classes)
	}
	if !(c.Temperature >= 1) || math.IsInf(c.Temperature, 0) {
		return fmt.Errorf("train: distillation temperature %v must be at least 1", c.Temperature)
	}
	if !(c.DistillWeight >= 0 && c.DistillWeight <= 1) {
		return fmt.Errorf("train: distillation weight %v must be in [0, 1]", c.DistillWeight)
	}
	return nil
}

// gatherTeacher copies the teacher logits of the batch's samples into dst.
func gatherTeacher(dst, teacher []float32, index []int, classes int) {
	for j, i := range index {
		copy(dst[j*classes:(j+1)*classes], teacher[i*classes:(i+1)*classes])
	}
}

// RecalibrateBN returns a copy of m whose batch-norm running statistics are re-estimated
// from batches training batches of size batch (shuffled by seed): the cumulative average
// of the batch statistics, as PyTorch does with momentum=None. Pruning changes the
// statistics of every layer after a pruned one; recalibrating them costs a few forward
// passes and recovers much of the accuracy before any fine-tuning. Weights are unchanged.
// A model without batch norm is returned as a plain copy.
func RecalibrateBN(ctx context.Context, m *nn.Model, ds *data.Dataset, batches, batch int, seed int64) (*nn.Model, error) {
	hasBN := false
	for _, l := range m.Layers {
		hasBN = hasBN || l.Kind == nn.BatchNorm
	}
	if !hasBN || batches <= 0 {
		return m.Clone(), nil
	}
	if batch <= 0 || ds == nil || ds.N < batch {
		return nil, fmt.Errorf("train: batch-norm recalibration needs at least one batch of %d samples", batch)
	}
	gr, err := build(m, batch, buildOptions{training: true, bnMomentum: 1})
	if err != nil {
		return nil, err
	}
	defer gr.close()
	b := data.NewBatcher(ds, batch, true, seed, true)
	for i := 0; i < batches; i++ {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("train: batch-norm recalibration: %w", err)
		}
		x, ok := b.Next()
		if !ok {
			b.Reset(seed + int64(i))
			if x, ok = b.Next(); !ok {
				break
			}
		}
		for _, op := range gr.bns {
			op.momentum = 1 / float64(i+1)
		}
		if err := gr.run(x.Images, nil); err != nil {
			return nil, err
		}
	}
	return gr.snapshot(), nil
}
