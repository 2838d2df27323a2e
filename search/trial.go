package search

// The trial loop and one trial: plan, prune, measure, fine-tune, score, store.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/c-bata/goptuna"

	"github.com/autoprune/autoprune/data"
	"github.com/autoprune/autoprune/eval"
	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/prune"
	"github.com/autoprune/autoprune/train"
)

// Run evaluates trials until the study holds the configured number of finished trials
// (counting every worker's), the time limit passes, or ctx is cancelled. A failing trial is
// recorded with its reason and the study goes on; storage errors and cancellation stop it.
func (s *Search) Run(ctx context.Context) error {
	if ctx == nil {
		return errNilContext
	}
	start := time.Now()
	limit := s.cfg.Study.TimeLimit.Duration
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		p, ts, err := s.progress()
		if err != nil {
			return fmt.Errorf("reading the study: %w", err)
		}
		if reaped, err := s.reapStale(ts); err != nil {
			return err
		} else if reaped > 0 {
			continue
		}
		s.noteBest(ts)
		if p.Done() >= s.cfg.Study.Trials {
			s.log.Info(fmt.Sprintf("study %s: %d trials finished (%d complete, %d stopped early, %d failed)", s.cfg.Study.Name, p.Done(), p.Complete, p.Pruned, p.Failed),
				"event", EventStudy, "done", p.Done(), "complete", p.Complete, "pruned", p.Pruned, "failed", p.Failed)
			return nil
		}
		if p.Done()+p.Running >= s.cfg.Study.Trials && p.Waiting == 0 {
			// Other workers are finishing the last trials.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(2 * time.Second):
			}
			continue
		}
		if p.Failed > 2*s.cfg.Study.Trials+10 {
			return fmt.Errorf("study %s: %d trials failed; see \"autoprune report\" for the reasons", s.cfg.Study.Name, p.Failed)
		}
		if limit > 0 && time.Since(start) > limit {
			s.logf("time limit %s reached with %d of %d trials finished", limit, p.Done(), s.cfg.Study.Trials)
			return nil
		}
		if err := s.runOne(ctx, p); err != nil {
			return err
		}
	}
}

