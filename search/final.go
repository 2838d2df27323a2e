package search

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/autoprune/autoprune/eval"
	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/prune"
)

// Result is the winner of a study after its longer fine-tuning.
type Result struct {
	Trial     int          // trial number of the winning plan
	Plan      prune.Plan   // ratio per group
	Model     *nn.Model    // the pruned, fine-tuned model
	Metrics   eval.Metrics // validation accuracy, latency, size of the final model
	Dense     eval.Metrics // the same for the dense model
	TestAcc   float64      // test-set accuracy of the final model
	DenseTest float64      // test-set accuracy of the dense model
	ModelPath string       // where the model was saved
	PlanPath  string       // where the plan was saved
	Steps     int          // fine-tuning steps of the final model
	// Front holds the other trials of the accuracy-vs-latency Pareto front, fine-tuned and
	// saved the same way, when [final] pareto is set.
	Front []*Result
}

// Finalize takes the best complete trial, prunes the base model with its plan again,
// fine-tunes it for the configured final steps, measures it against the dense model on
// the test set and the latency meter, and saves the model and its plan. With [final]
// pareto it does the same for every other trial on the Pareto front.
func (s *Search) Finalize(ctx context.Context) (*Result, error) {
	sum, err := Summarize(s.store, s.cfg.Study.Name)
	if err != nil {
		return nil, err
	}
	if sum.Best == nil {
		return nil, fmt.Errorf("study %s has no complete trial yet", s.cfg.Study.Name)
	}
	dtest, err := eval.Accuracy(ctx, s.base, s.testSet, 500, 2)
	if err != nil {
		return nil, err
	}
	best, err := s.finalize(ctx, *sum.Best, s.cfg.Resolve(s.cfg.Final.Out), s.cfg.Resolve(s.cfg.Final.PlanOut))
	if err != nil {
		return nil, err
	}
	best.DenseTest = dtest.Accuracy
	if !s.cfg.Final.Pareto {
		return best, nil
	}
	for _, t := range sum.Trials {
		if !t.Pareto || t.Number == best.Trial {
			continue
		}
		stem := fmt.Sprintf("%s-pareto-%d", s.cfg.Study.Name, t.Number)
		r, err := s.finalize(ctx, t, s.cfg.Resolve(stem+".safetensors"), s.cfg.Resolve(stem+".plan.toml"))
		if err != nil {
			return nil, err
		}
		r.DenseTest = dtest.Accuracy
		best.Front = append(best.Front, r)
	}
	return best, nil
}

// finalize prunes, fine-tunes, measures and saves one trial's plan.
func (s *Search) finalize(ctx context.Context, t TrialResult, modelPath, planPath string) (*Result, error) {
	cand, err := prune.Structured(s.base, t.Plan, s.crit)
	if err != nil {
		return nil, fmt.Errorf("re-pruning trial %d: %w", t.Number, err)
	}
	steps := s.cfg.Final.Steps
	s.logf("fine-tuning the plan of trial %d for %d steps", t.Number, steps)
	seed := s.cfg.Study.Seed*1000003 - 1
	tuned, done, err := s.finetune(ctx, cand, steps, 1, seed, func(int, *nn.Model) error { return nil })
	if err != nil {
		return nil, fmt.Errorf("final fine-tuning: %w", err)
	}
	r := &Result{Trial: t.Number, Plan: t.Plan, Model: tuned, Dense: s.dense, Steps: done}
	if r.Metrics, err = s.sizeMetrics(tuned); err != nil {
		return nil, err
	}
	val, err := eval.Accuracy(ctx, tuned, s.valSet, 500, 1)
	if err != nil {
		return nil, err
	}
	r.Metrics.Accuracy, r.Metrics.Loss = val.Accuracy, val.Loss
	// Measure again, interleaved with the dense model, for the final table.
	if s.meter == nil {
		var dl eval.Latency
		dl, r.Metrics.Latency, r.Metrics.RelLatency, err = s.interleaved(ctx, tuned, max(s.cfg.Latency.Runs, 100))
		r.Dense.Latency = dl
	} else {
		r.Metrics.Latency, r.Metrics.RelLatency, err = s.latency(ctx, tuned)
	}
	if err != nil {
		return nil, err
	}
	test, err := eval.Accuracy(ctx, tuned, s.testSet, 500, 2)
	if err != nil {
		return nil, err
	}
	r.TestAcc = test.Accuracy
	r.ModelPath, r.PlanPath = modelPath, planPath
	if err := nn.Save(r.ModelPath, tuned); err != nil {
		return nil, err
	}
	if err := writePlan(r.PlanPath, s.cfg.Prune.Criterion, t.Number, t.Plan); err != nil {
		return nil, err
	}
	return r, nil
}

// writePlan saves a plan in the TOML form "autoprune prune --plan" reads, atomically.
func writePlan(path, criterion string, trial int, p prune.Plan) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# best plan of trial %d: fraction of channels removed per group\ncriterion = %q\n\n[ratios]\n", trial, criterion)
	names := make([]string, 0, len(p))
	for n := range p {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&b, "%q = %g\n", n, p[n])
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".plan-*")
	if err != nil {
		return fmt.Errorf("plan file %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b.Bytes()); err != nil {
		tmp.Close()
		return fmt.Errorf("plan file %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("plan file %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("plan file %s: %w", path, err)
	}
	return nil
}

// Write prints the final comparison with the dense model.
func (r *Result) Write(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "model\ttest acc %\tval acc %\tlatency ms (median)\tp90 ms\tspeed-up\tMACs\tparams\tbytes\t")
	row := func(name string, test float64, m eval.Metrics, speed string) {
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.3f\t%.3f\t%s\t%d\t%d\t%d\t\n", name, 100*test, 100*m.Accuracy,
			ms(m.Latency.Median), ms(m.Latency.P90), speed, m.MACs, m.Params, m.Bytes)
	}
	row("dense", r.DenseTest, r.Dense, "1.00x")
	speed := "-"
	if r.Metrics.RelLatency > 0 {
		speed = fmt.Sprintf("%.2fx", 1/r.Metrics.RelLatency)
	}
	row(fmt.Sprintf("pruned (trial %d)", r.Trial), r.TestAcc, r.Metrics, speed)
	for _, f := range r.Front {
		sp := "-"
		if f.Metrics.RelLatency > 0 {
			sp = fmt.Sprintf("%.2fx", 1/f.Metrics.RelLatency)
		}
		row(fmt.Sprintf("Pareto (trial %d)", f.Trial), f.TestAcc, f.Metrics, sp)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nlatency %s\nsaved %s and %s\n", r.Metrics.Latency.Device, r.ModelPath, r.PlanPath)
	for _, f := range r.Front {
		fmt.Fprintf(w, "saved %s and %s\n", f.ModelPath, f.PlanPath)
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }
