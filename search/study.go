package search

// The study in its storage: creation or resumption, the warm start, progress, stale
// trials.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/c-bata/goptuna"
	"github.com/c-bata/goptuna/cmaes"
	"github.com/c-bata/goptuna/medianstopping"
	"github.com/c-bata/goptuna/successivehalving"
	"github.com/c-bata/goptuna/tpe"

	"github.com/autoprune/autoprune/config"
	"github.com/autoprune/autoprune/prune"
)

// makingGrace is how long a worker waits for a study without groups whose maker has not
// yet written a heartbeat (it is written right after the study is created).
const makingGrace = 15 * time.Second

// processSeed derives this process's sampler seed: the configured seed for the process
// that creates the study (so one worker reproduces a study), mixed with the number of
// trials already stored and the worker label otherwise (so a resumed or second worker does
// not repeat the first points).
func processSeed(seed int64, existing int, creator bool, worker string) int64 {
	if creator && existing == 0 {
		return seed
	}
	h := fnv.New64a()
	fmt.Fprintf(h, "%d/%d/%s/%d", seed, existing, worker, time.Now().UnixNano())
	return int64(h.Sum64() & math.MaxInt64)
}

func (s *Search) openStudy(ctx context.Context) error {
	store, err := OpenStorage(s.cfg.Resolve(s.cfg.Study.Storage))
	if err != nil {
		return err
	}
	s.store = store
	name := s.cfg.Study.Name
	_, lookErr := store.st.GetStudyIDFromName(name)
	creator := lookErr != nil
	existing := 0
	if !creator {
		id, _ := store.st.GetStudyIDFromName(name)
		if ts, err := store.st.GetAllTrials(id); err == nil {
			existing = len(ts)
		}
	}
	opts, err := s.studyOptions(ctx, existing, creator)
	if err != nil {
		return err
	}
	// Another worker may be creating the study right now: goptuna creates it and then sets
	// its direction, and the creator then measures the dense model and the uniform plans
	// before it records the groups. Wait for a study in the making to be complete.
	var study *goptuna.Study
	wait := time.Duration(0)
wait:
	for ; ; wait += 500 * time.Millisecond {
		study, err = goptuna.CreateStudy(name, opts...)
		if err != nil {
			if _, lookErr := store.st.GetStudyIDFromName(name); !creator || lookErr != nil {
				return fmt.Errorf("study %s in %s: %w", name, redact(store.URL), err)
			}
			// Another worker created the study between our look-up and our insert (the
			// database refused a second study of that name): load theirs.
		} else if creator && study.Direction() == goptuna.StudyDirectionMaximize {
			break
		}
		if creator {
			// Two workers that both found no study may both have asked goptuna to create it:
			// the loser loads it, as a worker that found it does, with a seed of its own.
			creator = false
			if opts, err = s.studyOptions(ctx, existing, creator); err != nil {
				return err
			}
			if study == nil {
				continue
			}
		}
		attrs, err := study.GetUserAttrs()
		if err != nil {
			return fmt.Errorf("study %s in %s: %w", name, redact(store.URL), err)
		}
		trials, err := study.GetTrials()
		if err != nil {
			return fmt.Errorf("study %s in %s: %w", name, redact(store.URL), err)
		}
		if attrs[studyAttrGroups] != "" || len(trials) > 0 {
			break
		}
		// No groups yet: a creator at work refreshes its heartbeat; one that died (or a
		// study made by goptuna alone) leaves none, and the study is made again now.
		beat, _ := strconv.ParseInt(attrs[studyAttrMaking], 10, 64)
		switch {
		case beat == 0 && wait >= makingGrace:
			s.logf("study %s has no groups and no maker's heartbeat: making it again", name)
			break wait
		case beat != 0 && time.Since(time.UnixMilli(beat)) > s.opts.Lease:
			s.logf("study %s: its maker's last heartbeat is %s old: making it again", name, time.Since(time.UnixMilli(beat)).Round(time.Second))
			break wait
		case wait == 0:
			s.logf("study %s is being made by another worker (it measures the dense model and the uniform plans first): waiting", name)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	if study.Direction() != goptuna.StudyDirectionMaximize {
		return fmt.Errorf("study %s in %s exists and minimises: not an autoprune study", name, redact(store.URL))
	}
	s.study = study
	if creator {
		if err := s.initStudy(ctx); err != nil {
			return err
		}
	} else if err := s.checkStudy(ctx); err != nil {
		return err
	}
	return nil
}

// studyOptions chooses the process's seed and builds goptuna's options from the config:
// sampler, stopper and storage.
func (s *Search) studyOptions(ctx context.Context, existing int, creator bool) ([]goptuna.StudyOption, error) {
	s.seed = processSeed(s.cfg.Study.Seed, existing, creator, s.opts.Worker)
	opts := []goptuna.StudyOption{
		goptuna.StudyOptionStorage(s.store.st),
		goptuna.StudyOptionDirection(goptuna.StudyDirectionMaximize),
		goptuna.StudyOptionLogger(nil),
		goptuna.StudyOptionLoadIfExists(true),
	}
	switch s.cfg.Study.Sampler {
	case "tpe":
		if !globalSeedWorks() {
			s.warnf("rand.Seed has no effect in this program (add \"godebug randseednop=0\" to its go.mod): TPE will not repeat a study exactly")
		}
		opts = append(opts, goptuna.StudyOptionSampler(reseeded{Sampler: tpe.NewSampler(
			tpe.SamplerOptionSeed(s.seed), tpe.SamplerOptionNumberOfStartupTrials(6)), seed: s.seed}))
	case "random":
		opts = append(opts, goptuna.StudyOptionSampler(goptuna.NewRandomSampler(goptuna.RandomSamplerOptionSeed(s.seed))))
	case "cmaes", "cmaes-ipop":
		copts := []cmaes.SamplerOption{cmaes.SamplerOptionSeed(s.seed), cmaes.SamplerOptionNStartupTrials(0)}
		x0, _, err := s.nearTarget(ctx)
		if err != nil {
			return nil, fmt.Errorf("choosing where CMA-ES starts: %w", err)
		}
		if x0 != nil {
			// CMA-ES starts on the target's latency contour instead of the middle of the
			// space, sparing the generations it would spend walking there.
			copts = append(copts, cmaes.SamplerOptionInitialMean(x0))
		}
		if s.cfg.Study.Sampler == "cmaes-ipop" {
			copts = append(copts, cmaes.SamplerOptionIPop(2))
		}
		opts = append(opts,
			goptuna.StudyOptionRelativeSampler(cmaes.NewSampler(copts...)),
			goptuna.StudyOptionSampler(goptuna.NewRandomSampler(goptuna.RandomSamplerOptionSeed(s.seed))),
			goptuna.StudyOptionDefineSearchSpace(s.space))
	default:
		return nil, s.cfg.KeyError("study.sampler", fmt.Errorf("%q is not supported (config.Samplers lists %s)", s.cfg.Study.Sampler, strings.Join(config.Samplers, ", ")))
	}
	switch s.cfg.Stopper.Kind {
	case "none":
	case "median":
		p := medianstopping.NewMedianPruner()
		p.NStartUpTrials = s.cfg.Stopper.Startup
		p.NWarmUpSteps = s.cfg.Stopper.MinRounds
		opts = append(opts, goptuna.StudyOptionPruner(p))
	case "successive-halving":
		p, err := successivehalving.NewPruner(successivehalving.OptionMinResource(max(1, s.cfg.Stopper.MinRounds)), successivehalving.OptionReductionFactor(3))
		if err != nil {
			return nil, err
		}
		opts = append(opts, goptuna.StudyOptionPruner(p))
	default:
		return nil, s.cfg.KeyError("stopper.kind", fmt.Errorf("%q is not supported (config.Stoppers lists %s)", s.cfg.Stopper.Kind, strings.Join(config.Stoppers, ", ")))
	}
	return opts, nil
}

// initStudy records the dense measurements and the searched groups, and enqueues the
// uniform warm-start plans so the search can never report worse than uniform pruning, and
// the best plans of the screening.
func (s *Search) initStudy(ctx context.Context) error {
	// Measured before the study is marked as made: a creator killed while screening leaves
	// a study without groups and trials, which the next run makes again. Meanwhile a
	// heartbeat tells waiting workers that the maker is alive.
	beat := func() error {
		return s.study.SetUserAttr(studyAttrMaking, strconv.FormatInt(time.Now().UnixMilli(), 10))
	}
	if err := beat(); err != nil {
		return &storageError{fmt.Errorf("study %s: recording the maker's heartbeat: %w", s.cfg.Study.Name, err)}
	}
	defer s.keepBeating(func() {
		if err := beat(); err != nil {
			s.warnf("study %s: refreshing the maker's heartbeat: %v", s.cfg.Study.Name, err)
		}
	})()
	near, _, err := s.nearTarget(ctx)
	if err != nil {
		return fmt.Errorf("measuring uniform plans: %w", err)
	}
	best, err := s.screen(ctx, near)
	if err != nil {
		return err
	}
	dense, _ := json.Marshal(s.dense)
	groups, _ := json.Marshal(s.groups)
	// The groups go last: they mark the study as made (other workers wait for them, and a
	// study without them and without trials is made again).
	attrs := [][2]string{{studyAttrDense, string(dense)}, {studyAttrConfig, s.cfg.Path}}
	var text strings.Builder
	if err := toml.NewEncoder(&text).Encode(s.cfg); err == nil {
		attrs = append(attrs, [2]string{studyAttrConfigTOML, text.String()})
	}
	if c := s.constraint(); c.any() {
		b, _ := json.Marshal(c)
		attrs = append(attrs, [2]string{studyAttrConstraint, string(b)})
	}
	if key := s.objectiveKey(); key != "" {
		attrs = append(attrs, [2]string{studyAttrObjective, key})
	}
	attrs = append(attrs, [2]string{studyAttrGroups, string(groups)})
	for _, a := range attrs {
		if err := s.study.SetUserAttr(a[0], a[1]); err != nil {
			return &storageError{fmt.Errorf("study %s: recording %s: %w", s.cfg.Study.Name, a[0], err)}
		}
	}
	seen := map[string]bool{}
	enqueue := func(params map[string]float64, what string) error {
		key := fmt.Sprint(params)
		if seen[key] {
			return nil
		}
		seen[key] = true
		if err := s.study.EnqueueTrial(params); err != nil {
			return fmt.Errorf("enqueueing the %s plan: %w", what, err)
		}
		return nil
	}
	// Plans fitted to the target make every uniform plan the same one, the least pruned
	// that meets it (enqueued below): the warm-start ratios would only repeat it.
	fitted := *s.cfg.Prune.FitTarget && s.constraint().Target != ""
	for _, r := range s.cfg.Study.Warmstart {
		if fitted {
			break
		}
		params := map[string]float64{}
		for name, d := range s.space {
			params[name] = clampToSpace(d, r)
		}
		if err := enqueue(params, fmt.Sprintf("uniform %.2f", r)); err != nil {
			return err
		}
	}
	// Every sampler also starts from the least pruned uniform plan that meets the target.
	if near != nil {
		params := map[string]float64{}
		for name, d := range s.space {
			params[name] = clampToSpace(d, near[name])
		}
		if err := enqueue(params, "uniform plan closest to the target"); err != nil {
			return err
		}
	}
	for _, p := range best {
		if err := enqueue(p.params, "screened"); err != nil {
			return err
		}
	}
	return nil
}

// checkStudy makes sure a resumed study searches the same groups, and finishes making a
// study whose creator stopped before recording them.
func (s *Search) checkStudy(ctx context.Context) error {
	attrs, err := s.study.GetUserAttrs()
	if err != nil {
		return err
	}
	if attrs[studyAttrGroups] == "" {
		trials, err := s.study.GetTrials()
		if err != nil {
			return err
		}
		if len(trials) == 0 {
			s.logf("study %s was left half made (no groups, no trial): making it again", s.cfg.Study.Name)
			return s.initStudy(ctx)
		}
	}
	var stored []prune.Group
	if err := json.Unmarshal([]byte(attrs[studyAttrGroups]), &stored); err != nil {
		return fmt.Errorf("study %s exists but was not made by autoprune (no groups recorded)", s.cfg.Study.Name)
	}
	if groupNames(stored) != groupNames(s.groups) {
		return fmt.Errorf("study %s searches groups [%s] but this config gives [%s]: use another study name or storage",
			s.cfg.Study.Name, groupNames(stored), groupNames(s.groups))
	}
	if was, now := attrs[studyAttrObjective], s.objectiveKey(); was != "" && now != "" && was != now {
		return s.cfg.KeyError("objective", fmt.Errorf("study %s was scored with %s, this config gives %s: its scores would not compare (use another study name, or the objective it was made with)",
			s.cfg.Study.Name, was, now))
	}
	return nil
}

// objectiveKey describes the config's objective, "" for one given in Options.
func (s *Search) objectiveKey() string {
	if s.opts.Objective != nil {
		return fmt.Sprintf("objective %s (given in Go)", s.opts.Objective.Name())
	}
	o := s.cfg.Objective
	key := fmt.Sprintf("objective %s, target %q", o.Kind, o.Target)
	if o.Weight != nil {
		key += fmt.Sprintf(", weight %g", *o.Weight)
	}
	if o.MaxBytes != 0 || o.SizeWeight != 0 {
		key += fmt.Sprintf(", max_bytes %d, size_weight %g", o.MaxBytes, o.SizeWeight)
	}
	return key
}

func clampToSpace(d interface{}, r float64) float64 {
	switch d := d.(type) {
	case goptuna.DiscreteUniformDistribution:
		v := d.Low + math.Floor((r-d.Low)/d.Q+1e-9)*d.Q
		return math.Max(d.Low, math.Min(d.High, v))
	case goptuna.UniformDistribution:
		return math.Max(d.Low, math.Min(d.High, r))
	}
	return r
}

// tally is the progress of the study, counted from storage.
type tally struct {
	Complete, Pruned, Failed, Running, Waiting int
}

// Done is the number of finished evaluations: complete plus early-stopped trials.
func (p tally) Done() int { return p.Complete + p.Pruned }

func (s *Search) progress() (tally, []goptuna.FrozenTrial, error) {
	ts, err := s.study.GetTrials()
	if err != nil {
		return tally{}, nil, err
	}
	var p tally
	for _, t := range ts {
		switch t.State {
		case goptuna.TrialStateComplete:
			p.Complete++
		case goptuna.TrialStatePruned:
			p.Pruned++
		case goptuna.TrialStateFail:
			p.Failed++
		case goptuna.TrialStateRunning:
			p.Running++
		case goptuna.TrialStateWaiting:
			p.Waiting++
		}
	}
	return p, ts, nil
}

// noteBest records the best complete trial of ts that meets the constraint.
func (s *Search) noteBest(ts []goptuna.FrozenTrial) {
	c := s.constraint()
	for _, ft := range ts {
		if ft.State != goptuna.TrialStateComplete || (s.best != nil && ft.Value <= s.best.Value) {
			continue
		}
		if t := decodeTrial(ft); t.Metric != nil && c.Miss(*t.Metric, 0) == "" {
			s.best = &t
		}
	}
}

// reapStale marks RUNNING trials whose heartbeat is older than the lease as failed and
// enqueues their plans again, so a killed worker loses no point of the search.
func (s *Search) reapStale(ts []goptuna.FrozenTrial) (int, error) {
	n := 0
	for _, t := range ts {
		if t.State != goptuna.TrialStateRunning {
			continue
		}
		last := t.DatetimeStart
		if hb, err := strconv.ParseInt(t.SystemAttrs[attrHeartbeat], 10, 64); err == nil {
			last = time.UnixMilli(hb)
		}
		if time.Since(last) < s.opts.Lease {
			continue
		}
		err := s.store.st.SetTrialState(t.ID, goptuna.TrialStateFail)
		if errors.Is(err, goptuna.ErrTrialCannotBeUpdated) {
			continue // another worker got there first
		}
		if err != nil {
			return n, err
		}
		if err := s.store.st.SetTrialUserAttr(t.ID, attrError, fmt.Sprintf("stale: no heartbeat since %s (worker %s vanished)", last.Format(time.RFC3339), t.UserAttrs[attrWorker])); err != nil {
			s.warnf("stale trial %d failed, but its reason was not stored: %v", t.Number, err)
		}
		if len(t.InternalParams) > 0 {
			if err := s.study.EnqueueTrial(t.InternalParams); err != nil {
				return n, err
			}
		}
		n++
		s.logf("trial %d was left running by a stopped worker: marked failed, plan enqueued again", t.Number)
	}
	return n, nil
}

// uniform says whether a trial's drawn plan prunes every searched group by one ratio, as
// the uniform warm starts do (each clamped to its group's range).
func (s *Search) uniform(params map[string]float64) bool {
	if len(params) == 0 || len(params) != len(s.space) {
		return false
	}
	r := math.Inf(-1)
	for _, v := range params {
		r = math.Max(r, v)
	}
	for name, d := range s.space {
		v, ok := params[name]
		if !ok || math.Abs(v-clampToSpace(d, r)) > 1e-6 {
			return false
		}
	}
	return true
}
