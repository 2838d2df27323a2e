package search

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/autoprune/autoprune/eval"
	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/nn/onnx"
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
	ONNXPath  string       // where the model was saved as ONNX ("" with [final] onnx = false)
	Steps     int          // fine-tuning steps of the final model
	// Constraint is what the winner had to meet; Miss says what the final model misses of
	// it on the final re-measurement, beyond that measurement's own spread ("" when met).
	Constraint Constraint
	Miss       string
	// Candidates are the trials measured again (and re-ranked) before the choice, best
	// stored score first; Unranked is the trial the stored scores alone would have chosen
	// among them (without the re-ranking fine-tune).
	Candidates []Candidate
	Unranked   int
	// Kept says why the uniform plan was delivered although a searched candidate was more
	// accurate on validation (by less than final.uniform_margin standard errors); "" when
	// the ranking alone chose.
	Kept string
	// Front holds the other trials of the accuracy-vs-latency Pareto front, fine-tuned and
	// saved the same way, when [final] pareto is set.
	Front []*Result
}

// Candidate is a trial considered for the winner: its stored metrics and score, its
// latency measured again in fresh rounds, and its score after the re-ranking fine-tune.
type Candidate struct {
	Trial       int
	StoredScore float64
	StoredRel   float64 // latency ratio stored with the trial
	Rel         float64 // latency ratio measured again
	Spread      float64 // relative half-width of Rel's 95 % interval
	Miss        string  // what the re-measured trial misses of the constraint, beyond its spread
	Accuracy    float64 // validation accuracy after the re-ranking fine-tune (or as stored)
	Score       float64 // objective score from Accuracy and Rel
	// TestAcc is the test accuracy after the re-ranking fine-tune when that fine-tune is
	// the final one (what the trial would deliver), else 0. It is reported, never used
	// to choose.
	TestAcc float64
	// Uniform says the trial's plan prunes every group by one ratio (a uniform warm start).
	Uniform bool
}

// Finalize chooses the winner and makes it: among the complete trials that meet the
// constraint, the best few by stored score ([final] candidates) are measured again in
// fresh rounds and re-ranked by a longer fine-tune ([final] rerank_steps, by default the
// final fine-tune itself); the best that still meets the constraint is delivered: fine-tuned
// for the final steps (the re-ranking model itself when the two are the same), measured
// afresh against the dense model on the test set and the latency meter, and saved with its
// plan. If every candidate misses the constraint on that final measurement, a trial with
// room under the target for the slowdown seen is delivered instead, when there is one. With
// [final] pareto it does the same for every other trial on the Pareto front. When no trial
// meets the constraint it returns an error wrapping
// ErrInfeasible that names the closest trial.
func (s *Search) Finalize(ctx context.Context) (*Result, error) {
	sum, err := Summarize(s.store, s.cfg.Study.Name)
	if err != nil {
		return nil, err
	}
	if sum.Counts["complete"] == 0 {
		return nil, fmt.Errorf("study %s has no complete trial yet", s.cfg.Study.Name)
	}
	cons := s.constraint()
	picks, cands, err := s.choose(ctx, sum, cons)
	if err != nil {
		return nil, err
	}
	// The best candidate is delivered; if its final measurement misses the constraint
	// (a measurement near the target can land on either side), the next one is, and so
	// on. When every one misses, the most accurate trial with room under the target for
	// the slowdown seen is tried (deliverWithMargin); failing that, the best is delivered
	// with the warning.
	var best *Result
	drift := 1.0 // how much slower the final measurements read than the candidates' own
	for i, p := range picks {
		r, err := s.make(ctx, p.t, p.tuned)
		if err != nil {
			return nil, err
		}
		r.Kept = p.kept
		if best == nil || r.Miss == "" {
			best = r
		}
		if r.Miss == "" {
			break
		}
		for _, c := range cands {
			if c.Trial == r.Trial && c.Rel > 0 && r.Metrics.RelLatency > 0 {
				drift = max(drift, r.Metrics.RelLatency/c.Rel)
			}
		}
		if i+1 < len(picks) {
			s.logf("trial %d misses the constraint on its final measurement (%s): delivering the next candidate", r.Trial, r.Miss)
		}
	}
	if best.Miss != "" {
		r, err := s.deliverWithMargin(ctx, sum, cons, picks, drift)
		if err != nil {
			return nil, err
		}
		if r != nil {
			best = r
		}
	}
	if err := s.save(best, s.cfg.Resolve(s.cfg.Final.Out), s.cfg.Resolve(s.cfg.Final.PlanOut)); err != nil {
		return nil, err
	}
	best.Candidates = cands
	best.Unranked = cands[0].Trial
	if !s.cfg.Final.Pareto {
		return best, nil
	}
	for _, t := range sum.Trials {
		if !t.Pareto || t.Number == best.Trial {
			continue
		}
		stem := fmt.Sprintf("%s-pareto-%d", s.cfg.Study.Name, t.Number)
		r, err := s.make(ctx, t, nil)
		if err != nil {
			return nil, err
		}
		if err := s.save(r, s.cfg.Resolve(stem+".safetensors"), s.cfg.Resolve(stem+".plan.toml")); err != nil {
			return nil, err
		}
		best.Front = append(best.Front, r)
	}
	return best, nil
}

