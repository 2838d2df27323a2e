package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/autoprune/autoprune/agent"
	"github.com/autoprune/autoprune/eval"
	"github.com/autoprune/autoprune/nn"
)

func init() {
	register(&command{name: "bench", summary: "measure a model's latency here or on a device agent", run: runBench})
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("bench", "bench MODEL-FILE | zoo:NAME [--agent URL [--token TOKEN]] [--versus BASE] [flags]", `
Measures the latency of a model's forward pass: warm-up passes, then timed passes,
reported as median, p90, mean and min. Without --agent it measures on this machine; with
--agent it sends the architecture (not the weights) to a latency agent ("autoprune agent")
running on the target device and prints what the device measured.

With --versus BASE the model and BASE run alternately (A B A B ...), here or, with --agent,
on the device, so that both see the same machine state. Each pair gives a ratio of the two
latencies; the median ratio is printed with its spread, the half-width of its 95 %
interval (±2 % means the ratio is known within 2 %). Clock scaling, heat and an emulator
warming up move both halves of a pair alike, so the ratio is far steadier than either
absolute figure: it is what a search compares. --runs then counts pairs (fast models get
more, to cover at least 0.3 s) and --budget bounds their time once 5 are timed.

With --command it measures in the runtime you deploy with: the models are exported to ONNX
and timed by that command (see "[latency] meter = command" and runners/onnxruntime.js), with
or without --versus.

With --lut or --macs it prints an estimate instead, labelled as a proxy.

Examples:
  autoprune bench zoo:vgg-small
  autoprune bench vgg-50.safetensors --batch 8 --threads 4
  autoprune bench zoo:lenet5 --agent http://127.0.0.1:7070 --runs 20
  autoprune bench zoo:vgg-small --lut device-lut.json
  autoprune bench vgg-50.safetensors --versus vgg.safetensors   # interleaved with the dense model
  autoprune bench vgg-50.safetensors --versus vgg.safetensors --agent http://127.0.0.1:7070
  autoprune bench vgg-50.safetensors --versus vgg.safetensors --command "node runners/onnxruntime.js"`, stderr)
	agentURL := fs.String("agent", "", "URL of a latency agent (e.g. http://127.0.0.1:7070); default: this machine")
	token := fs.String("token", "", "the agent's token (default $"+agent.TokenEnv+")")
	batch := fs.Int("batch", 1, "samples per forward pass")
	threads := fs.Int("threads", 1, "engine threads")
	warmup := fs.Int("warmup", 10, "untimed passes before timing (of each model with --versus)")
	runs := fs.Int("runs", 100, "timed passes (pairs with --versus)")
	budget := fs.Duration("budget", 10*time.Second, "time limit for the timed passes or pairs (at least 5 are timed)")
	lut := fs.String("lut", "", "predict from this lookup table (\"autoprune profile\") instead of measuring")
	macs := fs.Float64("macs", 0, "estimate as MACs x this many ns per multiply-add instead of measuring (a proxy)")
	versus := fs.String("versus", "", "a reference model (file or zoo:NAME) to time interleaved with this one, here or on the --agent")
	command := fs.String("command", "", "time ONNX exports with this latency runner (split at spaces), such as \"node runners/onnxruntime.js\"")
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
	case *cpu >= 0 && (*agentURL != "" || *lut != "" || *macs > 0 || *command != ""):
		return usagef("bench: --cpu pins local timing only (start the agent with --cpu to pin on the device)")
	case *cpu >= 0 && *threads != 1:
		return usagef("bench: --cpu pins one thread: use it with --threads 1")
	}
	modes := 0
	for _, set := range []bool{*agentURL != "", *lut != "", *macs > 0, *command != ""} {
		if set {
			modes++
		}
	}
	if modes > 1 || (*versus != "" && (*lut != "" || *macs > 0)) {
		return usagef("bench: give at most one of --agent, --command, --lut and --macs, and --versus only alone or with --agent or --command (proxies are not timed)")
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
	var ref *nn.Model
	if *versus != "" {
		if ref, err = loadModelArg(*versus); err != nil {
			return asUsage(err)
		}
	}
	var rm *eval.RemoteMeter
	where := "this machine"
	if *agentURL != "" {
		if rm, err = remoteMeter(*agentURL, *token); err != nil {
			return err
		}
		rm.Batch, rm.Threads, rm.Warmup, rm.Runs, rm.Budget = *batch, *threads, *warmup, *runs, *budget
		info, err := rm.Info(ctx)
		if err != nil {
			return err
		}
		where = fmt.Sprintf("agent %s (version %s)", *agentURL, info.Version)
	}
	var cm *eval.CommandMeter
	if *command != "" {
		cm = &eval.CommandMeter{Argv: strings.Fields(*command), Batch: *batch, Threads: *threads, Warmup: max(*warmup, 1), Runs: *runs}
		where = "command " + *command
	}
	if ref != nil {
		_, refMACs, err := ref.Totals()
		if err != nil {
			return asUsage(err)
		}
		_, macs, err := m.Totals()
		if err != nil {
			return asUsage(err)
		}
		var p eval.Pairs
		switch {
		case rm != nil:
			p, err = rm.MeasurePair(ctx, ref, m)
		case cm != nil:
			p, err = cm.MeasurePair(ctx, ref, m)
		default:
			p, err = eval.MeasurePairLocal(ctx, ref, m, *batch, *threads, *warmup, *runs, *budget)
		}
		if err != nil {
			return err
		}
		ratio := p.Ratio()
		fmt.Fprintf(stdout, "source    %s\n", where)
		fmt.Fprintf(stdout, "device    %s\n", p.Device)
		fmt.Fprintf(stdout, "model     %s: %.3f M MACs, latency %s\n", pos[0], float64(macs)/1e6, p.Cand())
		fmt.Fprintf(stdout, "versus    %s: %.3f M MACs, latency %s\n", *versus, float64(refMACs)/1e6, p.Ref())
		fmt.Fprintf(stdout, "ratio     %.3fx the reference's latency (%.2fx faster) for %.3fx its MACs\n",
			ratio, 1/ratio, float64(macs)/float64(refMACs))
		if sp := p.Spread(); math.IsInf(sp, 0) {
			fmt.Fprintf(stdout, "spread    unknown: %d pairs, too few for an interval (raise --runs or --budget)\n", p.Len())
		} else {
			digits := 1
			if sp < 0.01 {
				digits = 2
			}
			fmt.Fprintf(stdout, "spread    ±%.*f %% (95 %% interval of the median ratio over %d pairs)\n", digits, 100*sp, p.Len())
		}
		return nil
	}
	_, totalMACs, err := m.Totals()
	if err != nil {
		return asUsage(err)
	}
	var meter eval.Meter
	switch {
	case rm != nil:
		meter = rm
	case cm != nil:
		meter = cm
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
