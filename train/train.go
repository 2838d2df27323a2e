// Package train trains nn models with gorgonia: it builds an expression graph from an
// nn.Model once per batch size, runs forward and backward passes on a tape machine, and
// updates the weights with Adam or SGD with momentum. It is the only package of autoprune
// that imports gorgonia.
//
// Every nn layer kind is supported, including grouped and depthwise convolutions, residual
// additions and batch norm in training mode (batch statistics, running-statistic updates
// with PyTorch's momentum convention) and inference mode (running statistics). Pooling
// follows PyTorch: max pooling ignores padding, average pooling counts padding in its
// divisor. Weight masks are honoured: the graph uses Weight*Mask and masked weights stay
// exactly zero.
//
// Training is deterministic: the same model, data, configuration and seed give the same
// weights bit for bit, whatever the number of threads.
package train

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/autoprune/autoprune/data"
	"github.com/autoprune/autoprune/nn"
)

// Optimizers are the values of Config.Optimizer.
var Optimizers = []string{"adam", "sgd"}

// Schedules are the values of Config.Schedule.
var Schedules = []string{"constant", "cosine"}

// Config configures training. Zero fields take their defaults.
type Config struct {
	// Epochs is the number of full passes over the data (default 1).
	Epochs int
	// Steps, if positive, stops training after this many optimizer steps; it overrides
	// Epochs. For a Trainer it is the length of the learning-rate schedule.
	Steps int
	// BatchSize is the number of samples per step (default 64). The last partial batch of
	// each epoch is dropped: graph shapes are static.
	BatchSize int
	// Optimizer is one of Optimizers: "adam" (default) or "sgd" (SGD with momentum).
	Optimizer string
	// LR is the peak learning rate (default 1e-3 for adam, 0.05 for sgd).
	LR float64
	// Schedule is one of Schedules: "constant" (default) or "cosine": the learning rate decays from LR to 0
	// along a half cosine over the run.
	Schedule string
	// Momentum is the SGD momentum (default 0.9).
	Momentum float64
	// WeightDecay is the L2 penalty added to the gradients of Conv2D and Linear weights
	// (not biases or batch-norm parameters); default 0.
	WeightDecay float64
	// BNMomentum is the batch-norm running-statistic update rate, PyTorch convention:
	// running = (1-BNMomentum)*running + BNMomentum*batch (default 0.1).
	BNMomentum float64
	// Seed determines the order of the samples in every epoch.
	Seed int64
	// Progress, if set, is called every LogEvery steps and at the end of every epoch.
	Progress func(Progress)
	// LogEvery is the number of steps between Progress calls (0: only at epoch ends).
	LogEvery int

	// Teacher, if set, turns on knowledge distillation in Train: it holds a teacher's
	// logits for every sample of the dataset (N x classes, in dataset order); see
	// Trainer.StepDistill for the loss.
	Teacher []float32
	// Temperature softens both distributions for distillation (default 1). Higher
	// temperatures make the student match the teacher's logits on every class, not its
	// decision: in short fine-tunes of pruned models they cost accuracy (at 4, 0.6 to 15
	// points below labels alone on Fashion-MNIST), while 1 is as good or better.
	Temperature float64
	// DistillWeight is the weight alpha of the distillation term in [0, 1] (default 0.7).
	DistillWeight float64

	// Prune, if set, prunes the model during training (dynamic pruning): after every
	// optimizer step for which Prune.At is true, Train hands the current model to
	// Prune.Apply and continues training the model it returns (with new masks, or smaller
	// after structured pruning). The optimizer state starts afresh on the new model; the
	// learning-rate schedule continues.
	Prune PruneHook
}

// PruneHook prunes a model at chosen steps during training.
type PruneHook interface {
	At(step int) bool
	Apply(step int, m *nn.Model) (*nn.Model, error)
}

// Progress reports the state of a training run.
type Progress struct {
	Epoch, Epochs int           // current epoch (from 1) and number of epochs
	Step, Steps   int           // optimizer steps done and planned
	Loss          float64       // mean training loss since the previous report
	ImagesPerSec  float64       // training throughput since the start
	Elapsed       time.Duration // time since the start
}

