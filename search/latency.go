package search

import (
	"context"
	"fmt"
	"math"
	"sort"

	"github.com/c-bata/goptuna"

	"github.com/autoprune/autoprune/eval"
	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/objectives"
	"github.com/autoprune/autoprune/prune"
)

// latEntry is what the search knows of one architecture's latency.
type latEntry struct {
	pairs  eval.Pairs   // every interleaved pair measured so far (pair meters only)
	lat    eval.Latency // the candidate's distribution
	rel    float64      // latency relative to the dense model
	spread float64      // relative half-width of rel's 95 % interval; 0 for an exact meter
	rounds int          // measurement rounds behind it
}

// Trust rules for one round of interleaved pairs, besides latency.max_spread.
const (
	// maxRefDrift is how far the dense reference may move between the first and the
	// second half of a round before the round is repeated (the machine got busy or
	// changed speed while measuring).
	maxRefDrift = 0.2
	// maxRatioDisagreement is how far the median of the per-pair ratios may sit from the
	// ratio of the medians: a wide gap means the pairs were not timed under the same
	// conditions.
	maxRatioDisagreement = 0.1
)

// untrusted says why the pairs p (every round so far; last is the latest round) cannot be
// scored yet, or "" when they can.
func untrusted(p, last eval.Pairs, maxSpread float64) string {
	if sp := p.Spread(); sp > maxSpread {
		return fmt.Sprintf("ratio known only within ±%.1f %% (latency.max_spread %.1f %%)", 100*sp, 100*maxSpread)
	}
	n := last.Len()
	first := eval.Pairs{RefTimes: last.RefTimes[:n/2], CandTimes: last.CandTimes[:n/2]}.Ref().Median
	second := eval.Pairs{RefTimes: last.RefTimes[n/2:], CandTimes: last.CandTimes[n/2:]}.Ref().Median
	if first > 0 && second > 0 {
		if d := math.Abs(float64(second)/float64(first) - 1); d > maxRefDrift {
			return fmt.Sprintf("the dense reference drifted %.0f %% during the round", 100*d)
		}
	}
	ref, cand := p.Ref().Median, p.Cand().Median
	if r := p.Ratio(); ref > 0 && r > 0 {
		if d := math.Abs(float64(cand)/float64(ref)/r - 1); d > maxRatioDisagreement {
			return fmt.Sprintf("median of per-pair ratios %.3f and ratio of medians %.3f disagree", r, float64(cand)/float64(ref))
		}
	}
	return ""
}

// pairMeter returns the interleaved meter of the configured device, or nil when the
// configured meter times candidates alone (a lookup table, the MACs proxy, a custom Meter).
func (s *Search) pairMeter() eval.PairMeter {
	if s.meter == nil {
		l := s.cfg.Latency
		return &eval.LocalPairMeter{Batch: l.Batch, Threads: l.Threads, Warmup: l.Warmup, Runs: l.Runs, CPU: l.CPU}
	}
	if pm, ok := s.meter.(eval.PairMeter); ok {
		return pm
	}
	return nil
}

// latency returns a candidate's latency and its ratio to the dense model, from the cache
// when its architecture was measured before.
func (s *Search) latency(ctx context.Context, m *nn.Model) (eval.Latency, float64, error) {
	e, err := s.measure(ctx, m, false)
	return e.lat, e.rel, err
}

// measure returns what is known of m's latency. Unless fresh, a cached architecture is not
// measured again. A pair meter measures in rounds of interleaved pairs against the dense
// model, repeating a round (up to latency.max_rounds) while the ratio is not known within
// latency.max_spread or the round looks disturbed; rounds merge into the cache. With fresh,
// the answer comes from new rounds only (and the cache merges them too), so that one
// unlucky measurement never decides a winner.
func (s *Search) measure(ctx context.Context, m *nn.Model, fresh bool) (latEntry, error) {
	key := m.Hash()
	s.latMu.Lock()
	old, ok := s.latCache[key]
	s.latMu.Unlock()
	if ok && !fresh {
		return old, nil
	}
	pm := s.pairMeter()
	if pm == nil {
		if ok {
			return old, nil // a meter that times a model alone answers the same again
		}
		lat, err := s.meter.Measure(ctx, m)
		if err != nil {
			return latEntry{}, err
		}
		e := latEntry{lat: lat, rounds: 1}
		if s.dense.Latency.Median > 0 {
			e.rel = float64(lat.Median) / float64(s.dense.Latency.Median)
		}
		s.store1(key, e)
		return e, nil
	}
	l := s.cfg.Latency
	var p eval.Pairs
	rounds := 0
	for rounds < l.MaxRounds {
		q, err := pm.MeasurePair(ctx, s.base, m)
		if err != nil {
			return latEntry{}, err
		}
		if err := q.Check(); err != nil {
			return latEntry{}, err
		}
		p = p.Merge(q)
		rounds++
		why := untrusted(p, q, l.MaxSpread)
		if why == "" {
			break
		}
		if rounds < l.MaxRounds {
			s.logf("  latency measured again (round %d of at most %d): %s", rounds+1, l.MaxRounds, why)
		} else {
			s.logf("  latency after %d rounds still untrusted (%s): scored with the merged rounds, ratio %.3f ± %.1f %%",
				rounds, why, p.Ratio(), 100*p.Spread())
		}
	}
	e := entryOf(p, rounds)
	if ok {
		merged := entryOf(old.pairs.Merge(p), old.rounds+rounds)
		s.store1(key, merged)
	} else {
		s.store1(key, e)
	}
	return e, nil
}