// runOne creates (or pops a waiting) trial and evaluates it.
func (s *Search) runOne(ctx context.Context, p tally) error {
	id, err := s.popWaiting()
	if err != nil {
		return err
	}
	if id < 0 {
		if id, err = s.store.st.CreateNewTrial(s.study.ID); err != nil {
			return fmt.Errorf("creating a trial: %w", err)
		}
	}
	trial := goptuna.Trial{Study: s.study, ID: id}
	if err := s.store.st.SetTrialUserAttr(id, attrWorker, s.opts.Worker); err != nil {
		return fmt.Errorf("storing trial %d: %w", id, err)
	}
	stopBeat := s.heartbeat(id)
	defer stopBeat()
	if err := trial.CallRelativeSampler(); err != nil {
		return fmt.Errorf("sampler: %w", err)
	}
	number, _ := trial.Number()
	started := time.Now()
	value, m, steps, terr := s.evaluate(ctx, trial)
	stopBeat()

	if ctx.Err() != nil {
		// Interrupted: mark failed and enqueue the plan again, so a rerun finishes it.
		err := errors.Join(s.store.st.SetTrialUserAttr(id, attrError, "interrupted"), s.store.st.SetTrialState(id, goptuna.TrialStateFail))
		ft, gerr := s.store.st.GetTrial(id)
		err = errors.Join(err, gerr)
		if gerr == nil && len(ft.InternalParams) > 0 {
			err = errors.Join(err, s.study.EnqueueTrial(ft.InternalParams))
		}
		if err != nil {
			s.warnf("trial %d was interrupted and could not be put back (%v): the next run retries it once its heartbeat is stale", number, err)
		}
		return ctx.Err()
	}
	var se *storageError
	if errors.As(terr, &se) {
		return fmt.Errorf("storing trial %d: %w", number, se.err)
	}
	attrs := [][2]string{{attrWall, strconv.FormatInt(time.Since(started).Milliseconds(), 10)}, {attrSteps, strconv.Itoa(steps)}}
	if m != nil {
		b, _ := json.Marshal(m)
		attrs = append(attrs, [2]string{attrMetrics, string(b)})
	}
	if terr != nil && !errors.Is(terr, goptuna.ErrTrialPruned) {
		attrs = append(attrs, [2]string{attrError, terr.Error()})
	}
	for _, a := range attrs {
		if err := s.store.st.SetTrialUserAttr(id, a[0], a[1]); err != nil {
			return fmt.Errorf("storing trial %d: %w", number, err)
		}
	}
	state := goptuna.TrialStateComplete
	switch {
	case errors.Is(terr, goptuna.ErrTrialPruned):
		state = goptuna.TrialStatePruned
		if ft, err := s.store.st.GetTrial(id); err == nil {
			if last, ok := ft.GetLatestStep(); ok {
				value = ft.IntermediateValues[last]
			}
		}
	case terr != nil:
		state = goptuna.TrialStateFail
	}
	if state != goptuna.TrialStateFail {
		if err := s.store.st.SetTrialValue(id, value); err != nil {
			return s.lostTrial(number, err)
		}
	}
	if err := s.store.st.SetTrialState(id, state); err != nil {
		return s.lostTrial(number, err)
	}
	done := p.Done()
	if state != goptuna.TrialStateFail {
		done++
	}
	s.logTrial(number, state, value, m, terr, done, time.Since(started))
	if s.opts.OnTrial != nil {
		ft, err := s.store.st.GetTrial(id)
		if err != nil {
			return fmt.Errorf("reading trial %d back: %w", number, err)
		}
		r := decodeTrial(ft)
		if r.Metric != nil {
			r.Miss = s.constraint().Miss(*r.Metric, 0)
		}
		s.opts.OnTrial(r)
	}
	return nil
}

func (s *Search) lostTrial(number int, err error) error {
	if errors.Is(err, goptuna.ErrTrialCannotBeUpdated) {
		s.logf("trial %d was declared stale by another worker while it ran; its result is dropped", number)
		return nil
	}
	return fmt.Errorf("storing trial %d: %w", number, err)
}

func (s *Search) logTrial(number int, state goptuna.TrialState, value float64, m *eval.Metrics, err error, done int, wall time.Duration) {
	attrs := []any{"event", EventTrial, "trial", number, "done", done, "total", s.cfg.Study.Trials, "wall_s", wall.Seconds()}
	var msg string
	switch {
	case state == goptuna.TrialStateFail:
		msg = fmt.Sprintf("[%d/%d] trial %d failed after %s: %v", done, s.cfg.Study.Trials, number, wall.Round(time.Millisecond), err)
		attrs = append(attrs, "state", "fail", "error", fmt.Sprint(err))
	case m != nil:
		tag, st := "", "complete"
		if state == goptuna.TrialStatePruned {
			tag, st = " (stopped early)", "pruned"
		}
		msg = fmt.Sprintf("[%d/%d] trial %d%s: score %.4f  acc %.2f %%  latency %.3f ms (%.2fx dense)  MACs %.0f %%  %s",
			done, s.cfg.Study.Trials, number, tag, value, 100*m.Accuracy, float64(m.Latency.Median)/1e6,
			m.RelLatency, 100*float64(m.MACs)/float64(max(s.dense.MACs, 1)), wall.Round(time.Millisecond))
		attrs = append(attrs, "state", st, "score", value, "acc", m.Accuracy, "rel_latency", m.RelLatency,
			"latency_ms", float64(m.Latency.Median)/1e6)
		if state == goptuna.TrialStateComplete && s.constraint().Miss(*m, 0) == "" && (s.best == nil || value > s.best.Value) {
			s.best = &TrialResult{Number: number, State: st, Value: value, Metric: m}
		}
	default:
		return
	}
	if b := s.best; b != nil {
		attrs = append(attrs, "best_trial", b.Number, "best_score", b.Value, "best_acc", b.Metric.Accuracy, "best_rel_latency", b.Metric.RelLatency)
	}
	s.log.Info(msg, attrs...)
}