// Result summarises a training run.
type Result struct {
	Steps        int           // optimizer steps taken
	FinalLoss    float64       // mean training loss over the steps of the last epoch
	Elapsed      time.Duration // wall time of the run
	ImagesPerSec float64       // training throughput
}

// withDefaults fills in the defaults and checks the fields.
func (c Config) withDefaults() (Config, error) {
	if c.Epochs == 0 {
		c.Epochs = 1
	}
	if c.BatchSize == 0 {
		c.BatchSize = 64
	}
	if c.Optimizer == "" {
		c.Optimizer = "adam"
	}
	if c.Schedule == "" {
		c.Schedule = "constant"
	}
	if c.LR == 0 {
		c.LR = 1e-3
		if c.Optimizer == "sgd" {
			c.LR = 0.05
		}
	}
	if c.Momentum == 0 {
		c.Momentum = 0.9
	}
	if c.BNMomentum == 0 {
		c.BNMomentum = 0.1
	}
	if c.Temperature == 0 {
		c.Temperature = 1
	}
	if c.DistillWeight == 0 {
		c.DistillWeight = 0.7
	}
	switch {
	case !slices.Contains(Optimizers, c.Optimizer):
		return c, fmt.Errorf("train: optimizer %q: want %s", c.Optimizer, strings.Join(Optimizers, " or "))
	case !slices.Contains(Schedules, c.Schedule):
		return c, fmt.Errorf("train: schedule %q: want %s", c.Schedule, strings.Join(Schedules, " or "))
	case c.Epochs < 0 || c.Steps < 0 || c.BatchSize < 0 || c.LogEvery < 0:
		return c, fmt.Errorf("train: epochs (%d), steps (%d), batch size (%d) and log interval (%d) must not be negative",
			c.Epochs, c.Steps, c.BatchSize, c.LogEvery)
	case !(c.LR > 0) || math.IsInf(c.LR, 0):
		return c, fmt.Errorf("train: learning rate %v must be positive", c.LR)
	case !(c.Momentum >= 0 && c.Momentum < 1):
		return c, fmt.Errorf("train: momentum %v must be in [0, 1)", c.Momentum)
	case !(c.WeightDecay >= 0) || math.IsInf(c.WeightDecay, 0):
		return c, fmt.Errorf("train: weight decay %v must not be negative", c.WeightDecay)
	case !(c.BNMomentum > 0 && c.BNMomentum <= 1):
		return c, fmt.Errorf("train: batch-norm momentum %v must be in (0, 1]", c.BNMomentum)
	}
	return c, nil
}

// LRAt returns the learning rate of step (counted from 0) of a run of total steps: LR
// (or its default) with the constant schedule, LR·(1+cos(π·step/total))/2 with the cosine
// one.
func (c Config) LRAt(step, total int) float64 {
	d, err := c.withDefaults()
	if err != nil {
		d = c
	}
	if d.Schedule != "cosine" || total <= 0 {
		return d.LR
	}
	f := math.Min(1, math.Max(0, float64(step)/float64(total)))
	return d.LR * 0.5 * (1 + math.Cos(math.Pi*f))
}

// epochSeed derives the shuffling seed of an epoch from the run's seed.
func epochSeed(seed int64, epoch int) int64 {
	z := uint64(seed) + uint64(epoch+1)*0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return int64(z ^ (z >> 31))
}

