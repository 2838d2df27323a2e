package search

import (
	"context"
	"fmt"
	"math"
	"math/rand"
	"sort"
	"time"

	"github.com/c-bata/goptuna"

	"github.com/autoprune/autoprune/eval"
	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/prune"
)

// screened is a plan scored by the screening: the plan as drawn (the trial's parameters;
// fitting it to the target again gives the same model), and its accuracy without
// fine-tuning.
type screened struct {
	params   map[string]float64
	accuracy float64
}

// screen draws study.screen random plans from the search space, fits each to the latency
// target, and scores the pruned model without fine-tuning: batch norms recalibrated on
// training batches, then validation accuracy (EagleEye's adaptive batch-norm evaluation).
// Measured on Fashion-MNIST, that zero-shot accuracy ranks plans fitted to one target much
// as their accuracy after a 300-step fine-tune does (docs/BENCHMARKS.md), at a fraction of
// a trial's cost, so the study starts from the best study.screen_keep of many plans
// instead of from random ones. Plans are drawn from the study's seed; plans that prune to
// the same model are scored once, and those that prune to the model of the uniform plan
// near the target (near: the study's first trial already) are skipped. It returns the best
// first, nil without a fitted target.
func (s *Search) screen(ctx context.Context, near prune.Plan) ([]screened, error) {
	st := s.cfg.Study
	if st.Screen == 0 || st.ScreenKeep == 0 || !*s.cfg.Prune.FitTarget || s.constraint().Target == "" {
		return nil, nil
	}
	names := make([]string, 0, len(s.space))
	for n := range s.space {
		names = append(names, n)
	}
	sort.Strings(names)
	rng := rand.New(rand.NewSource(st.Seed*7919 + 17))
	seen := map[string]bool{}
	if near != nil {
		fitted, err := s.fitted(ctx, near)
		if err != nil {
			return nil, fmt.Errorf("screening: fitting the uniform plan to the target: %w", err)
		}
		m, err := prune.Structured(s.base, fitted, s.crit)
		if err != nil {
			return nil, fmt.Errorf("screening: %w", err)
		}
		seen[m.Hash()] = true
	}
	var out []screened
	start := time.Now()
	s.logf("screening %d random plans fitted to the target %s, scored without fine-tuning (batch norms recalibrated)", st.Screen, s.cfg.Objective.Target)
	for i := 0; i < st.Screen; i++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if i > 0 && i%8 == 0 {
			s.logf("  screened %d of %d plans (%s)", i, st.Screen, time.Since(start).Round(time.Second))
		}
		params := map[string]float64{}
		for _, n := range names {
			params[n] = draw(rng, s.space[n])
		}
		plan, err := s.fitted(ctx, prune.Plan(params))
		if err != nil {
			return nil, fmt.Errorf("screening: fitting plan %d to the target: %w", i+1, err)
		}
		cand, err := prune.Structured(s.base, plan, s.crit)
		if err != nil {
			return nil, fmt.Errorf("screening: plan %d: %w", i+1, err)
		}
		if seen[cand.Hash()] {
			continue
		}
		seen[cand.Hash()] = true
		acc, err := s.zeroShot(ctx, cand)
		if err != nil {
			return nil, fmt.Errorf("screening: plan %d: %w", i+1, err)
		}
		out = append(out, screened{params: params, accuracy: acc})
	}
	s.logf("  screened %d plans in %s (%d distinct models)", st.Screen, time.Since(start).Round(time.Second), len(out))
	sort.SliceStable(out, func(i, j int) bool { return out[i].accuracy > out[j].accuracy })
	if len(out) > st.ScreenKeep {
		out = out[:st.ScreenKeep]
	}
	for _, p := range out {
		s.logf("  screened plan %v: %.2f %% without fine-tuning: a first trial", p.params, 100*p.accuracy)
	}
	return out, nil
}

// UniformAtTarget returns the uniform plan fitted to the latency target, as the study's
// first trial is: the least pruned uniform ratio on the grid that meets the target, shifted
// until its measured latency just meets it. It is the baseline a searched plan must beat at
// the same latency. nil when the config has no latency target.
func (s *Search) UniformAtTarget(ctx context.Context) (prune.Plan, error) {
	near, _, err := s.nearTarget(ctx)
	if err != nil || near == nil {
		return nil, err
	}
	return s.fitted(ctx, near)
}

// ZeroShot is the screening's score of a plan: the pruned model's validation accuracy with
// its batch norms recalibrated and no fine-tuning.
func (s *Search) ZeroShot(ctx context.Context, plan prune.Plan) (float64, error) {
	cand, err := prune.Structured(s.base, s.shape(plan), s.crit)
	if err != nil {
		return 0, err
	}
	return s.zeroShot(ctx, cand)
}

// zeroShot is a pruned model's validation accuracy with its batch norms recalibrated (on
// batches drawn from the study's seed) and no fine-tuning.
func (s *Search) zeroShot(ctx context.Context, cand *nn.Model) (float64, error) {
	m, _, err := s.finetune(ctx, "screening", cand, 0, 1, s.cfg.Study.Seed*1000003-3, func(int, *nn.Model) error { return nil })
	if err != nil {
		return 0, err
	}
	a, err := eval.Accuracy(ctx, m, s.valSet, 500, 1)
	if err != nil {
		return 0, err
	}
	return a.Accuracy, nil
}

// draw is a random value of a search-space distribution: uniform, on its grid when it has
// one.
func draw(rng *rand.Rand, d interface{}) float64 {
	switch d := d.(type) {
	case goptuna.DiscreteUniformDistribution:
		k := math.Floor((d.High - d.Low) / d.Q)
		v := d.Low + float64(rng.Intn(int(k)+1))*d.Q
		return math.Round(v*1e6) / 1e6
	case goptuna.UniformDistribution:
		return math.Round((d.Low+rng.Float64()*(d.High-d.Low))*1e6) / 1e6
	}
	return 0
}