func entryOf(p eval.Pairs, rounds int) latEntry {
	return latEntry{pairs: p, lat: p.Cand(), rel: p.Ratio(), spread: p.Spread(), rounds: rounds}
}

func (s *Search) store1(key string, e latEntry) {
	s.latMu.Lock()
	s.latCache[key] = e
	s.latMu.Unlock()
}

// measureDenseLatency measures the base model: against itself with a pair meter, alone
// otherwise.
func (s *Search) measureDenseLatency(ctx context.Context) (eval.Latency, error) {
	if pm := s.pairMeter(); pm != nil {
		p, err := pm.MeasurePair(ctx, s.base, s.base)
		if err != nil {
			return eval.Latency{}, err
		}
		if err := p.Check(); err != nil {
			return eval.Latency{}, err
		}
		return p.Ref(), nil
	}
	return s.meter.Measure(ctx, s.base)
}

// nearTarget returns the least pruned uniform plan (every searched group at one ratio of
// the space's grid) whose measured latency meets the objective's latency target, or the
// one closest to it when none does, with that latency. Pruning and timing a plan without fine-tuning takes milliseconds, and starting
// on the target's latency contour spares a sampler the trials it would spend walking there.
// nil when the config has no latency target.
func (s *Search) nearTarget(ctx context.Context) (prune.Plan, float64, error) {
	if s.cfg.Objective.Target == "" {
		return nil, 0, nil
	}
	target, err := objectives.ParseTarget(s.cfg.Objective.Target)
	if err != nil {
		return nil, 0, err
	}
	top := 0.0
	for _, d := range s.space {
		top = math.Max(top, high(d))
	}
	step := s.cfg.Prune.Step
	if step <= 0 {
		step = 0.05
	}
	uniform := func(r float64) prune.Plan {
		plan := prune.Plan{}
		for name, d := range s.space {
			plan[name] = math.Min(r, high(d))
		}
		return plan
	}
	// The least pruned plan that meets the target, or else the one closest to it.
	best, bestGap, bestRel := -1.0, math.Inf(1), 0.0
	feasible := false
	for k := 0; ; k++ {
		r := s.cfg.Prune.MinRatio + float64(k)*step
		if r > top+1e-9 {
			break
		}
		m, err := prune.Structured(s.base, s.shape(uniform(r)), s.crit)
		if err != nil {
			return nil, 0, err
		}
		lat, rel, err := s.latency(ctx, m)
		if err != nil {
			return nil, 0, err
		}
		over := rel - target.Rel
		if target.Rel == 0 {
			over = float64(lat.Median-target.Abs) / float64(target.Abs)
		}
		if feasible {
			continue
		}
		if over <= 0 {
			best, bestRel, feasible = r, rel, true
			continue
		}
		if over < bestGap {
			best, bestGap, bestRel = r, over, rel
		}
	}
	if best < 0 {
		return nil, 0, nil
	}
	if feasible {
		s.logf("uniform %.2f in every group is the least pruned uniform plan that meets the target %s (measured %.3fx the dense latency)", best, target, bestRel)
	} else {
		s.logf("no uniform plan meets the target %s; uniform %.2f in every group comes closest (measured %.3fx the dense latency)", target, best, bestRel)
	}
	return uniform(best), bestRel, nil
}

// high is the upper bound of a search-space distribution.
func high(d interface{}) float64 {
	switch d := d.(type) {
	case goptuna.DiscreteUniformDistribution:
		return d.High
	case goptuna.UniformDistribution:
		return d.High
	}
	return 0
}

// shape rounds a plan's kept widths as every pruned model has them (prune.min_channels,
// prune.round_to).
func (s *Search) shape(p prune.Plan) prune.Plan {
	return p.Shape(s.groups, s.cfg.Prune.MinChannels, s.cfg.Prune.RoundTo)
}

// fitted is a sampler's plan as a trial prunes it: shaped, then fitted to the target.
func (s *Search) fitted(ctx context.Context, plan prune.Plan) (prune.Plan, error) {
	return s.fitTarget(ctx, s.shape(plan))
}