// marginTries is how many trials with room under the target deliverWithMargin makes at most.
const marginTries = 2

// deliverWithMargin is the last resort of Finalize when every candidate measured over the
// target on its final measurement, by the factor drift against its measurement before the
// choice (a machine that got busier, or a target that the candidates sit right at): it
// delivers the most accurate other complete trial whose stored latency leaves that much
// room under the target, trying at most marginTries of them. It returns nil when none is
// left or none meets the constraint either.
func (s *Search) deliverWithMargin(ctx context.Context, sum *Summary, cons Constraint, picks []pick, drift float64) (*Result, error) {
	tried := map[int]bool{}
	for _, p := range picks {
		tried[p.t.Number] = true
	}
	var room []TrialResult
	for _, t := range sum.Trials {
		if t.State == "complete" && t.Metric != nil && len(t.Plan) > 0 && !tried[t.Number] && cons.Miss(*t.Metric, 1/drift-1) == "" {
			room = append(room, t)
		}
	}
	rankStored(cons, room)
	if len(room) == 0 {
		s.logf("every candidate measured over the target on its final measurement (up to %.1f %% slower than before the choice), and no other trial leaves that much room", 100*(drift-1))
		return nil, nil
	}
	for _, t := range room[:min(marginTries, len(room))] {
		s.logf("every candidate measured over the target on its final measurement (up to %.1f %% slower than before the choice): delivering trial %d, stored at %.3fx", 100*(drift-1), t.Number, t.Metric.RelLatency)
		r, err := s.make(ctx, t, nil)
		if err != nil {
			return nil, err
		}
		if r.Miss == "" {
			return r, nil
		}
	}
	return nil, nil
}

// tuned is a plan's model after the final fine-tune, and the steps it took.
type tuned struct {
	model *nn.Model
	steps int
}

// pick is a candidate for delivery, with its model when the re-ranking fine-tune was the
// final one.
type pick struct {
	t     TrialResult
	tuned *tuned
	kept  string // why the uniform plan was delivered over a searched one, when it was
}