// storageError is a failed write to the study's storage during a trial: it stops the
// study rather than being recorded as the trial's failure, since a trial whose plan or
// metrics are not stored cannot be reported, resumed or chosen.
type storageError struct{ err error }

func (e *storageError) Error() string { return "storage: " + e.err.Error() }
func (e *storageError) Unwrap() error { return e.err }

// popWaiting claims an enqueued trial, or returns -1.
func (s *Search) popWaiting() (int, error) {
	ts, err := s.study.GetTrials()
	if err != nil {
		return -1, err
	}
	for _, t := range ts {
		if t.State != goptuna.TrialStateWaiting {
			continue
		}
		err := s.store.st.SetTrialState(t.ID, goptuna.TrialStateRunning)
		if errors.Is(err, goptuna.ErrTrialCannotBeUpdated) {
			continue
		}
		if err != nil {
			return -1, err
		}
		return t.ID, nil
	}
	return -1, nil
}

// heartbeat refreshes the trial's heartbeat until the returned function is called.
func (s *Search) heartbeat(id int) func() {
	warned := false
	beat := func() {
		if err := s.store.st.SetTrialSystemAttr(id, attrHeartbeat, strconv.FormatInt(time.Now().UnixMilli(), 10)); err != nil && !warned {
			warned = true // once per trial: a storage that fails keeps failing
			s.warnf("heartbeat of a running trial not stored (%v): if this lasts, other workers will take the trial for stale", err)
		}
	}
	beat()
	return s.keepBeating(beat)
}

// keepBeating calls beat every eighth of the lease, from another goroutine, until the
// returned function is called.
func (s *Search) keepBeating(beat func()) func() {
	done := make(chan struct{})
	var once sync.Once
	go func() {
		t := time.NewTicker(s.opts.Lease / 8)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				beat()
			}
		}
	}()
	return func() { once.Do(func() { close(done) }) }
}

// Plan reads a trial's plan from its parameters.
func (s *Search) plan(trial goptuna.Trial) (prune.Plan, error) {
	p := prune.Plan{}
	names := make([]string, 0, len(s.space))
	for n := range s.space {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		var v float64
		var err error
		switch d := s.space[n].(type) {
		case goptuna.DiscreteUniformDistribution:
			v, err = trial.SuggestDiscreteFloat(n, d.Low, d.High, d.Q)
		case goptuna.UniformDistribution:
			v, err = trial.SuggestFloat(n, d.Low, d.High)
		}
		if err != nil {
			return nil, fmt.Errorf("suggesting %s: %w", n, err)
		}
		p[n] = math.Round(v*1e6) / 1e6
	}
	return p, nil
}

