package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/autoprune/autoprune/data"
	"github.com/autoprune/autoprune/eval"
	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/prune"
	"github.com/autoprune/autoprune/report"
	"github.com/autoprune/autoprune/train"
)

func init() {
	register(&command{name: "sensitivity", summary: "prune each group alone at 10..90 % and measure accuracy", run: runSensitivity})
}

func runSensitivity(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("sensitivity", "sensitivity MODEL-FILE [flags]", `
Sensitivity analysis: prunes each channel group alone at each ratio (structured, by the
criterion), optionally recalibrates batch norms on a few training batches, and measures
validation accuracy. Layers differ widely in how much they tolerate, which is why per-group
ratios beat one global ratio. With --max-drop it derives, for each group, the largest ratio
that costs at most that much accuracy; a search config can use the JSON report to bound its
space (prune.sensitivity).

Validation samples are held out of the training set by seed (the same split as a search with
data.split_seed equal to --seed and the same data.val_samples).

Examples:
  autoprune sensitivity vgg.safetensors --dataset fashion-mnist --json vgg-sens.json
  autoprune sensitivity lenet5-mnist.safetensors --ratios 0.25,0.5,0.75 --csv sens.csv`, stderr)
	dataset := fs.String("dataset", "mnist", "dataset: mnist, fashion-mnist, folder (an image folder: --data-dir) or npy (NumPy arrays: --data-dir)")
	dataDir := fs.String("data-dir", "", "folder with the dataset's files")
	valSamples := fs.Int("val-samples", 5000, "validation samples held out of the training set")
	seed := fs.Int64("seed", 1, "seed of the validation split, a search's data.split_seed (and of the random criterion)")
	criterion := fs.String("criterion", "l1", "channel importance: "+criterionHelp)
	ratioList := fs.String("ratios", "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9", "comma-separated ratios in (0, 1)")
	recal := fs.Int("recalibrate", 0, "batch-norm recalibration batches before scoring (0: none)")
	maxDrop := fs.Float64("max-drop", 0.01, "accuracy drop allowed when deriving per-group maximum ratios")
	csvOut := fs.String("csv", "", "write the table as CSV to this file")
	jsonOut := fs.String("json", "", "write the report as JSON to this file (for prune.sensitivity in a config)")
	threads := fs.Int("threads", 2, "engine threads")
	plotsDir := fs.String("plots", "", "also plot accuracy against ratio, one curve per group, into this folder as sensitivity.png and sensitivity.svg")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return usagef("sensitivity: want exactly one model file, got %d arguments", len(pos))
	}
	var ratios []float64
	for _, f := range strings.Split(*ratioList, ",") {
		r, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || !(r > 0 && r < 1) {
			return usagef("sensitivity: --ratios: %q is not a ratio in (0, 1)", f)
		}
		ratios = append(ratios, r)
	}
	if !(*maxDrop > 0 && *maxDrop < 1) {
		return usagef("sensitivity: --max-drop %v: want a drop in (0, 1)", *maxDrop)
	}
	if *recal < 0 || *valSamples < 100 {
		return usagef("sensitivity: --recalibrate must be >= 0 and --val-samples >= 100")
	}
	if *plotsDir != "" {
		if err := writableDir("sensitivity: --plots", *plotsDir); err != nil {
			return err
		}
	}
	for _, o := range []struct{ flag, path string }{{"--csv", *csvOut}, {"--json", *jsonOut}} {
		if o.path != "" {
			if err := writableFile("sensitivity: "+o.flag, o.path); err != nil {
				return err
			}
		}
	}
	m, err := loadModelArg(pos[0])
	if err != nil {
		return asUsage(err)
	}
	c, err := newCriterion(*criterion, *seed, m, *dataset, *dataDir)
	if err != nil {
		return asUsage(fmt.Errorf("sensitivity: %w", err))
	}
	full, _, err := data.Load(*dataset, *dataDir)
	if err != nil {
		return asUsage(err)
	}
	trainSet, val, err := full.Split(float64(*valSamples)/float64(full.N), *seed)
	if err != nil {
		return asUsage(err)
	}
	score := func(ctx context.Context, p *nn.Model) (float64, error) {
		if *recal > 0 {
			var err error
			if p, err = train.RecalibrateBN(ctx, p, trainSet, *recal, 64, *seed); err != nil {
				return 0, err
			}
		}
		s, err := eval.Accuracy(ctx, p, val, 500, *threads)
		return s.Accuracy, err
	}
	gs, err := prune.Groups(m)
	if err != nil {
		return asUsage(err)
	}
	total := len(gs) * len(ratios)
	done := 0
	tty := isTerminal(stderr)
	rep, err := prune.Sensitivity(ctx, m, c, ratios, score, func(p prune.SensitivityPoint) {
		done++
		if tty {
			fmt.Fprintf(stderr, "\r  %d/%d  %-16s %.2f -> %.2f %%   ", done, total, p.Group, p.Ratio, 100*p.Score)
		} else {
			fmt.Fprintf(stderr, "  %d/%d  %s %.2f -> %.2f %%\n", done, total, p.Group, p.Ratio, 100*p.Score)
		}
	})
	if tty {
		fmt.Fprintln(stderr)
	}
	if err != nil {
		return err
	}
	if err := writeSensitivity(stdout, rep, *maxDrop); err != nil {
		return err
	}
	if *csvOut != "" {
		if err := writeSensitivityCSV(*csvOut, rep); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s\n", *csvOut)
	}
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s\n", *jsonOut)
	}
	if *plotsDir != "" {
		files, err := plotSensitivity(rep, *plotsDir)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s\n", strings.Join(files, ", "))
	}
	return nil
}