// choose measures the best feasible trials again and re-ranks them; see Finalize. It
// returns them best first; when the re-ranking fine-tune is the final one (the default),
// with their tuned models, so that what was ranked is exactly what is delivered.
func (s *Search) choose(ctx context.Context, sum *Summary, cons Constraint) ([]pick, []Candidate, error) {
	var feasible []TrialResult
	for _, t := range sum.Trials {
		// A trial without its plan (storage lost it) cannot be made again: pruning with an
		// empty plan would deliver the dense model.
		// A trial over the target by less than its own measurement's spread may well meet
		// it: it is measured again below, and that measurement decides.
		if t.State == "complete" && t.Metric != nil && len(t.Plan) > 0 && cons.Miss(*t.Metric, t.Metric.RelSpread) == "" {
			feasible = append(feasible, t)
		}
	}
	if len(feasible) == 0 {
		return nil, nil, fmt.Errorf("study %s: %w (%s): none of %d complete trials meets it%s",
			s.cfg.Study.Name, ErrInfeasible, cons, sum.Counts["complete"], sum.closestNote())
	}
	rankStored(cons, feasible)
	k := s.cfg.Final.Candidates
	type entry struct {
		t     TrialResult
		m     eval.Metrics // the stored metrics with the latency measured again
		c     Candidate
		cand  *nn.Model
		tuned *tuned
		val   eval.Score // validation after the re-ranking fine-tune
	}
	var pool []entry
	seen := map[string]bool{} // architectures already among the candidates
	// consider measures a trial again and adds it to the pool when it still meets the
	// constraint; it says whether it did.
	consider := func(t TrialResult) (bool, error) {
		cand, err := prune.Structured(s.base, t.Plan, s.crit)
		if err != nil {
			return false, fmt.Errorf("re-pruning trial %d: %w", t.Number, err)
		}
		h := cand.Hash()
		if seen[h] {
			return false, nil // the same model as a better-scored candidate
		}
		seen[h] = true
		e, err := s.verdict(ctx, cand, cons, *t.Metric)
		if err != nil {
			return false, fmt.Errorf("measuring trial %d again: %w", t.Number, err)
		}
		m := *t.Metric
		m.Latency, m.RelLatency, m.RelSpread = e.lat, e.rel, e.spread
		c := Candidate{Trial: t.Number, StoredScore: t.Value, StoredRel: t.Metric.RelLatency, Rel: e.rel,
			Spread: e.spread, Miss: cons.Miss(m, e.spread), Accuracy: m.Accuracy, Uniform: s.uniform(t.Params)}
		if c.Score, err = s.obj.Score(m); err != nil {
			return false, err
		}
		s.logf("trial %d measured again: %.3fx the dense latency (stored %.3fx)", t.Number, e.rel, t.Metric.RelLatency)
		if c.Miss != "" {
			s.logf("  trial %d is no longer a candidate: %s", t.Number, c.Miss)
			return false, nil
		}
		pool = append(pool, entry{t: t, m: m, c: c, cand: cand})
		return true, nil
	}
	for _, t := range feasible {
		if len(pool) == k {
			break
		}
		if _, err := consider(t); err != nil {
			return nil, nil, err
		}
	}
	steps := *s.cfg.Final.RerankSteps
	// Under a constraint the uniform plan is the baseline a searched plan must beat: when
	// re-ranking, the best uniform trial that meets it is a candidate too. (Without one,
	// plans at different latencies rank by the objective's score, not by accuracy.)
	hasUniform := !cons.any()
	for _, e := range pool {
		hasUniform = hasUniform || e.c.Uniform
	}
	if !hasUniform && k > 1 && steps > 0 {
		// Measured again when stored up to 10 % over the target, beyond its spread: the
		// baseline sits right at the target, where one noisy round during its trial can put
		// it over.
		var uniform []TrialResult
		for _, t := range sum.Trials {
			if t.State == "complete" && t.Metric != nil && len(t.Plan) > 0 && s.uniform(t.Params) &&
				cons.Miss(*t.Metric, max(t.Metric.RelSpread, 0.1)) == "" {
				uniform = append(uniform, t)
			}
		}
		rankStored(cons, uniform)
		for _, t := range uniform {
			ok, err := consider(t)
			if err != nil {
				return nil, nil, err
			}
			if ok {
				s.logf("trial %d, the best uniform plan that meets the constraint, joins the candidates as the baseline", t.Number)
				break
			}
		}
	}
	if len(pool) == 0 {
		return nil, nil, fmt.Errorf("study %s: %w (%s): every trial that met it measured over it again; the machine may be busy (see latency.cpu) or the target too close to the trials' latencies",
			s.cfg.Study.Name, ErrInfeasible, cons)
	}
	if len(pool) > 1 && steps > 0 {
		final := steps == s.cfg.Final.Steps
		how := fmt.Sprintf("a %d-step fine-tune", steps)
		if final {
			how = fmt.Sprintf("their final fine-tune (%d steps)", steps)
		}
		s.logf("re-ranking %d candidates by %s", len(pool), how)
		for i := range pool {
			p := &pool[i]
			seed := s.cfg.Study.Seed*1000003 - 2
			if final {
				seed = s.finalSeed()
			}
			model, done, err := s.finetune(ctx, fmt.Sprintf("candidate trial %d", p.t.Number), p.cand, steps, 1, seed, func(int, *nn.Model) error { return nil })
			if err != nil {
				return nil, nil, fmt.Errorf("re-ranking trial %d: %w", p.t.Number, err)
			}
			if final {
				p.tuned = &tuned{model, done}
			}
			val, err := eval.Accuracy(ctx, model, s.valSet, 500, 1)
			if err != nil {
				return nil, nil, err
			}
			p.val = val
			m := p.m
			m.Accuracy, m.Loss = val.Accuracy, val.Loss
			p.c.Accuracy = val.Accuracy
			if p.c.Score, err = s.obj.Score(m); err != nil {
				return nil, nil, err
			}
			if final {
				test, err := eval.Accuracy(ctx, model, s.testSet, 500, 2)
				if err != nil {
					return nil, nil, err
				}
				p.c.TestAcc = test.Accuracy
			}
			s.logf("  trial %d: validation accuracy %.2f %% after %d steps (%.2f %% after %d), score %.4f",
				p.t.Number, 100*val.Accuracy, steps, 100*p.t.Metric.Accuracy, p.t.Steps, p.c.Score)
		}
	}
	cands := make([]Candidate, len(pool))
	for i := range pool {
		cands[i] = pool[i].c
	}
	sort.SliceStable(pool, func(i, j int) bool { return better(cons, pool[i].c, pool[j].c) })
	// A searched plan ahead of the uniform one by less than the validation set's own
	// error would be chosen by that noise: the uniform plan is delivered instead.
	var kept string
	for u := 1; u < len(pool); u++ {
		if !cons.any() || !pool[u].c.Uniform || pool[0].c.Uniform || pool[0].val.N == 0 {
			continue
		}
		gap, se, err := eval.PairedGap(pool[0].val, pool[u].val)
		if err != nil {
			return nil, nil, err
		}
		if margin := s.cfg.Final.UniformMargin; gap < margin*se {
			kept = fmt.Sprintf("the uniform plan (trial %d) is delivered: the best searched candidate, trial %d, is only %+.2f ± %.2f points ahead of it on validation (final.uniform_margin = %g standard errors)",
				pool[u].t.Number, pool[0].t.Number, 100*gap, 100*se, margin)
			s.logf("%s", kept)
			u0 := pool[u]
			copy(pool[1:u+1], pool[:u])
			pool[0] = u0
		}
		break
	}
	picks := make([]pick, len(pool))
	for i, e := range pool {
		picks[i] = pick{e.t, e.tuned, ""}
	}
	picks[0].kept = kept
	return picks, cands, nil
}