// evaluate runs one trial: prune, recalibrate, measure latency, fine-tune in rounds
// reporting the objective to the stopper, and score.
func (s *Search) evaluate(ctx context.Context, trial goptuna.Trial) (float64, *eval.Metrics, int, error) {
	plan, err := s.plan(trial)
	if err != nil {
		return 0, nil, 0, err
	}
	if plan, err = s.fitted(ctx, plan); err != nil {
		return 0, nil, 0, fmt.Errorf("fitting the plan to the latency target: %w", err)
	}
	pb, _ := json.Marshal(plan)
	if err := s.store.st.SetTrialUserAttr(trial.ID, attrPlan, string(pb)); err != nil {
		return 0, nil, 0, &storageError{err}
	}
	number, _ := trial.Number()
	cand, err := prune.Structured(s.base, plan, s.crit)
	if err != nil {
		return 0, nil, 0, err
	}
	arch := cand.Hash()
	if v, m, ok, err := s.scoreDuplicate(trial, arch); ok {
		return v, m, 0, err
	}
	if err := s.store.st.SetTrialUserAttr(trial.ID, attrArch, arch); err != nil {
		return 0, nil, 0, &storageError{err}
	}
	m, err := s.sizeMetrics(cand)
	if err != nil {
		return 0, nil, 0, err
	}
	e, err := s.measure(ctx, cand, false)
	if err != nil {
		return 0, &m, 0, fmt.Errorf("latency: %w", err)
	}
	m.Latency, m.RelLatency, m.RelSpread = e.lat, e.rel, e.spread
	f := s.cfg.Finetune
	seed := s.cfg.Study.Seed*1000003 + int64(number)
	tuned, steps, err := s.finetune(ctx, fmt.Sprintf("trial %d", number), cand, f.Steps, f.Rounds, seed, func(round int, tm *nn.Model) error {
		score, err := eval.Accuracy(ctx, tm, s.valSet, 500, 1)
		if err != nil {
			return err
		}
		m.Accuracy, m.Loss = score.Accuracy, score.Loss
		s.log.Debug(fmt.Sprintf("  trial %d round %d/%d: accuracy %.2f %%", number, round, f.Rounds, 100*m.Accuracy),
			"event", EventRound, "trial", number, "round", round, "rounds", f.Rounds, "acc", m.Accuracy)
		v, err := s.obj.Score(m)
		if err != nil {
			return err
		}
		if round < f.Rounds && s.study.Pruner != nil {
			return trial.ShouldPrune(round, v)
		}
		return nil
	})
	if err != nil {
		return 0, &m, steps, err
	}
	_ = tuned
	if err := s.measureAgain(ctx, cand, number, e, &m); err != nil {
		return 0, &m, steps, fmt.Errorf("latency: %w", err)
	}
	v, err := s.obj.Score(m)
	if err != nil {
		return 0, &m, steps, err
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, &m, steps, fmt.Errorf("objective %s gave %v", s.obj.Name(), v)
	}
	return v, &m, steps, nil
}

// scoreDuplicate scores a trial whose pruned architecture an earlier finished trial already
// had (plans that differ by less than a channel in every group prune to the same model):
// it takes that trial's metrics and score, or its early stop, instead of fine-tuning the
// same model again. ok is false when the architecture is new.
func (s *Search) scoreDuplicate(trial goptuna.Trial, arch string) (float64, *eval.Metrics, bool, error) {
	ts, err := s.study.GetTrials()
	if err != nil {
		return 0, nil, false, &storageError{err}
	}
	for _, t := range ts {
		if t.ID == trial.ID || t.UserAttrs[attrArch] != arch {
			continue
		}
		var m eval.Metrics
		if json.Unmarshal([]byte(t.UserAttrs[attrMetrics]), &m) != nil {
			continue
		}
		switch t.State {
		case goptuna.TrialStateComplete:
		case goptuna.TrialStatePruned:
			step, ok := t.GetLatestStep()
			if !ok {
				continue
			}
			if err := s.store.st.SetTrialIntermediateValue(trial.ID, step, t.IntermediateValues[step]); err != nil {
				return 0, nil, true, &storageError{err}
			}
		default:
			continue
		}
		for _, a := range [][2]string{{attrArch, arch}, {attrDupOf, strconv.Itoa(t.Number)}} {
			if err := s.store.st.SetTrialUserAttr(trial.ID, a[0], a[1]); err != nil {
				return 0, nil, true, &storageError{err}
			}
		}
		number, _ := trial.Number()
		s.logf("  trial %d prunes to the same architecture as trial %d: scored from it", number, t.Number)
		if t.State == goptuna.TrialStatePruned {
			return 0, &m, true, goptuna.ErrTrialPruned
		}
		return t.Value, &m, true, nil
	}
	return 0, nil, false, nil
}