// fitTarget shifts every ratio of plan by one amount (clamped to each group's bounds) so
// that the pruned model just meets the latency target, as measured: the least pruning that
// meets it, found by bisection on the shift. The sampler decides how pruning is spread over
// the groups; the fit spends the latency budget the user gave, no less (a trial far under
// the target throws accuracy away) and no more (a trial over it cannot win), so trials
// compare at the same latency. The target is aimed 1 % low, so that a re-measurement's noise
// does not push the winner over it. When even the most pruned shift misses the target, that
// shift is returned. The plan is unchanged when the config has no latency target or
// prune.fit_target is false.
func (s *Search) fitTarget(ctx context.Context, plan prune.Plan) (prune.Plan, error) {
	p := s.cfg.Prune
	cons := Constraint{Target: s.constraint().Target} // the size budget does not move with the shift
	if !*p.FitTarget || cons.Target == "" {
		return plan, nil
	}
	apply := func(d float64) prune.Plan {
		out := prune.Plan{}
		for name, r := range plan {
			hi := p.MaxRatio
			if dist, ok := s.space[name]; ok {
				hi = high(dist)
			}
			out[name] = math.Round(math.Max(p.MinRatio, math.Min(hi, r+d))*1e6) / 1e6
		}
		return out.Shape(s.groups, p.MinChannels, p.RoundTo)
	}
	meets := func(d float64) (bool, error) {
		m, err := prune.Structured(s.base, apply(d), s.crit)
		if err != nil {
			return false, err
		}
		e, err := s.measure(ctx, m, false)
		if err != nil {
			return false, err
		}
		return cons.Miss(eval.Metrics{Latency: e.lat, RelLatency: e.rel}, -0.01) == "", nil // 1 % low
	}
	// lo never meets the target, hi always does.
	lo, hi := -1.0, 0.0
	ok, err := meets(0)
	if err != nil {
		return nil, err
	}
	if !ok {
		lo, hi = 0, 1
		if ok, err = meets(1); err != nil || !ok {
			return apply(1), err
		}
	} else if ok, err = meets(-1); err != nil || ok {
		return apply(-1), err
	}
	for i := 0; i < 6; i++ {
		mid := (lo + hi) / 2
		ok, err := meets(mid)
		if err != nil {
			return nil, err
		}
		if ok {
			hi = mid
		} else {
			lo = mid
		}
	}
	return apply(hi), nil
}

// verdict measures m afresh for a decision against the constraint (is a candidate still
// under the target, does the delivered model meet it). A fresh measurement that meets it is
// the answer. One that misses is not trusted alone: m is measured afresh twice more and
// the answer is the measurement with the median ratio of the three, so that neither one
// unlucky round nor one lucky one decides. base holds the other metrics the constraint
// reads (size).
func (s *Search) verdict(ctx context.Context, m *nn.Model, cons Constraint, base eval.Metrics) (latEntry, error) {
	miss := func(e latEntry) string {
		mm := base
		mm.Latency, mm.RelLatency = e.lat, e.rel
		return cons.Miss(mm, e.spread)
	}
	first, err := s.measure(ctx, m, true)
	if err != nil || miss(first) == "" || s.pairMeter() == nil {
		return first, err
	}
	es := []latEntry{first}
	for len(es) < 3 {
		e, err := s.measure(ctx, m, true)
		if err != nil {
			return latEntry{}, err
		}
		es = append(es, e)
	}
	sort.Slice(es, func(i, j int) bool { return es[i].rel < es[j].rel })
	s.logf("  over the target at %.3fx: measured twice more, %.3fx and %.3fx; the median %.3fx decides", first.rel, es[0].rel, es[2].rel, es[1].rel)
	return es[1], nil
}

// Remeasure times several plans side by side: rounds rounds, each measuring every distinct
// architecture once against the dense model (in an order that turns from round to round),
// so that a busy spell of the machine falls on all of them alike. Plans that prune to the
// same architecture share one measurement. It returns each plan's latency ratio and the
// relative half-width of its 95 % interval, or nil slices when the configured meter times
// candidates alone (its answers do not drift between calls). The cache is not touched.
func (s *Search) Remeasure(ctx context.Context, plans []prune.Plan, rounds int) (rel, spread []float64, err error) {
	pm := s.pairMeter()
	if pm == nil || len(plans) == 0 {
		return nil, nil, nil
	}
	var models []*nn.Model
	of := make([]int, len(plans)) // plan -> index into models
	seen := map[string]int{}
	for i, p := range plans {
		m, err := prune.Structured(s.base, p, s.crit)
		if err != nil {
			return nil, nil, fmt.Errorf("latency: plan %d: %w", i, err)
		}
		k, ok := seen[m.Hash()]
		if !ok {
			k = len(models)
			seen[m.Hash()] = k
			models = append(models, m)
		}
		of[i] = k
	}
	pairs := make([]eval.Pairs, len(models))
	for r := 0; r < rounds; r++ {
		for j := range models {
			k := (j + r) % len(models)
			q, err := pm.MeasurePair(ctx, s.base, models[k])
			if err != nil {
				return nil, nil, err
			}
			if err := q.Check(); err != nil {
				return nil, nil, err
			}
			pairs[k] = pairs[k].Merge(q)
		}
	}
	rel, spread = make([]float64, len(plans)), make([]float64, len(plans))
	for i, k := range of {
		rel[i], spread[i] = pairs[k].Ratio(), pairs[k].Spread()
	}
	return rel, spread, nil
}
