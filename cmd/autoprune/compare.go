package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/autoprune/autoprune/config"
	"github.com/autoprune/autoprune/objectives"
	"github.com/autoprune/autoprune/report"
	"github.com/autoprune/autoprune/search"
)

func init() {
	register(&command{name: "compare", summary: "compare samplers (TPE, CMA-ES, random) and uniform pruning on one config", run: runCompare})
}

func runCompare(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("compare", "compare CONFIG.toml [flags]", `
Judges the search by what a user gets. Runs the same study with several samplers and seeds;
each study's winner is chosen, fine-tuned for final.steps and measured afresh, exactly as
"autoprune search" delivers it. The baseline is uniform pruning (the same ratio in every
group) delivered the same way: the same final fine-tune, test accuracy, latency measured
afresh. Each winner is compared with the uniform curve interpolated at the winner's own
re-measured latency ("gain"), and with the uniform plan fitted to the target, both meeting
it ("over uniform fitted"): where the curve is steep, the first moves with the latency
measurement's own noise, the second does not. The curve is delivered once per seed, with
the final fine-tune seed of that seed's studies (--paired), so that the luck of one
fine-tune seed is not read as a gain: at aggressive targets two seeds of the same plan
differ by a point. At the end the winners and every point of the curve are measured again
side by side, in the same rounds (5 rounds, each architecture against the dense model in
turn): the gain reads the curve at the winner's latency from those rounds ("again, beside
the curve"), since a latency measured minutes apart on a shared machine moves by more
than the curve's spacing. The comparison also reports Kendall's tau between the trials'
validation accuracy after their short fine-tune and their test accuracy after the final
one (--tau trials sampled per study), the same for the screening's score (accuracy
without fine-tuning, "zero-shot"), what the stored scores alone would have chosen
(before re-ranking), and when the uniform plan was delivered over a searched one ahead by
less than final.uniform_margin ("uniform kept").

All studies go into one database beside the config (NAME-compare.db), so an interrupted
comparison resumes where it stopped; winners are saved as NAME-TARGET-METHOD-sSEED-best.safetensors.
Warm starts are switched off: every sampler starts from the uniform plan closest to the
target and nothing else. The target is the config's objective.target, relative to the dense
model (e.g. 0.5x).

Examples:
  autoprune compare configs/fashion-compare.toml --seeds 1,2,3
  autoprune compare configs/fashion-compare.toml --samplers tpe --target 0.4x
  autoprune compare configs/mobile.toml --samplers tpe,random --seeds 1 --json cmp.json`, stderr)
	samplers := fs.String("samplers", "tpe,cmaes,random", "comma-separated samplers")
	seedList := fs.String("seeds", "1,2,3", "comma-separated seeds")
	uniform := fs.String("uniform", "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8", "uniform ratios of the baseline (empty: none)")
	trials := fs.Int("trials", 0, "trials per study (default: the config's)")
	targetFlag := fs.String("target", "", "latency target relative to the dense model, such as 0.4x (default: the config's objective.target)")
	tauN := fs.Int("tau", 6, "trials per study fine-tuned like the winner to measure Kendall's tau (0: none)")
	jsonOut := fs.String("json", "", "also write the rows as JSON to this file")
	quiet := fs.Bool("quiet", false, "print only warnings, errors and the result")
	paired := fs.Bool("paired", true, "deliver the uniform baseline once per seed, with the final fine-tune seed of that seed's studies, and judge each winner against its own seed's curve (false: one curve, from the config's seed)")
	plotsDir := fs.String("plots", "", "also plot each method's winners and the uniform curve (test accuracy against re-measured latency) into this folder, as compare.png and compare.svg")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return usagef("compare: want exactly one config file, got %d arguments", len(pos))
	}
	base, err := config.Load(pos[0])
	if err != nil {
		return asUsage(err)
	}
	log := output{quiet: quiet, json: new(bool)}.logger(stdout, stderr)
	if *targetFlag != "" {
		if _, err := relTarget(*targetFlag); err != nil {
			return usagef("compare: --target: %v", err)
		}
		base.Objective.Target = *targetFlag
	}
	if _, err := relTarget(base.Objective.Target); err != nil {
		return asUsage(fmt.Errorf("compare: %s: objective.target: %w", pos[0], err))
	}
	if *trials < 0 || (*trials == 0 && flagSet(fs, "trials")) {
		return usagef("compare: --trials %d: want at least 1 (leave it out for study.trials)", *trials)
	}
	if *jsonOut != "" {
		if err := writableFile("compare: --json", *jsonOut); err != nil {
			return err
		}
	}
	if *tauN < 0 || *tauN == 1 {
		return usagef("compare: --tau %d: want 0 (none) or at least 2 trials", *tauN)
	}
	if *plotsDir != "" {
		if err := writableDir("compare: --plots", *plotsDir); err != nil {
			return err
		}
	}
	var seeds []int64
	for _, f := range strings.Split(*seedList, ",") {
		v, err := strconv.ParseInt(strings.TrimSpace(f), 10, 64)
		if err != nil {
			return usagef("compare: --seeds: %q is not an integer", f)
		}
		seeds = append(seeds, v)
	}
	var ratios []float64
	if strings.TrimSpace(*uniform) != "" {
		for _, f := range strings.Split(*uniform, ",") {
			v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
			if err != nil || !(v >= 0 && v < 1) {
				return usagef("compare: --uniform: %q is not a ratio in [0, 1)", f)
			}
			ratios = append(ratios, v)
		}
	}
	methods := strings.Split(*samplers, ",")
	for _, m := range methods {
		if !slices.Contains(config.Samplers, m) {
			return usagef("compare: --samplers: %q is not one of %s", m, strings.Join(config.Samplers, ", "))
		}
	}
	cmp, err := search.Compare(ctx, base, search.CompareOptions{Samplers: methods, Seeds: seeds, Uniform: ratios,
		Trials: *trials, Tau: *tauN, Paired: *paired, Logger: log})
	if err != nil {
		return classify(err)
	}
	cmp.Write(stdout)
	if *jsonOut != "" {
		b, err := json.MarshalIndent(cmp, "", "  ")
		if err != nil {
			return fmt.Errorf("compare: %w", err)
		}
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if *plotsDir != "" {
		files, err := plotCompare(cmp, *plotsDir)
		if err != nil {
			return err
		}
		log.Info(fmt.Sprintf("plots written: %s", strings.Join(files, ", ")))
	}
	return nil
}

