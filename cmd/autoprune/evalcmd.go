package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/autoprune/autoprune/data"
	"github.com/autoprune/autoprune/eval"
)

func init() {
	register(&command{name: "eval", summary: "test-set accuracy and measured latency of a model file", run: runEval})
}

func runEval(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("eval", "eval MODEL-FILE [flags]", `
Computes accuracy and loss on the full test set with the pure-Go inference engine, then
measures the forward-pass latency on this machine: warm-up runs, then timed runs, reported
as median, p90, mean and min.

Examples:
  autoprune eval lenet5-mnist.safetensors
  autoprune eval vgg.safetensors --dataset fashion-mnist --latency-batch 32`, stderr)
	dataset := fs.String("dataset", "mnist", "dataset: mnist, fashion-mnist, folder (an image folder: --data-dir) or npy (NumPy arrays: --data-dir)")
	dataDir := fs.String("data-dir", "", "folder with the dataset's files")
	batch := fs.Int("batch", 500, "batch size for the accuracy pass")
	threads := fs.Int("threads", 1, "engine threads (accuracy and latency)")
	latBatch := fs.Int("latency-batch", 1, "batch size for the latency measurement")
	runs := fs.Int("runs", 100, "timed runs for the latency measurement")
	budget := fs.Duration("budget", 5*time.Second, "time limit for the timed runs")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return usagef("eval: want exactly one model file, got %d arguments", len(pos))
	}
	if *batch <= 0 || *threads <= 0 || *latBatch <= 0 || *runs <= 0 {
		return usagef("eval: --batch, --threads, --latency-batch and --runs must be positive")
	}
	m, err := loadModelArg(pos[0])
	if err != nil {
		return asUsage(err)
	}
	_, testSet, err := data.Load(*dataset, *dataDir)
	if err != nil {
		return asUsage(err)
	}
	score, err := eval.Accuracy(ctx, m, testSet, *batch, *threads)
	if err != nil {
		return asUsage(err)
	}
	lat, err := eval.MeasureLocal(ctx, m, *latBatch, *threads, 10, *runs, *budget)
	if err != nil {
		return err
	}
	params, macs, _ := m.Totals()
	fmt.Fprintf(stdout, "model     %s (%d params, %.3f M MACs)\ndataset   %s (%d images)\naccuracy  %.2f %%\nloss      %.4f\nlatency   %s\n",
		m.Name, params, float64(macs)/1e6, testSet.Name, score.N, 100*score.Accuracy, score.Loss, lat)
	return nil
}