// rankStored sorts complete trials best first by their stored metrics, as better ranks
// candidates.
func rankStored(cons Constraint, ts []TrialResult) {
	sort.SliceStable(ts, func(i, j int) bool {
		a, b := ts[i], ts[j]
		return better(cons, Candidate{Accuracy: a.Metric.Accuracy, Score: a.Value}, Candidate{Accuracy: b.Metric.Accuracy, Score: b.Value})
	})
}

// better says whether candidate a ranks above b for delivery. Under a constraint every
// candidate meets it (within its measurement's spread), so accuracy alone decides: a
// latency term in the objective guides the sampler, but a penalty for being over the target
// by less than the measurement's own noise, or a reward for being under it, would choose by
// that noise. Without a constraint the objective's score decides.
func better(cons Constraint, a, b Candidate) bool {
	if cons.any() && a.Accuracy != b.Accuracy {
		return a.Accuracy > b.Accuracy
	}
	return a.Score > b.Score
}

// make delivers one trial's plan (see Evaluate), or its model already tuned by the final
// fine-tune.
func (s *Search) make(ctx context.Context, t TrialResult, tu *tuned) (*Result, error) {
	if tu == nil {
		s.logf("fine-tuning the plan of trial %d for %d steps", t.Number, s.cfg.Final.Steps)
		cand, err := prune.Structured(s.base, t.Plan, s.crit)
		if err != nil {
			return nil, fmt.Errorf("trial %d: pruning: %w", t.Number, err)
		}
		if tu, err = s.tuneFinal(ctx, cand); err != nil {
			return nil, fmt.Errorf("trial %d: %w", t.Number, err)
		}
	}
	r, err := s.deliver(ctx, t.Plan, tu)
	if err != nil {
		return nil, fmt.Errorf("trial %d: %w", t.Number, err)
	}
	r.Trial, r.Unranked = t.Number, t.Number
	return r, nil
}

// save writes a delivered model, its plan and, with [final] onnx, its ONNX form.
func (s *Search) save(r *Result, modelPath, planPath string) error {
	r.ModelPath, r.PlanPath = modelPath, planPath
	if err := onnx.SaveFile(r.ModelPath, r.Model); err != nil {
		return err
	}
	if err := prune.SavePlan(r.PlanPath, prune.PlanFile{Criterion: s.crit.Name(), Ratios: r.Plan}, fmt.Sprintf("best plan of trial %d: fraction of channels removed per group", r.Trial)); err != nil {
		return err
	}
	if *s.cfg.Final.ONNX {
		r.ONNXPath = strings.TrimSuffix(modelPath, filepath.Ext(modelPath)) + ".onnx"
		if r.ONNXPath == modelPath {
			r.ONNXPath = "" // the model file is ONNX already
		} else if err := onnx.Save(r.ONNXPath, r.Model); err != nil {
			return err
		}
	}
	return nil
}

// finalSeed seeds the final fine-tune of every plan of the study alike.
func (s *Search) finalSeed() int64 { return s.cfg.Study.Seed*1000003 - 1 }