// finetune recalibrates batch norms, then fine-tunes with distillation from the base model
// (labels only when finetune.distill_weight is 0) for steps optimizer steps split in
// rounds, calling onRound with the current model after each round (an error from onRound,
// such as a stop, ends the fine-tuning).
func (s *Search) finetune(ctx context.Context, what string, m *nn.Model, steps, rounds int, seed int64, onRound func(round int, m *nn.Model) error) (*nn.Model, int, error) {
	f := s.cfg.Finetune
	var err error
	if f.BNBatches > 0 {
		if m, err = train.RecalibrateBN(ctx, m, s.trainSet, f.BNBatches, f.Batch, seed); err != nil {
			return nil, 0, fmt.Errorf("batch-norm recalibration: %w", err)
		}
	}
	if steps == 0 {
		return m, 0, onRound(rounds, m)
	}
	cfg := train.Config{
		Steps: steps, BatchSize: f.Batch, LR: f.LR, Schedule: "cosine", Seed: seed,
		Temperature: f.Temperature, DistillWeight: *f.DistillWeight,
	}
	tr, err := train.NewTrainer(m, f.Batch, cfg)
	if err != nil {
		return nil, 0, err
	}
	defer tr.Close()
	classes := len(s.teacher) / s.trainSet.N
	teach := make([]float32, f.Batch*classes)
	b := data.NewBatcher(s.trainSet, f.Batch, true, seed, true)
	done, epoch := 0, int64(0)
	every := max(1, steps/50) // progress events per fine-tune
	for r := 1; r <= rounds; r++ {
		until := steps * r / rounds
		for done < until {
			if err := ctx.Err(); err != nil {
				return nil, done, err
			}
			batch, ok := b.Next()
			if !ok {
				epoch++
				b.Reset(seed + epoch)
				continue
			}
			var loss float64
			if *f.DistillWeight == 0 {
				loss, err = tr.Step(batch.Images, batch.Labels)
			} else {
				for j, i := range batch.Index {
					copy(teach[j*classes:(j+1)*classes], s.teacher[i*classes:(i+1)*classes])
				}
				loss, err = tr.StepDistill(batch.Images, batch.Labels, teach)
			}
			if err != nil {
				return nil, done, err
			}
			if math.IsNaN(loss) || math.IsInf(loss, 0) {
				return nil, done, fmt.Errorf("fine-tuning diverged at step %d (loss %v)", done+1, loss)
			}
			if (done+1)%every == 0 || done+1 == steps {
				s.log.Debug(fmt.Sprintf("  %s: fine-tune step %d/%d loss %.4f", what, done+1, steps, loss),
					"event", EventFinetune, "what", what, "step", done+1, "steps", steps, "loss", loss)
			}
			done++
		}
		cur := tr.Model()
		if err := onRound(r, cur); err != nil {
			return cur, done, err
		}
		m = cur
	}
	return m, done, nil
}

// measureAgain times a complete trial's candidate in a fresh round after its fine-tune,
// seconds after the first: a ratio that the machine's state moved between the two (by
// more than twice latency.max_spread) is scored by the slower of them, so that a trial
// cannot look feasible through one lucky spell; otherwise by every pair of both. Meters
// that time a model alone answer the same again and are not asked.
func (s *Search) measureAgain(ctx context.Context, cand *nn.Model, number int, first latEntry, m *eval.Metrics) error {
	if s.pairMeter() == nil {
		return nil
	}
	again, err := s.measure(ctx, cand, true)
	if err != nil {
		return err
	}
	if first.rel > 0 && math.Abs(again.rel/first.rel-1) > 2*s.cfg.Latency.MaxSpread {
		slow := first
		if again.rel > first.rel {
			slow = again
		}
		s.logf("  trial %d: latency moved during the trial, %.3fx then %.3fx the dense model: scored at %.3fx", number, first.rel, again.rel, slow.rel)
		m.Latency, m.RelLatency, m.RelSpread = slow.lat, slow.rel, max(slow.spread, math.Abs(again.rel-first.rel)/(again.rel+first.rel))
		return nil
	}
	both := entryOf(first.pairs.Merge(again.pairs), first.rounds+again.rounds)
	m.Latency, m.RelLatency, m.RelSpread = both.lat, both.rel, both.spread
	return nil
}