// Train returns a new model trained on ds; m is never modified. Every epoch visits the
// samples in an order determined by cfg.Seed and the epoch number, in batches of
// cfg.BatchSize; the last partial batch of each epoch is dropped. Train checks ctx before
// every step: when it is cancelled, Train returns a nil model and an error wrapping
// ctx.Err(). A NaN or infinite loss is an error naming the step.
func Train(ctx context.Context, m *nn.Model, ds *data.Dataset, cfg Config) (*nn.Model, Result, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, Result{}, err
	}
	if ds == nil || ds.N == 0 {
		return nil, Result{}, fmt.Errorf("train: empty dataset")
	}
	if in := m.Input; in.C != ds.C || in.H != ds.H || in.W != ds.W {
		return nil, Result{}, fmt.Errorf("train: model %q expects %v inputs, dataset %s has %dx%dx%d",
			m.Name, in, ds.Name, ds.C, ds.H, ds.W)
	}
	perEpoch := ds.N / cfg.BatchSize
	if perEpoch == 0 {
		return nil, Result{}, fmt.Errorf("train: dataset %s has %d samples, fewer than the batch size %d",
			ds.Name, ds.N, cfg.BatchSize)
	}
	total, epochs := cfg.Epochs*perEpoch, cfg.Epochs
	if cfg.Steps > 0 {
		total, epochs = cfg.Steps, (cfg.Steps+perEpoch-1)/perEpoch
	}
	tcfg := cfg
	tcfg.Steps = total // the schedule spans the whole run
	t, err := NewTrainer(m, cfg.BatchSize, tcfg)
	if err != nil {
		return nil, Result{}, err
	}
	defer func() { t.Close() }()
	if t.gr.classes < ds.Classes {
		return nil, Result{}, fmt.Errorf("train: model %q has %d outputs, dataset %s has %d classes",
			m.Name, t.gr.classes, ds.Name, ds.Classes)
	}

	if err := cfg.checkDistill(ds, t.gr.classes); err != nil {
		return nil, Result{}, err
	}
	teach := make([]float32, cfg.BatchSize*t.gr.classes)

	start := time.Now()
	batches := data.NewBatcher(ds, cfg.BatchSize, true, epochSeed(cfg.Seed, 0), true)
	var res Result
	var winLoss float64 // loss summed since the last report
	var winSteps int
	report := func(epoch int) {
		if cfg.Progress == nil || winSteps == 0 {
			return
		}
		el := time.Since(start)
		cfg.Progress(Progress{Epoch: epoch, Epochs: epochs, Step: t.steps, Steps: total,
			Loss: winLoss / float64(winSteps), ImagesPerSec: float64(t.steps*cfg.BatchSize) / el.Seconds(),
			Elapsed: el})
		winLoss, winSteps = 0, 0
	}
	for epoch := 1; epoch <= epochs && t.steps < total; epoch++ {
		if epoch > 1 {
			batches.Reset(epochSeed(cfg.Seed, epoch-1))
		}
		var epochLoss float64
		var epochSteps int
		for t.steps < total {
			if err := ctx.Err(); err != nil {
				return nil, Result{}, fmt.Errorf("train: stopped after %d of %d steps: %w", t.steps, total, err)
			}
			b, ok := batches.Next()
			if !ok {
				break
			}
			var loss float64
			if cfg.Teacher != nil {
				gatherTeacher(teach, cfg.Teacher, b.Index, t.gr.classes)
				loss, err = t.StepDistill(b.Images, b.Labels, teach)
			} else {
				loss, err = t.Step(b.Images, b.Labels)
			}
			if err != nil {
				return nil, Result{}, err
			}
			epochLoss += loss
			epochSteps++
			winLoss += loss
			winSteps++
			if cfg.LogEvery > 0 && t.steps%cfg.LogEvery == 0 {
				report(epoch)
			}
			if cfg.Prune != nil && cfg.Prune.At(t.steps) {
				if t, err = repruned(t, cfg.Prune, tcfg); err != nil {
					return nil, Result{}, err
				}
			}
		}
		report(epoch)
		if epochSteps > 0 {
			res.FinalLoss = epochLoss / float64(epochSteps)
		}
	}
	res.Steps = t.steps
	res.Elapsed = time.Since(start)
	res.ImagesPerSec = float64(res.Steps*cfg.BatchSize) / res.Elapsed.Seconds()
	return t.Model(), res, nil
}

// repruned applies a pruning hook to the trainer's model and returns a trainer for the
// result that continues the step count (and so the learning-rate schedule).
func repruned(t *Trainer, h PruneHook, cfg Config) (*Trainer, error) {
	m, err := h.Apply(t.steps, t.Model())
	if err != nil {
		return t, fmt.Errorf("train: pruning at step %d: %w", t.steps, err)
	}
	nt, err := NewTrainer(m, t.Batch(), cfg)
	if err != nil {
		return t, fmt.Errorf("train: after pruning at step %d: %w", t.steps, err)
	}
	nt.steps, nt.fixed, nt.lr = t.steps, t.fixed, t.lr
	t.Close()
	return nt, nil
}
