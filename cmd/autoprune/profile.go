package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/autoprune/autoprune/agent"
	"github.com/autoprune/autoprune/eval"
	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/prune"
)

func init() {
	register(&command{name: "profile", summary: "build a per-layer latency lookup table on a device agent", run: runProfile})
}

const defaultRatios = "0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9"

func runProfile(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("profile", "profile --model FILE|zoo:NAME [--agent URL [--token TOKEN]] [--out device-lut.json] [flags]", `
Builds a latency lookup table (LUT) for one model on one device: for every width that
structured pruning at the given ratios can give each prunable group (prune.Keep(size, r)),
it measures every layer whose shape changes, alone, as a single-layer model, on the agent
(or on this machine without --agent). A convolution between two groups is measured for
every combination of its input and output widths. It then measures the model itself and a
few pruned versions in full and stores the median ratio of measured latency to the sum of
the layers' entries as a scale factor: a layer timed alone keeps its weights and input in
cache, inside the whole model it does not.

Everything is measured --passes times, each pass in a new shuffled order, keeping the
fastest measurement: a device busy with other work now and then (a phone's background
tasks, a shared machine) then disturbs the table less.

A search (or "autoprune bench --lut") then predicts a pruned model's latency as the sum of
its layers' entries times that scale, without running it. A layer whose width was not
profiled is an error, never zero: profile with the ratios the search uses.

--lut-check N measures N random per-group plans directly and prints the prediction error
(with --lut FILE it checks an existing table instead of profiling).

Examples:
  autoprune profile --agent http://127.0.0.1:7070 --model zoo:vgg-small --out pixel7-lut.json
  autoprune profile --model vgg.safetensors --ratios 0,0.25,0.5,0.75 --out here-lut.json
  autoprune profile --agent http://127.0.0.1:7070 --model zoo:vgg-small --lut pixel7-lut.json --lut-check 20`, stderr)
	agentURL := fs.String("agent", "", "URL of a latency agent; default: measure on this machine")
	token := fs.String("token", "", "the agent's token (default $"+agent.TokenEnv+")")
	model := fs.String("model", "", "model file or zoo:NAME whose pruned variants to profile (required)")
	ratiosFlag := fs.String("ratios", defaultRatios, "pruning ratios the search may use, comma separated, each in [0, 1)")
	out := fs.String("out", "device-lut.json", "lookup table to write")
	resume := fs.Bool("resume", false, "keep the entries of an existing --out table and measure only the missing ones")
	lutIn := fs.String("lut", "", "check this existing table instead of profiling (with --lut-check)")
	check := fs.Int("lut-check", 0, "measure this many random per-group plans directly and report the prediction error")
	calib := fs.Int("calibrate", 4, "random plans measured in full (besides the model itself) to fit the scale factor")
	seed := fs.Int64("seed", 1, "seed of the random plans and of the measuring order")
	passes := fs.Int("passes", 3, "measure every shape (and checked plan) this many times, keeping the fastest: steadier on a busy device")
	batch := fs.Int("batch", 1, "samples per forward pass")
	threads := fs.Int("threads", 1, "engine threads")
	warmup := fs.Int("warmup", 5, "untimed passes before each measurement")
	runs := fs.Int("runs", 50, "timed passes per measurement")
	budget := fs.Duration("budget", time.Second, "time limit for the timed passes of one measurement")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("profile: unexpected argument %q (the model goes in --model)", pos[0])
	}
	switch {
	case *model == "":
		return usagef("profile: --model is required (a model file or zoo:NAME)")
	case *batch <= 0 || *threads <= 0 || *runs <= 0 || *warmup < 0 || *budget <= 0:
		return usagef("profile: --batch, --threads, --runs and --budget must be positive and --warmup not negative")
	case *check < 0 || *calib < 0:
		return usagef("profile: --lut-check and --calibrate must not be negative")
	case *passes < 1 || *passes > 100:
		return usagef("profile: --passes %d: want 1..100", *passes)
	case *lutIn != "" && *check == 0:
		return usagef("profile: --lut only makes sense with --lut-check N")
	}
	ratios, err := parseProfileRatios(*ratiosFlag)
	if err != nil {
		return usagef("profile: --ratios: %v", err)
	}
	m, err := loadModelArg(*model)
	if err != nil {
		return asUsage(err)
	}
	gs, err := prune.Groups(m)
	if err != nil {
		return asUsage(fmt.Errorf("profile: %w", err))
	}

	// Every shape is measured once anyway; calibration measures models twice on purpose, so
	// the meter does not cache.
	var meter eval.Meter
	var dev eval.Device
	if *agentURL != "" {
		rm, err := remoteMeter(*agentURL, *token)
		if err != nil {
			return err
		}
		rm.Batch, rm.Threads, rm.Warmup, rm.Runs, rm.Budget = *batch, *threads, *warmup, *runs, *budget
		info, err := rm.Info(ctx)
		if err != nil {
			return err
		}
		dev = info.Device
		meter = eval.MeterFunc(func(ctx context.Context, m *nn.Model) (eval.Latency, error) {
			res, err := rm.MeasureResponse(ctx, m)
			return res.Latency, err
		})
	} else {
		dev = eval.ThisDevice()
		meter = eval.MeterFunc(func(ctx context.Context, m *nn.Model) (eval.Latency, error) {
			return eval.MeasureLocal(ctx, m, *batch, *threads, max(*warmup, 1), *runs, *budget)
		})
	}
	fmt.Fprintf(stderr, "profile: %s on %s, batch %d, %d thread(s)\n", m.Name, dev, *batch, *threads)

	pr := &eval.Profiler{Meter: meter, Model: m, Groups: gs, Ratios: ratios, Device: dev, Batch: *batch, Threads: *threads,
		Passes: *passes, Seed: *seed, Log: stderr}
	var table *eval.LUT
	if *lutIn != "" {
		if table, err = eval.LoadLUT(*lutIn); err != nil {
			return asUsage(err)
		}
		if table.Batch != *batch || table.Threads != *threads {
			return usagef("profile: %s was profiled at batch %d, %d thread(s); give --batch %d --threads %d",
				*lutIn, table.Batch, table.Threads, table.Batch, table.Threads)
		}
		if table.Device != dev {
			fmt.Fprintf(stderr, "profile: warning: %s was profiled on %s, checking on %s\n", *lutIn, table.Device, dev)
		}
	} else {
		if table, err = pr.Build(ctx, *out, *resume, *calib); err != nil {
			if errors.Is(err, eval.ErrLUTSetting) || errors.Is(err, eval.ErrLUTFormat) {
				return usagef("profile: --resume: %v", err)
			}
			return err
		}
		fmt.Fprintf(stdout, "wrote %s: %d entries, scale %.3f (whole model / sum of layers)\n", *out, len(table.Entries), table.Scale)
	}
	if *check > 0 {
		return pr.Check(ctx, stdout, table, *check)
	}
	return nil
}

// parseProfileRatios reads a comma-separated list of ratios in [0, 1), sorted and without repeats.
func parseProfileRatios(s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		r, err := strconv.ParseFloat(f, 64)
		if err != nil || !(r >= 0 && r < 1) {
			return nil, fmt.Errorf("%q is not a ratio in [0, 1)", f)
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, errors.New("no ratios")
	}
	sort.Float64s(out)
	j := 0
	for i, r := range out {
		if i == 0 || r != out[j-1] {
			out[j] = r
			j++
		}
	}
	return out[:j], nil
}
