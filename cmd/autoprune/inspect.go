package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/autoprune/autoprune/nn"
)

func init() {
	register(&command{name: "inspect", summary: "print a model's layers with shapes, parameters and multiply-adds", run: runInspect})
}

func runInspect(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("inspect", "inspect MODEL-FILE | zoo:NAME [--compare BASE-FILE]", `
Prints one line per layer: kind, inputs, output shape (per sample), parameter count and
multiply-accumulates (MACs) per sample, then totals and the architecture hash (models with
the same hash have the same latency).

Examples:
  autoprune inspect lenet5-mnist.safetensors
  autoprune inspect zoo:resnet-small
  autoprune inspect vgg-50.safetensors --compare vgg.safetensors   # before/after pruning`, stderr)
	compare := fs.String("compare", "", "a model file (or zoo:NAME) to compare with, layer by layer: params and MACs before and after")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return usagef("inspect: want exactly one model file, got %d arguments", len(pos))
	}
	m, err := loadModelArg(pos[0])
	if err != nil {
		return asUsage(err)
	}
	if *compare != "" {
		base, err := loadModelArg(*compare)
		if err != nil {
			return asUsage(err)
		}
		if len(base.Layers) != len(m.Layers) {
			return usagef("inspect: %s has %d layers, %s has %d: not the same network", *compare, len(base.Layers), pos[0], len(m.Layers))
		}
		for i, l := range base.Layers {
			if l.Name != m.Layers[i].Name || l.Kind != m.Layers[i].Kind {
				return usagef("inspect: layer %d is %s (%s) in %s but %s (%s) in %s: not the same network",
					i, l.Name, l.Kind, *compare, m.Layers[i].Name, m.Layers[i].Kind, pos[0])
			}
		}
		fmt.Fprintf(stdout, "%s (before) -> %s (after)\n\n", *compare, pos[0])
		return printCompare(stdout, base, m)
	}
	return printInspect(stdout, m, pos[0])
}

func printInspect(w io.Writer, m *nn.Model, source string) error {
	st, err := m.Stats()
	if err != nil {
		return asUsage(err)
	}
	fmt.Fprintf(w, "model %s (%s), input %v\n\n", m.Name, source, m.Input)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "layer\tkind\tinputs\toutput\tparams\tMACs\t")
	var params int
	var macs int64
	for i, s := range st {
		l := m.Layers[i]
		in := ""
		for j, x := range l.Inputs {
			if j > 0 {
				in += ","
			}
			in += x
		}
		extra := ""
		if l.Mask != nil {
			extra = fmt.Sprintf(" (%.1f%% masked)", 100*maskedFraction(l.Mask))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%d\t%d\t%s\n", s.Name, s.Kind, in, s.Out, s.Params, s.MACs, extra)
		params += s.Params
		macs += s.MACs
	}
	fmt.Fprintf(tw, "total\t\t\t\t%d\t%d\t\n", params, macs)
	if err := tw.Flush(); err != nil {
		return err
	}
	size := ""
	if fi, err := os.Stat(source); err == nil {
		size = fmt.Sprintf(", file %d bytes", fi.Size())
	}
	fmt.Fprintf(w, "\n%d layers, %d parameters, %.3f M MACs per sample%s\narchitecture hash %s\n",
		len(m.Layers), params, float64(macs)/1e6, size, m.Hash()[:16])
	return nil
}

func maskedFraction(mask []float32) float64 {
	z := 0
	for _, v := range mask {
		if v == 0 {
			z++
		}
	}
	return float64(z) / float64(len(mask))
}
