package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/autoprune/autoprune/data"
	"github.com/autoprune/autoprune/eval"
	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/nn/onnx"
	"github.com/autoprune/autoprune/nn/zoo"
	"github.com/autoprune/autoprune/prune"
	"github.com/autoprune/autoprune/train"
)

func init() {
	register(&command{name: "train", summary: "train a zoo model on MNIST or Fashion-MNIST and save it", run: runTrain})
}

func runTrain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("train", "train [flags]", `
Trains a network from the model zoo (or continues from a model file) on a dataset with
gorgonia, reports test accuracy with the pure-Go engine, and saves a model file
(safetensors: the weights are readable by other tools, the architecture is in its metadata).

Models: `+strings.Join(zoo.Names, ", ")+`
Datasets: mnist (built in), fashion-mnist (apt-get install dataset-fashion-mnist, or --data-dir)

Examples:
  autoprune train                                   # lenet5 on MNIST, 3 epochs
  autoprune train --model vgg-small --dataset fashion-mnist --epochs 5 --out vgg.safetensors
  autoprune train --init vgg.safetensors --epochs 1 --lr 1e-4 --out vgg2.safetensors

Fine-tuning a pruned model with knowledge distillation from the dense one (what a search
does to every candidate): the loss mixes the labels with the teacher's outputs,
(1-w)·CE(labels) + w·T²·CE(teacher/T, student/T). Temperature 1 suits short fine-tunes of
pruned students; higher temperatures match the teacher's logits on every class and cost
accuracy there (docs/BENCHMARKS.md).
  autoprune prune vgg.safetensors --uniform 0.5 --out half.safetensors
  autoprune train --init half.safetensors --dataset fashion-mnist --steps 937 --teacher vgg.safetensors

Pruning during training (dynamic, gradual pruning): the model is pruned at scheduled steps
between --prune-start and --prune-end (fractions of the run) and keeps training, so the
remaining weights adapt. Unstructured pruning masks weights (smaller files once compressed,
no speed-up on dense hardware); structured pruning removes channels (smaller and faster).
  autoprune train --model mlp --prune unstructured --sparsity 0.92 --schedule agp --epochs 6
  autoprune train --model vgg-small --dataset fashion-mnist --prune structured --sparsity 0.5 --schedule iterative`, stderr)
	model := fs.String("model", "lenet5", "zoo model to train (ignored with --init)")
	initFile := fs.String("init", "", "start from this model file instead of a fresh zoo model")
	dataset := fs.String("dataset", "mnist", "dataset: mnist, fashion-mnist, folder (an image folder: --data-dir) or npy (NumPy arrays: --data-dir)")
	dataDir := fs.String("data-dir", "", "folder with the dataset's IDX files (default: built-in MNIST, /usr/share/datasets/fashion-mnist)")
	epochs := fs.Int("epochs", 3, "passes over the training set")
	steps := fs.Int("steps", 0, "stop after this many optimizer steps (overrides --epochs when > 0)")
	batch := fs.Int("batch", 64, "mini-batch size")
	optimizer := fs.String("optimizer", "adam", "optimizer: adam or sgd (with momentum 0.9)")
	lr := fs.Float64("lr", 0, "learning rate (default 1e-3 for adam, 0.05 for sgd)")
	schedule := fs.String("lr-schedule", "cosine", "learning-rate schedule: constant or cosine")
	pruneMode := fs.String("prune", "none", "prune during training: none, unstructured (weights) or structured (channels)")
	sparsity := fs.Float64("sparsity", 0.9, "with --prune: final fraction of weights (unstructured) or of each group's channels (structured) removed")
	pruneSchedule := fs.String("schedule", "agp", "with --prune: oneshot, iterative or agp (Zhu & Gupta's cubic gradual schedule)")
	pruneStart := fs.Float64("prune-start", 0.1, "with --prune: first pruning step, as a fraction of the run")
	pruneEnd := fs.Float64("prune-end", 0.7, "with --prune: last pruning step, as a fraction of the run (then the model fine-tunes)")
	pruneEvents := fs.Int("prune-events", 10, "with --prune: pruning steps for iterative and agp")
	scope := fs.String("scope", "global", "with --prune unstructured: rank weights per layer (layer) or across layers (global)")
	criterion := fs.String("criterion", "l1", "with --prune structured: channel importance ("+strings.Join(prune.CriterionNames, ", ")+")")
	wd := fs.Float64("weight-decay", 0, "L2 weight decay")
	teacher := fs.String("teacher", "", "distil from this model file (usually the dense model a pruned --init came from)")
	temperature := fs.Float64("temperature", 1, "with --teacher: distillation temperature (at least 1)")
	distillWeight := fs.Float64("distill-weight", 0.7, "with --teacher: weight of the distillation term in (0, 1]")
	seed := fs.Int64("seed", 1, "seed for initial weights and shuffling: the same seed gives the same model")
	out := fs.String("out", "", "output model file (default MODEL-DATASET.safetensors)")
	threads := fs.Int("threads", 2, "threads for the test-set evaluation")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("train: unexpected argument %q (all options are flags; see --help)", pos[0])
	}
	switch {
	case *epochs <= 0 && *steps <= 0:
		return usagef("train: --epochs must be positive (got %d)", *epochs)
	case *batch <= 0:
		return usagef("train: --batch must be positive (got %d)", *batch)
	case *lr < 0:
		return usagef("train: --lr must not be negative (got %g)", *lr)
	case !slices.Contains(train.Optimizers, *optimizer):
		return usagef("train: --optimizer %q: want %s", *optimizer, strings.Join(train.Optimizers, " or "))
	case !slices.Contains(train.Schedules, *schedule):
		return usagef("train: --lr-schedule %q: want %s", *schedule, strings.Join(train.Schedules, " or "))
	case *pruneMode != "none" && *pruneMode != "unstructured" && *pruneMode != "structured":
		return usagef("train: --prune %q: want none, unstructured or structured", *pruneMode)
	case !(*pruneStart >= 0 && *pruneStart <= *pruneEnd && *pruneEnd <= 1):
		return usagef("train: want 0 <= --prune-start <= --prune-end <= 1 (got %v, %v)", *pruneStart, *pruneEnd)
	case !(*temperature >= 1 && *temperature <= 100):
		return usagef("train: --temperature %v: want 1..100", *temperature)
	case !(*distillWeight > 0 && *distillWeight <= 1):
		return usagef("train: --distill-weight %v: want a weight in (0, 1] (leave out --teacher for labels only)", *distillWeight)
	}
	trainSet, testSet, err := data.Load(*dataset, *dataDir)
	if err != nil {
		return asUsage(err)
	}
	var m *nn.Model
	if *initFile != "" {
		if m, err = onnx.LoadFile(*initFile); err != nil {
			return asUsage(err)
		}
	} else {
		shape := nn.Shape{C: trainSet.C, H: trainSet.H, W: trainSet.W}
		if m, err = zoo.Build(*model, shape, trainSet.Classes, *seed); err != nil {
			return asUsage(err)
		}
	}
	if in := m.Input; in.C != trainSet.C || in.H != trainSet.H || in.W != trainSet.W {
		return usagef("train: model %s expects %v inputs, the data (%s) has %dx%dx%d images", m.Name, in, trainSet.Name, trainSet.C, trainSet.H, trainSet.W)
	}
	if trainSet.N < *batch {
		return usagef("train: the data (%s) has %d samples, fewer than one batch of %d (lower --batch)", trainSet.Name, trainSet.N, *batch)
	}
	if *out == "" {
		*out = fmt.Sprintf("%s-%s.safetensors", m.Name, *dataset)
	}
	if err := writableFile("train: --out", *out); err != nil {
		return err
	}
	params, macs, err := m.Totals()
	if err != nil {
		return asUsage(err)
	}
	fmt.Fprintf(stderr, "training %s (%d params, %.2f M MACs) on %s: %d samples, batch %d\n",
		m.Name, params, float64(macs)/1e6, trainSet.Name, trainSet.N, *batch)
	cfg := train.Config{
		Epochs: *epochs, Steps: *steps, BatchSize: *batch, Optimizer: *optimizer, LR: *lr,
		Schedule: *schedule, WeightDecay: *wd, Seed: *seed, LogEvery: 100,
		Progress: func(p train.Progress) {
			fmt.Fprintf(stderr, "  epoch %d/%d  step %d/%d  loss %.4f  %.0f img/s  %s\n",
				p.Epoch, p.Epochs, p.Step, p.Steps, p.Loss, p.ImagesPerSec, p.Elapsed.Round(time.Second))
		},
	}
	if *teacher != "" {
		tm, err := onnx.LoadFile(*teacher)
		if err != nil {
			return asUsage(fmt.Errorf("train: --teacher: %w", err))
		}
		if cfg.Teacher, err = eval.Logits(ctx, tm, trainSet, *threads); err != nil {
			return asUsage(fmt.Errorf("train: --teacher %s: %w", *teacher, err))
		}
		if len(cfg.Teacher) != trainSet.N*trainSet.Classes {
			return usagef("train: --teacher %s has %d outputs per sample, the dataset %d classes", *teacher, len(cfg.Teacher)/trainSet.N, trainSet.Classes)
		}
		cfg.Temperature, cfg.DistillWeight = *temperature, *distillWeight
		fmt.Fprintf(stderr, "distilling from %s (temperature %g, weight %g)\n", *teacher, *temperature, *distillWeight)
	}
	if *pruneMode != "none" {
		total := *steps
		if total <= 0 {
			total = *epochs * (trainSet.N / *batch)
		}
		sched := prune.Schedule{Kind: *pruneSchedule, Final: *sparsity, Events: *pruneEvents,
			Start: int(*pruneStart * float64(total)), End: int(*pruneEnd * float64(total))}
		if err := sched.Validate(); err != nil {
			return asUsage(fmt.Errorf("train: %w", err))
		}
		c, err := prune.NewCriterion(*criterion, *seed)
		if err != nil {
			return asUsage(fmt.Errorf("train: %w", err))
		}
		if *scope != string(prune.Global) && *scope != string(prune.PerLayer) {
			return usagef("train: --scope %q: want global or layer", *scope)
		}
		cfg.Prune = &prune.Gradual{Schedule: sched, Structured: *pruneMode == "structured", Scope: prune.Scope(*scope), Criterion: c}
		fmt.Fprintf(stderr, "pruning (%s, %s schedule) to %.0f %% between steps %d and %d of %d\n",
			*pruneMode, sched.Kind, 100**sparsity, sched.Start, sched.End, total)
	}
	trained, res, err := train.Train(ctx, m, trainSet, cfg)
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	if *pruneMode == "unstructured" {
		_, sp := prune.Sparsity(trained)
		fmt.Fprintf(stdout, "sparsity   %.2f %% of conv/linear weights are zero (masked)\n", 100*sp)
	}
	if *pruneMode == "structured" {
		p0, m0, _ := m.Totals()
		p1, m1, _ := trained.Totals()
		fmt.Fprintf(stdout, "pruned     params %d -> %d, MACs %d -> %d\n", p0, p1, m0, m1)
	}
	score, err := eval.Accuracy(ctx, trained, testSet, 500, *threads)
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	if err := onnx.SaveFile(*out, trained); err != nil {
		return fmt.Errorf("train: %w", err)
	}
	fmt.Fprintf(stdout, "model      %s\ndataset    %s (test set, %d images)\naccuracy   %.2f %%\ntest loss  %.4f\ntraining   %d steps in %s (%.0f img/s)\nsaved      %s\n",
		trained.Name, testSet.Name, score.N, 100*score.Accuracy, score.Loss, res.Steps,
		res.Elapsed.Round(time.Second), res.ImagesPerSec, *out)
	return nil
}

// loadModelArg loads the model file named by a positional argument, or builds a zoo model
// when the argument has the form "zoo:NAME".
func loadModelArg(arg string) (*nn.Model, error) {
	if name, ok := strings.CutPrefix(arg, "zoo:"); ok {
		return zoo.Build(name, nn.Shape{C: 1, H: 28, W: 28}, 10, 1)
	}
	if _, err := os.Stat(arg); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("model file %s: no such file (train one with \"autoprune train\", or use zoo:NAME)", arg)
	}
	return onnx.LoadFile(arg)
}
