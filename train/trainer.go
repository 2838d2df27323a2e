package train

import (
	"fmt"
	"math"

	"github.com/autoprune/autoprune/internal/kernel"
	"github.com/autoprune/autoprune/nn"
)

// Trainer holds a model's training graph for one batch size, its weights and optimizer
// state. It is the building block of Train and of fine-tuning loops: feed it full batches
// with Step, read the weights with Model. A Trainer is not safe for concurrent use.
//
// Weight masks (nn.Layer.Mask) are honoured: the graph uses Weight*Mask, masked weights get
// zero gradients and are set to exactly zero after every step.
type Trainer struct {
	cfg   Config
	gr    *graph
	steps int
	fixed bool    // SetLR replaced the schedule
	lr    float64 // the rate set by SetLR
}

// NewTrainer validates m and builds its training graph for batches of batch samples: batch
// norm uses batch statistics and updates the running ones. The trainer works on a copy: m
// is not modified. cfg supplies the optimizer, learning rate and schedule, momentum, weight
// decay and batch-norm momentum (zero fields take their defaults): step i (from 0) uses
// the rate cfg.LRAt(i, cfg.Steps), so with the cosine schedule and cfg.Steps > 0 the rate
// decays to 0 over cfg.Steps steps; otherwise it stays cfg.LR. The epoch, seed and
// progress fields are for Train and are ignored here.
func NewTrainer(m *nn.Model, batch int, cfg Config) (*Trainer, error) {
	cfg.BatchSize = batch
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	gr, err := build(m, batch, buildOptions{training: true, loss: true, bnMomentum: cfg.BNMomentum})
	if err != nil {
		return nil, err
	}
	return &Trainer{cfg: cfg, gr: gr}, nil
}

// Batch returns the batch size the trainer was built for.
func (t *Trainer) Batch() int { return t.gr.batch }

// Steps returns the number of optimizer steps taken so far.
func (t *Trainer) Steps() int { return t.steps }

// LR returns the learning rate of the next step.
func (t *Trainer) LR() float64 {
	if t.fixed {
		return t.lr
	}
	return t.cfg.LRAt(t.steps, t.cfg.Steps)
}

// SetLR replaces the schedule: the following steps use the rate lr.
func (t *Trainer) SetLR(lr float64) { t.fixed, t.lr = true, lr }

// Step runs one forward and backward pass on a full batch (x holds Batch() samples in NCHW
// order, labels their classes) and updates the weights. It returns the batch's mean
// cross-entropy before the update. A NaN or infinite loss is an error and leaves the
// weights unchanged (the batch-norm running statistics have then seen the batch).
func (t *Trainer) Step(x []float32, labels []uint8) (loss float64, err error) {
	if t.gr == nil {
		return 0, fmt.Errorf("train: Step on a closed Trainer")
	}
	if len(labels) != t.gr.batch {
		return 0, fmt.Errorf("train: %d labels for a batch of %d", len(labels), t.gr.batch)
	}
	if err := t.gr.run(x, labels); err != nil {
		return 0, err
	}
	loss = t.gr.loss.loss
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		for _, p := range t.gr.params {
			if g, err := t.gr.gradOf(p); err == nil {
				clear(g)
			}
		}
		return loss, fmt.Errorf("train: step %d: loss is %v", t.steps+1, loss)
	}
	lr := t.LR()
	t.steps++
	if err := t.update(lr); err != nil {
		return loss, err
	}
	return loss, nil
}

// update applies one optimizer step with learning rate rate and the gradients of the last
// run, clears them and re-applies the weight masks.
func (t *Trainer) update(rate float64) error {
	lr := float32(rate)
	wd := float32(t.cfg.WeightDecay)
	adam := t.cfg.Optimizer == "adam"
	const beta1, beta2, eps = 0.9, 0.999, 1e-8
	c1 := float32(1 / (1 - math.Pow(beta1, float64(t.steps))))
	c2 := float32(1 / (1 - math.Pow(beta2, float64(t.steps))))
	mu := float32(t.cfg.Momentum)
	ap := kernel.AdamParams{B1: beta1, NB1: 1 - beta1, B2: beta2, NB2: 1 - beta2, LR: lr, C1: c1, C2: c2, Eps: eps}
	for _, p := range t.gr.params {
		g, err := t.gr.gradOf(p)
		if err != nil {
			return err
		}
		if p.m == nil {
			p.m = make([]float32, len(p.data))
			if adam {
				p.v = make([]float32, len(p.data))
			}
		}
		w, m, v := p.data, p.m, p.v
		d := float32(0)
		if p.decay {
			d = wd
		}
		if adam {
			// PyTorch Adam (L2 decay added to the gradient), bias-corrected moments.
			ap.Decay = d
			kernel.Adam(w, g, m, v, &ap)
		} else {
			// PyTorch SGD with momentum: buf = mu*buf + g; w -= lr*buf.
			for i, gi := range g {
				gi += d * w[i]
				mi := mu*m[i] + gi
				m[i] = mi
				w[i] -= lr * mi
			}
		}
		clear(g)
		applyMask(w, p.mask)
	}
	return nil
}

// Model returns a new model holding the current weights and batch-norm running statistics.
func (t *Trainer) Model() *nn.Model {
	if t.gr == nil {
		return nil
	}
	return t.gr.snapshot()
}

// Close releases the graph. The trainer cannot be used afterwards; Close may be called
// more than once.
func (t *Trainer) Close() {
	if t.gr != nil {
		t.gr.close()
		t.gr = nil
	}
}

// Gradients returns the mean cross-entropy of m on the n samples in x (NCHW) with the given
// labels, and its gradient with respect to every parameter, keyed "<layer>.<param>" with
// nn's parameter names (weight, bias, gamma, beta) and laid out as in nn. Batch norm runs in
// training mode (batch statistics). Gradients of masked weights are zero. m is not
// modified.
func Gradients(m *nn.Model, x []float32, labels []uint8, n int) (loss float64, grads map[string][]float32, err error) {
	gr, err := build(m, n, buildOptions{training: true, loss: true, bnMomentum: 0.1})
	if err != nil {
		return 0, nil, err
	}
	defer gr.close()
	if err := gr.run(x, labels); err != nil {
		return 0, nil, err
	}
	grads = make(map[string][]float32, len(gr.params))
	for _, p := range gr.params {
		g, err := gr.gradOf(p)
		if err != nil {
			return 0, nil, err
		}
		grads[p.name] = append([]float32(nil), g...)
	}
	return gr.loss.loss, grads, nil
}

// Forward runs m in inference mode (batch norm with its running statistics) on the n
// samples in x (NCHW) and returns the n x classes logits. It builds a gorgonia graph for
// the call; it exists to cross-check other engines.
func Forward(m *nn.Model, x []float32, n int) ([]float32, error) {
	gr, err := build(m, n, buildOptions{})
	if err != nil {
		return nil, err
	}
	defer gr.close()
	if err := gr.run(x, nil); err != nil {
		return nil, err
	}
	out, err := f32(gr.logits.Value(), n*gr.classes, "logits")
	if err != nil {
		return nil, err
	}
	return append([]float32(nil), out...), nil
}