// plotSensitivity draws validation accuracy against ratio, one curve per group, with the
// dense model's accuracy at ratio 0 of every curve.
func plotSensitivity(rep *prune.SensitivityReport, dir string) ([]string, error) {
	series := make([]report.Series, 0, len(rep.Groups))
	for _, g := range rep.Groups {
		s := report.Series{Name: fmt.Sprintf("%s (%d)", g.Name, g.Size), Points: []report.XY{{X: 0, Y: 100 * rep.Base}}}
		for _, p := range rep.Points {
			if p.Group == g.Name {
				s.Points = append(s.Points, report.XY{X: p.Ratio, Y: 100 * p.Score})
			}
		}
		series = append(series, s)
	}
	p, err := report.Curves(fmt.Sprintf("sensitivity: one group pruned at a time (criterion %s)", rep.Criterion),
		"ratio of the group's channels removed", "validation accuracy %", series)
	if err != nil {
		return nil, err
	}
	return report.Save(p, dir, "sensitivity")
}

func writeSensitivity(w io.Writer, rep *prune.SensitivityReport, maxDrop float64) error {
	fmt.Fprintf(w, "validation accuracy %% with one group pruned (criterion %s); dense: %.2f %%\n\n", rep.Criterion, 100*rep.Base)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "group\tchannels\t")
	for _, r := range rep.Ratios {
		fmt.Fprintf(tw, "%.0f%%\t", 100*r)
	}
	fmt.Fprintf(tw, "max ratio (drop <= %.1f pt)\t\n", 100*maxDrop)
	max := rep.MaxRatios(maxDrop)
	for _, g := range rep.Groups {
		fmt.Fprintf(tw, "%s\t%d\t", g.Name, g.Size)
		for _, r := range rep.Ratios {
			s, _ := rep.Score(g.Name, r)
			fmt.Fprintf(tw, "%.2f\t", 100*s)
		}
		fmt.Fprintf(tw, "%.2f\t\n", max[g.Name])
	}
	return tw.Flush()
}

func writeSensitivityCSV(path string, rep *prune.SensitivityReport) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	_ = w.Write([]string{"group", "channels", "ratio", "kept", "accuracy"})
	size := map[string]int{}
	for _, g := range rep.Groups {
		size[g.Name] = g.Size
	}
	for _, p := range rep.Points {
		_ = w.Write([]string{p.Group, strconv.Itoa(size[p.Group]), strconv.FormatFloat(p.Ratio, 'f', 2, 64),
			strconv.Itoa(p.Kept), strconv.FormatFloat(p.Score, 'f', 6, 64)})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
