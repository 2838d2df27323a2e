package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/nn/onnx"
	"github.com/autoprune/autoprune/prune"
)

func init() {
	register(&command{name: "prune", summary: "apply a pruning plan (structured or unstructured) to a model file", run: runPrune})
}

func runPrune(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("prune", "prune MODEL-FILE (--plan PLAN.toml | --uniform R | --sparsity S) --out FILE", `
Structured pruning removes whole channels (filters, neurons) chosen per dependency group:
channels tied by batch norms, residual additions, depthwise convolutions and flatten->linear
are removed together, so the result is a smaller dense model that runs faster anywhere.
Unstructured pruning (--sparsity) only masks individual weights: the file keeps its shapes
and a dense forward pass does the same work, so it does not make dense hardware faster.

A plan file (TOML) gives a ratio per group; list the groups with --groups:
  criterion = "l1"
  [ratios]
  conv1 = 0.25
  "layer1.conv1" = 0.5

Pruned models usually need fine-tuning ("autoprune train --init FILE --epochs 1 --lr 1e-4").

Examples:
  autoprune prune vgg.safetensors --groups
  autoprune prune vgg.safetensors --uniform 0.5 --criterion l1 --out vgg-50.safetensors
  autoprune prune vgg.safetensors --plan plan.toml --out vgg-plan.safetensors
  autoprune prune mlp.safetensors --sparsity 0.9 --scope global --out mlp-sparse.safetensors`, stderr)
	planFile := fs.String("plan", "", "TOML plan file with a [ratios] table of group = ratio")
	uniform := fs.Float64("uniform", -1, "prune every group by this ratio in [0, 1)")
	criterion := fs.String("criterion", "l1", "channel importance: "+criterionHelp+" (taylor uses gradients on --dataset)")
	dataset := fs.String("dataset", "mnist", "with --criterion taylor: the training data")
	dataDir := fs.String("data-dir", "", "with --criterion taylor: folder of the dataset's IDX files")
	sparsity := fs.Float64("sparsity", -1, "unstructured: mask this fraction of weights by magnitude")
	scope := fs.String("scope", "global", "unstructured: rank weights per layer (layer) or across layers (global)")
	seed := fs.Int64("seed", 1, "seed for the random criterion")
	out := fs.String("out", "", "output model file")
	listGroups := fs.Bool("groups", false, "list the prunable groups and exit")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return usagef("prune: want exactly one model file, got %d arguments", len(pos))
	}
	m, err := loadModelArg(pos[0])
	if err != nil {
		return asUsage(err)
	}
	gs, err := prune.Groups(m)
	if err != nil {
		return asUsage(err)
	}
	if *listGroups {
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "group\tchannels\tproducers\tcarriers\tconsumers")
		for _, g := range gs {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", g.Name, g.Size, strings.Join(g.Producers, ","),
				strings.Join(g.Carriers, ","), strings.Join(g.Consumers, ","))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		whole, err := prune.KeptWhole(m)
		for _, w := range whole {
			fmt.Fprintln(stdout, "kept unpruned: "+w)
		}
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if given["uniform"] && !(*uniform >= 0 && *uniform < 1) {
		return usagef("prune: --uniform %v: want a ratio in [0, 1)", *uniform)
	}
	if given["sparsity"] && !(*sparsity >= 0 && *sparsity < 1) {
		return usagef("prune: --sparsity %v: want a fraction in [0, 1)", *sparsity)
	}
	modes := 0
	for _, set := range []bool{*planFile != "", given["uniform"], given["sparsity"]} {
		if set {
			modes++
		}
	}
	if modes != 1 {
		return usagef("prune: give exactly one of --plan, --uniform or --sparsity")
	}
	if *out == "" {
		return usagef("prune: --out is required")
	}
	var p *nn.Model
	if given["sparsity"] {
		if p, err = prune.Magnitude(m, *sparsity, prune.Scope(*scope)); err != nil {
			return asUsage(fmt.Errorf("prune: %w", err))
		}
		per, total := prune.Sparsity(p)
		for _, s := range per {
			fmt.Fprintf(stdout, "  %-14s %6.2f %% of %d weights masked\n", s.Layer, 100*float64(s.Masked)/float64(s.Weights), s.Weights)
		}
		fmt.Fprintf(stdout, "sparsity %.2f %% (unstructured: shapes and dense speed unchanged)\n", 100*total)
	} else {
		plan := prune.Plan{}
		name := *criterion
		if *planFile != "" {
			pf, err := prune.LoadPlan(*planFile)
			if err != nil {
				return asUsage(err)
			}
			plan = pf.Ratios
			if pf.Criterion != "" {
				name = pf.Criterion
			}
		} else {
			plan = prune.Uniform(gs, *uniform)
		}
		c, err := newCriterion(name, *seed, m, *dataset, *dataDir)
		if err != nil {
			return asUsage(fmt.Errorf("prune: %w", err))
		}
		if p, err = prune.Structured(m, plan, c); err != nil {
			return asUsage(fmt.Errorf("prune: %w", err))
		}
		if err := printCompare(stdout, m, p); err != nil {
			return err
		}
	}
	if err := onnx.SaveFile(*out, p); err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	fmt.Fprintf(stdout, "saved %s\n", *out)
	return nil
}

// printCompare prints per-layer params and MACs before and after pruning.
func printCompare(w io.Writer, before, after *nn.Model) error {
	a, err := before.Stats()
	if err != nil {
		return err
	}
	b, err := after.Stats()
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "layer\toutput\t→ output\tparams\t→ params\tMACs\t→ MACs\t")
	var pa, pb int
	var ma, mb int64
	for i := range a {
		if a[i].Params == 0 && a[i].MACs == 0 && a[i].Out == b[i].Out {
			continue
		}
		fmt.Fprintf(tw, "%s\t%v\t%v\t%d\t%d\t%d\t%d\t\n", a[i].Name, a[i].Out, b[i].Out, a[i].Params, b[i].Params, a[i].MACs, b[i].MACs)
	}
	for i := range a {
		pa, pb, ma, mb = pa+a[i].Params, pb+b[i].Params, ma+a[i].MACs, mb+b[i].MACs
	}
	fmt.Fprintf(tw, "total\t\t\t%d\t%d\t%d\t%d\t\n", pa, pb, ma, mb)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "params %.1f %% and MACs %.1f %% of the original\n", 100*float64(pb)/float64(pa), 100*float64(mb)/float64(ma))
	return nil
}