// plotCompare draws each method's winners and the uniform curve, test accuracy against
// re-measured latency, into dir.
func plotCompare(cmp *search.Comparison, dir string) ([]string, error) {
	var series []report.Series
	index := map[string]int{}
	for _, u := range cmp.Uniform {
		name := fmt.Sprintf("uniform pruning, seed %d", u.Seed)
		i, ok := index[name]
		if !ok {
			i = len(series)
			index[name] = i
			series = append(series, report.Series{Name: name, Dashed: true})
		}
		series[i].Points = append(series[i].Points, report.XY{X: u.Rel, Y: 100 * u.TestAcc})
	}
	for _, r := range cmp.Rows {
		if math.IsNaN(float64(r.Rel)) || math.IsNaN(float64(r.TestAcc)) {
			continue
		}
		i, ok := index[r.Method]
		if !ok {
			i = len(series)
			index[r.Method] = i
			series = append(series, report.Series{Name: r.Method + " winners"})
		}
		series[i].Points = append(series[i].Points, report.XY{X: float64(r.Rel), Y: 100 * float64(r.TestAcc)})
	}
	p, err := report.Curves(fmt.Sprintf("searched winners against uniform pruning, target %.3gx", cmp.Target),
		"latency relative to the dense model (re-measured)", "test accuracy %", series)
	if err != nil {
		return nil, err
	}
	return report.Save(p, dir, "compare")
}

// relTarget reads a latency target that is relative to the dense model, such as "0.5x".
func relTarget(s string) (float64, error) {
	t, err := objectives.ParseTarget(s)
	if err != nil || t.Rel == 0 {
		return 0, fmt.Errorf("%q: the comparison needs a target relative to the dense model, such as 0.5x", s)
	}
	return t.Rel, nil
}