// tuneFinal fine-tunes a pruned model for [final] steps.
func (s *Search) tuneFinal(ctx context.Context, cand *nn.Model) (*tuned, error) {
	model, done, err := s.finetune(ctx, "final", cand, s.cfg.Final.Steps, 1, s.finalSeed(), func(int, *nn.Model) error { return nil })
	if err != nil {
		return nil, fmt.Errorf("final fine-tuning: %w", err)
	}
	return &tuned{model, done}, nil
}

// Evaluate delivers a plan as the search delivers its winner, without saving anything:
// the base model pruned with the plan, fine-tuned for [final] steps, scored on the
// validation and test sets, and its latency measured afresh against the dense model.
// Comparisons use it to treat a baseline (uniform pruning) exactly like a winner.
func (s *Search) Evaluate(ctx context.Context, plan prune.Plan) (*Result, error) {
	cand, err := prune.Structured(s.base, plan, s.crit)
	if err != nil {
		return nil, fmt.Errorf("pruning: %w", err)
	}
	tu, err := s.tuneFinal(ctx, cand)
	if err != nil {
		return nil, err
	}
	return s.deliver(ctx, plan, tu)
}

// deliver scores a plan's fine-tuned model on the validation and test sets and measures
// its latency afresh against the dense model.
func (s *Search) deliver(ctx context.Context, plan prune.Plan, tu *tuned) (*Result, error) {
	r := &Result{Trial: -1, Unranked: -1, Plan: plan, Model: tu.model, Dense: s.dense, Steps: tu.steps, Constraint: s.constraint()}
	var err error
	if r.Metrics, err = s.sizeMetrics(tu.model); err != nil {
		return nil, err
	}
	val, err := eval.Accuracy(ctx, tu.model, s.valSet, 500, 1)
	if err != nil {
		return nil, err
	}
	r.Metrics.Accuracy, r.Metrics.Loss = val.Accuracy, val.Loss
	e, err := s.verdict(ctx, tu.model, r.Constraint, r.Metrics)
	if err != nil {
		return nil, err
	}
	r.Metrics.Latency, r.Metrics.RelLatency, r.Metrics.RelSpread = e.lat, e.rel, e.spread
	if e.pairs.Len() > 0 {
		r.Dense.Latency = e.pairs.Ref()
	}
	r.Miss = r.Constraint.Miss(r.Metrics, e.spread)
	test, err := eval.Accuracy(ctx, tu.model, s.testSet, 500, 2)
	if err != nil {
		return nil, err
	}
	r.TestAcc = test.Accuracy
	if r.DenseTest, err = s.denseTest(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// denseTest is the dense model's test-set accuracy, computed once.
func (s *Search) denseTest(ctx context.Context) (float64, error) {
	s.denseTestOnce.Do(func() {
		var a eval.Score
		a, s.denseTestErr = eval.Accuracy(ctx, s.base, s.testSet, 500, 2)
		s.denseTestAcc = a.Accuracy
	})
	return s.denseTestAcc, s.denseTestErr
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
		switch sp := r.Metrics.RelSpread; {
		case sp > 0 && sp < 0.001:
			speed += " ±<0.1%"
		case sp >= 0.001 && sp < 1:
			speed += fmt.Sprintf(" ±%.1f%%", 100*sp)
		}
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
	fmt.Fprintf(w, "\nlatency %s, measured afresh against the dense model\n", r.Metrics.Latency.Device)
	if r.Constraint.any() {
		if r.Miss == "" {
			fmt.Fprintf(w, "constraint %s: met (%.3fx the dense latency)\n", r.Constraint, r.Metrics.RelLatency)
		} else {
			fmt.Fprintf(w, "WARNING: constraint %s: the final model misses it on re-measurement: %s\n", r.Constraint, r.Miss)
		}
	}
	if len(r.Candidates) > 1 {
		fmt.Fprintf(w, "chosen among %d candidates measured again and re-ranked:", len(r.Candidates))
		for _, c := range r.Candidates {
			u := ""
			if c.Uniform {
				u = ", uniform"
			}
			fmt.Fprintf(w, " trial %d (%.3fx, val %.2f %%%s)", c.Trial, c.Rel, 100*c.Accuracy, u)
		}
		fmt.Fprintln(w)
	}
	if r.Kept != "" {
		fmt.Fprintf(w, "%s\n", r.Kept)
	}
	for _, x := range append([]*Result{r}, r.Front...) {
		fmt.Fprintf(w, "saved %s and %s", x.ModelPath, x.PlanPath)
		if x.ONNXPath != "" {
			fmt.Fprintf(w, " (as ONNX: %s)", x.ONNXPath)
		}
		fmt.Fprintln(w)
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }
