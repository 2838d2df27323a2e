package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/autoprune/autoprune/eval"
	"github.com/autoprune/autoprune/nn"
)

func init() {
	register(&command{name: "bench", summary: "measure a model's latency here or on a device agent", run: runBench})
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("bench", "bench MODEL-FILE | zoo:NAME [--agent URL [--token TOKEN]] [flags]", `
Measures the latency of a model's forward pass: warm-up passes, then timed passes,
reported as median, p90, mean and min. Without --agent it measures on this machine; with
--agent it sends the architecture (not the weights) to a latency agent ("autoprune agent")
running on the target device and prints what the device measured.

With --lut or --macs it prints an estimate instead, labelled as a proxy.

Examples:
  autoprune bench zoo:vgg-small
  autoprune bench vgg-50.safetensors --batch 8 --threads 4
  autoprune bench zoo:lenet5 --agent http://127.0.0.1:7070 --runs 20
  autoprune bench zoo:vgg-small --lut device-lut.json
  autoprune bench vgg-50.safetensors --versus vgg.safetensors   # interleaved with the dense model

With --versus BASE (this machine only) the model and BASE run alternately (A B A B ...), so
both see the same machine state, and the ratio of their latencies is printed: on a shared
machine the ratio is far steadier than either absolute figure.`, stderr)
	agentURL := fs.String("agent", "", "URL of a latency agent (e.g. http://127.0.0.1:7070); default: this machine")
	token := fs.String("token", "", "the agent's token (default $"+tokenEnv+")")
	batch := fs.Int("batch", 1, "samples per forward pass")
	threads := fs.Int("threads", 1, "engine threads")
	warmup := fs.Int("warmup", 10, "untimed passes before timing")
	runs := fs.Int("runs", 100, "timed passes")
	budget := fs.Duration("budget", 10*time.Second, "time limit for the timed passes (at least 5 runs are timed)")
	lut := fs.String("lut", "", "predict from this lookup table (\"autoprune profile\") instead of measuring")
	macs := fs.Float64("macs", 0, "estimate as MACs x this many ns per multiply-add instead of measuring (a proxy)")
	versus := fs.String("versus", "", "a reference model (file or zoo:NAME) to time interleaved with this one, on this machine")
	cpu := fs.Int("cpu", -1, "pin the measuring thread to this CPU, numbered from 0 (Linux and Android; local timing with --threads 1); -1: no pinning")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return usagef("bench: want exactly one model file or zoo:NAME, got %d arguments", len(pos))
	}
	switch {
	case *batch <= 0 || *threads <= 0 || *runs <= 0 || *warmup < 0:
		return usagef("bench: --batch, --threads and --runs must be positive and --warmup not negative")
	case *budget <= 0:
		return usagef("bench: --budget must be positive")
	case *macs < 0:
		return usagef("bench: --macs must be positive")
	case *cpu < -1:
		return usagef("bench: --cpu %d: want a CPU number (0 for the first) or -1", *cpu)
	case *cpu >= 0 && (*agentURL != "" || *lut != "" || *macs > 0):
		return usagef("bench: --cpu pins local timing only (start the agent with --cpu to pin on the device)")
	case *cpu >= 0 && *threads != 1:
		return usagef("bench: --cpu pins one thread: use it with --threads 1")
	}
	modes := 0
	for _, set := range []bool{*agentURL != "", *lut != "", *macs > 0} {
		if set {
			modes++
		}
	}
	if modes > 1 || (modes == 1 && *versus != "") {
		return usagef("bench: give at most one of --agent, --lut, --macs and --versus")
	}
	m, err := loadModelArg(pos[0])
	if err != nil {
		return asUsage(err)
	}
	if *cpu >= 0 {
		release, err := eval.PinToCPU(*cpu)
		if err != nil {
			return usagef("bench: --cpu: %v", err)
		}
		defer release()
	}
	if *versus != "" {
		ref, err := loadModelArg(*versus)
		if err != nil {
			return asUsage(err)
		}
		refLat, lat, ratio, err := eval.Interleaved(ctx, ref, m, *batch, *threads, *warmup, *runs)
		if err != nil {
			return err
		}
		_, refMACs, _ := ref.Totals()
		_, macs, _ := m.Totals()
		fmt.Fprintf(stdout, "device    %s\n", lat.Device)
		fmt.Fprintf(stdout, "model     %s: %.3f M MACs, latency %s\n", pos[0], float64(macs)/1e6, lat)
		fmt.Fprintf(stdout, "versus    %s: %.3f M MACs, latency %s\n", *versus, float64(refMACs)/1e6, refLat)
		fmt.Fprintf(stdout, "ratio     %.3fx the reference's latency (%.2fx faster) for %.3fx its MACs\n",
			ratio, 1/ratio, float64(macs)/float64(refMACs))
		return nil
	}
	_, totalMACs, err := m.Totals()
	if err != nil {
		return asUsage(err)
	}
	var meter eval.Meter
	where := "this machine"
	switch {
	case *agentURL != "":
		rm, err := remoteMeter(*agentURL, *token)
		if err != nil {
			return err
		}
		rm.Batch, rm.Threads, rm.Warmup, rm.Runs, rm.Budget = *batch, *threads, *warmup, *runs, *budget
		info, err := rm.Info(ctx)
		if err != nil {
			return err
		}
		meter, where = rm, fmt.Sprintf("agent %s (version %s)", *agentURL, info.Version)
	case *lut != "":
		t, err := eval.LoadLUT(*lut)
		if err != nil {
			return asUsage(err)
		}
		if t.Batch != *batch || t.Threads != *threads {
			return usagef("bench: lookup table %s was profiled at batch %d, %d thread(s); give --batch %d --threads %d",
				*lut, t.Batch, t.Threads, t.Batch, t.Threads)
		}
		meter, where = eval.LUTMeter{Table: t}, "lookup table "+*lut+" (a prediction, not a measurement)"
	case *macs > 0:
		meter, where = eval.MACsMeter{NsPerMAC: *macs, Batch: *batch}, "MACs proxy (an estimate, not a measurement)"
	default:
		meter = eval.MeterFunc(func(ctx context.Context, m2 *nn.Model) (eval.Latency, error) {
			return eval.MeasureLocal(ctx, m2, *batch, *threads, *warmup, *runs, *budget)
		})
	}
	lat, err := meter.Measure(ctx, m)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "model     %s (%s): %.3f M MACs per sample, architecture %.16s\n", m.Name, pos[0], float64(totalMACs)/1e6, m.Hash())
	fmt.Fprintf(stdout, "source    %s\n", where)
	fmt.Fprintf(stdout, "device    %s\n", lat.Device)
	fmt.Fprintf(stdout, "latency   %s\n", lat)
	if lat.Proxy {
		fmt.Fprintln(stdout, "note      this is an estimate (proxy), not a measured latency")
	}
	return nil
}
