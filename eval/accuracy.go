// Package eval measures models: accuracy and loss on a dataset, and latency through Meters
// (this machine, a remote device agent, a lookup table, a MACs proxy).
package eval

import (
	"context"
	"fmt"
	"math"

	"github.com/autoprune/autoprune/data"
	"github.com/autoprune/autoprune/nn"
)

// Score is a model's quality on a dataset.
type Score struct {
	Accuracy float64 // fraction of samples whose arg-max logit is the label
	Loss     float64 // mean softmax cross-entropy
	N        int     // samples evaluated
	// Hits says, in dataset order, which samples the arg-max logit got right: two models
	// scored on one dataset compare sample by sample (PairedGap).
	Hits []bool
}

// PairedGap is how much more accurate a is than b on the dataset both were scored on,
// with the standard error of that difference from their sample-by-sample agreement: two
// models that err on the same samples differ by less noise than two independent
// accuracies would (the paired test behind McNemar's). It fails when the two were not
// scored on one dataset.
func PairedGap(a, b Score) (gap, se float64, err error) {
	if len(a.Hits) != len(b.Hits) || len(a.Hits) == 0 {
		return 0, 0, fmt.Errorf("eval: paired gap of scores over %d and %d samples", len(a.Hits), len(b.Hits))
	}
	var win, lose int
	for i, h := range a.Hits {
		switch {
		case h && !b.Hits[i]:
			win++
		case !h && b.Hits[i]:
			lose++
		}
	}
	n := float64(len(a.Hits))
	gap = float64(win-lose) / n
	// The per-sample differences are +1, -1 or 0: their variance over the samples, and the
	// standard error of their mean.
	v := float64(win+lose)/n - gap*gap
	return gap, math.Sqrt(math.Max(v, 0) / n), nil
}

// Accuracy runs the pure-Go forward pass over the whole dataset in batches of batch samples
// (the last batch may be smaller) with the given number of threads, and returns accuracy and
// mean cross-entropy. It checks ctx between batches.
func Accuracy(ctx context.Context, m *nn.Model, ds *data.Dataset, batch, threads int) (Score, error) {
	if ds.N == 0 {
		return Score{}, fmt.Errorf("eval: dataset %s is empty", ds.Name)
	}
	if want := m.Input; want.C != ds.C || want.H != ds.H || want.W != ds.W {
		return Score{}, fmt.Errorf("eval: model %q expects %v inputs, dataset %s has %dx%dx%d",
			m.Name, want, ds.Name, ds.C, ds.H, ds.W)
	}
	if batch <= 0 {
		batch = 256
	}
	if batch > ds.N {
		batch = ds.N
	}
	full, err := nn.NewExecutor(m, batch, nn.Options{Threads: threads})
	if err != nil {
		return Score{}, fmt.Errorf("eval: %w", err)
	}
	var tail *nn.Executor
	if r := ds.N % batch; r != 0 {
		if tail, err = nn.NewExecutor(m, r, nn.Options{Threads: threads}); err != nil {
			return Score{}, fmt.Errorf("eval: %w", err)
		}
	}
	classes := full.OutputShape().Size()
	if classes < ds.Classes {
		return Score{}, fmt.Errorf("eval: model %q has %d outputs, dataset %s has %d classes",
			m.Name, classes, ds.Name, ds.Classes)
	}
	per := ds.C * ds.H * ds.W
	var correct int
	var loss float64
	hits := make([]bool, ds.N)
	for start := 0; start < ds.N; start += batch {
		if err := ctx.Err(); err != nil {
			return Score{}, fmt.Errorf("eval: %w", err)
		}
		n := min(batch, ds.N-start)
		ex := full
		if n != batch {
			ex = tail
		}
		out, err := ex.Forward(ds.Images[start*per : (start+n)*per])
		if err != nil {
			return Score{}, fmt.Errorf("eval: %w", err)
		}
		for i := 0; i < n; i++ {
			logits := out[i*classes : (i+1)*classes]
			label := int(ds.Labels[start+i])
			best := 0
			for k, v := range logits {
				if v > logits[best] {
					best = k
				}
			}
			if best == label {
				correct++
				hits[start+i] = true
			}
			loss += crossEntropy(logits, label)
		}
	}
	return Score{Accuracy: float64(correct) / float64(ds.N), Loss: loss / float64(ds.N), N: ds.N, Hits: hits}, nil
}

func crossEntropy(logits []float32, label int) float64 {
	mx := math.Inf(-1)
	for _, v := range logits {
		mx = math.Max(mx, float64(v))
	}
	var sum float64
	for _, v := range logits {
		sum += math.Exp(float64(v) - mx)
	}
	return mx + math.Log(sum) - float64(logits[label])
}

// Logits runs the model over the whole dataset once and returns every sample's logits in
// dataset order (N x classes): a teacher's outputs for knowledge distillation.
func Logits(ctx context.Context, m *nn.Model, ds *data.Dataset, threads int) ([]float32, error) {
	if want := m.Input; want.C != ds.C || want.H != ds.H || want.W != ds.W {
		return nil, fmt.Errorf("eval: model %q expects %v inputs, dataset %s has %dx%dx%d",
			m.Name, want, ds.Name, ds.C, ds.H, ds.W)
	}
	batch := min(500, max(ds.N, 1))
	ex, err := nn.NewExecutor(m, batch, nn.Options{Threads: threads})
	if err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	per := ds.C * ds.H * ds.W
	classes := ex.OutputShape().Size()
	out := make([]float32, 0, ds.N*classes)
	buf := make([]float32, batch*per)
	for start := 0; start < ds.N; start += batch {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("eval: %w", err)
		}
		n := min(batch, ds.N-start)
		copy(buf, ds.Images[start*per:(start+n)*per])
		clear(buf[n*per:])
		y, err := ex.Forward(buf)
		if err != nil {
			return nil, fmt.Errorf("eval: %w", err)
		}
		out = append(out, y[:n*classes]...)
	}
	return out, nil
}
