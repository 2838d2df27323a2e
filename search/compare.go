package search

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/autoprune/autoprune/config"
	"github.com/autoprune/autoprune/objectives"
	"github.com/autoprune/autoprune/prune"
)

// CompareOptions say what Compare runs.
type CompareOptions struct {
	Samplers []string  // one study per sampler and seed (config.Samplers)
	Seeds    []int64   // study seeds
	Uniform  []float64 // ratios of the uniform baseline; none: no baseline
	Trials   int       // trials per study; 0: the config's
	// Tau is how many trials per study are fine-tuned like the winner to measure Kendall's
	// tau between their short and final accuracies (0: none).
	Tau int
	// Paired delivers the uniform baseline once per seed, with the final fine-tune seed of
	// that seed's studies, and judges each winner against its own seed's curve; otherwise
	// one curve is delivered, with the config's seed.
	Paired bool
	Logger *slog.Logger // progress; default text lines on os.Stderr
}

// Compare judges the search by what a user gets: it runs (or resumes) one study per sampler
// and seed from base (all in NAME-compare.db beside it, warm starts off), delivers each
// winner as "autoprune search" does, and compares it with uniform pruning delivered the
// same way, interpolated at the winner's re-measured latency. base's objective.target must
// be relative to the dense model (such as 0.5x).
func Compare(ctx context.Context, base *config.Config, o CompareOptions) (*Comparison, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	t, err := objectives.ParseTarget(base.Objective.Target)
	if err != nil || t.Rel <= 0 {
		return nil, base.KeyError("objective.target", fmt.Errorf("%q: a comparison needs a target relative to the dense model, such as 0.5x", base.Objective.Target))
	}
	target := t.Rel
	// Every study shares the base model: trained once, before the first.
	if _, err := TrainBase(ctx, base, Options{Logger: log}); err != nil {
		return nil, err
	}
	cmp := Comparison{Target: target, Steps: base.Final.Steps, DenseTest: OptFloat(math.NaN())}
	study := func(method string, seed int64) *config.Config {
		cfg := *base
		cfg.Study.Seed = seed
		cfg.Study.Storage = base.Study.Name + "-compare.db"
		cfg.Study.TimeLimit = config.Duration{}
		cfg.Study.Warmstart = []float64{}
		cfg.Study.Name = fmt.Sprintf("%s-%s-%s-s%d", base.Study.Name, base.Objective.Target, method, seed)
		cfg.Study.Sampler = method
		cfg.Final.Out = cfg.Study.Name + "-best.safetensors"
		cfg.Final.PlanOut = cfg.Study.Name + "-best.plan.toml"
		if o.Trials > 0 {
			cfg.Study.Trials = o.Trials
		}
		return &cfg
	}
	// uniformAt delivers the uniform plans, and the uniform plan fitted to the target, with
	// the fine-tune seed of a study of this seed.
	uniformAt := func(seed int64) ([]UniformPoint, error) {
		cfg := study("random", seed)
		cfg.Study.Name = base.Study.Name + "-" + base.Objective.Target + "-uniform"
		if o.Paired {
			cfg.Study.Name += fmt.Sprintf("-s%d", seed)
		}
		cfg.Study.Screen = 0 // a study that runs no trial: it only delivers uniform plans
		log.Info(fmt.Sprintf("== uniform pruning, %d plans, each fine-tuned for %d steps (seed %d)", len(o.Uniform), cfg.Final.Steps, seed))
		s, err := Open(ctx, cfg, Options{Logger: log})
		if err != nil {
			return nil, err
		}
		defer s.Close()
		var pts []UniformPoint
		for _, r := range o.Uniform {
			res, err := s.Evaluate(ctx, prune.Uniform(s.Groups(), r))
			if err != nil {
				return nil, fmt.Errorf("compare: uniform %.2f: %w", r, err)
			}
			log.Info(fmt.Sprintf("uniform %.2f: test acc %.2f %%, %.3fx the dense latency", r, 100*res.TestAcc, res.Metrics.RelLatency))
			cmp.DenseTest = OptFloat(res.DenseTest)
			pts = append(pts, UniformPoint{Seed: seed, Ratio: r, Rel: res.Metrics.RelLatency, Joint: OptFloat(math.NaN()), TestAcc: res.TestAcc, ValAcc: res.Metrics.Accuracy, plan: res.Plan})
		}
		// The uniform plan fitted to the target, as every study's first trial is.
		plan, err := s.UniformAtTarget(ctx)
		if err != nil {
			return nil, fmt.Errorf("compare: uniform plan fitted to the target: %w", err)
		}
		if plan != nil {
			res, err := s.Evaluate(ctx, plan)
			if err != nil {
				return nil, fmt.Errorf("compare: uniform plan fitted to the target: %w", err)
			}
			mean := 0.0
			for _, r := range plan {
				mean += r / float64(len(plan))
			}
			log.Info(fmt.Sprintf("uniform %.3f (fitted to %gx): test acc %.2f %%, %.3fx the dense latency", mean, target, 100*res.TestAcc, res.Metrics.RelLatency))
			pts = append(pts, UniformPoint{Seed: seed, Ratio: mean, Rel: res.Metrics.RelLatency, Joint: OptFloat(math.NaN()), TestAcc: res.TestAcc, ValAcc: res.Metrics.Accuracy, Fitted: true, plan: res.Plan})
		}
		return pts, nil
	}
	if len(o.Uniform) > 0 {
		curveSeeds := []int64{base.Study.Seed}
		if o.Paired {
			curveSeeds = o.Seeds
		}
		for _, seed := range curveSeeds {
			pts, err := uniformAt(seed)
			if err != nil {
				return nil, err
			}
			cmp.Uniform = append(cmp.Uniform, pts...)
		}
	}
	for _, m := range o.Samplers {
		for _, seed := range o.Seeds {
			row, err := compareStudy(ctx, study(m, seed), o.Tau, log)
			if err != nil {
				return nil, err
			}
			row.Method, row.Seed = m, seed
			for _, u := range cmp.Uniform {
				if u.Fitted && (!o.Paired || u.Seed == seed) && !math.IsNaN(float64(row.TestAcc)) {
					row.Fitted, row.FittedGain = OptFloat(u.TestAcc), row.TestAcc-OptFloat(u.TestAcc)
				}
			}
			cmp.Rows = append(cmp.Rows, row)
		}
	}
	if len(cmp.Uniform) == 0 {
		return &cmp, nil
	}
	// The winners and the curve were measured minutes apart, each in its own rounds: measure
	// them again side by side, so that the curve is read at a latency measured in the same
	// rounds as its points.
	seed := base.Study.Seed
	if o.Paired {
		seed = o.Seeds[0]
	}
	cfg := study("random", seed)
	cfg.Study.Name = base.Study.Name + "-" + base.Objective.Target + "-uniform"
	if o.Paired {
		cfg.Study.Name += fmt.Sprintf("-s%d", seed)
	}
	cfg.Study.Screen = 0
	if err := cmp.remeasure(ctx, cfg, log); err != nil {
		return nil, err
	}
	for i := range cmp.Rows {
		r := &cmp.Rows[i]
		if math.IsNaN(float64(r.TestAcc)) {
			continue
		}
		var c [][2]float64
		for _, u := range cmp.Uniform {
			if !o.Paired || u.Seed == r.Seed {
				c = append(c, [2]float64{u.at(), u.TestAcc})
			}
		}
		r.UniformAt = OptFloat(interpolateAt(c, r.at()))
		r.Gain = r.TestAcc - r.UniformAt
	}
	return &cmp, nil
}

// jointRounds is how many rounds Comparison.remeasure measures each plan in.
const jointRounds = 5

// remeasure measures the delivered winners and the uniform curve again side by side
// (Search.Remeasure, with the study cfg's meter) and keeps the ratios in Joint.
func (c *Comparison) remeasure(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	var plans []prune.Plan
	for _, u := range c.Uniform {
		plans = append(plans, u.plan)
	}
	for _, r := range c.Rows {
		if r.plan != nil {
			plans = append(plans, r.plan)
		}
	}
	log.Info(fmt.Sprintf("== the winners and the uniform curve measured again side by side (%d plans, %d rounds)", len(plans), jointRounds))
	s, err := Open(ctx, cfg, Options{Logger: log})
	if err != nil {
		return err
	}
	defer s.Close()
	rel, spread, err := s.Remeasure(ctx, plans, jointRounds)
	if err != nil || rel == nil {
		return err
	}
	k := 0
	for i := range c.Uniform {
		c.Uniform[i].Joint = OptFloat(rel[k])
		k++
	}
	for i := range c.Rows {
		if c.Rows[i].plan != nil {
			c.Rows[i].Joint, c.Rows[i].JointSpread = OptFloat(rel[k]), OptFloat(spread[k])
			k++
		}
	}
	return nil
}

// CompareRow is one study of a Comparison, judged by what a user gets: its winner after
// the final fine-tune, with test accuracy and latency measured afresh.
type CompareRow struct {
	Method   string   `json:"method"`
	Seed     int64    `json:"seed"`
	Study    string   `json:"study"`
	Trials   int      `json:"finished_trials"`
	Feasible int      `json:"trials_meeting_target"`
	Winner   int      `json:"winner_trial"` // -1: no trial met the target
	TestAcc  OptFloat `json:"test_acc"`     // the winner after the final fine-tune
	Rel      OptFloat `json:"rel_latency"`  // the winner's latency re-measured against the dense model
	Spread   OptFloat `json:"rel_spread"`
	Meets    bool     `json:"meets_target"`
	// Joint is the winner's latency ratio measured again at the end of the comparison, in
	// the same rounds as the uniform curve's points (UniformPoint.Joint), and JointSpread
	// the relative half-width of its 95 % interval; null when the meter times candidates
	// alone.
	Joint       OptFloat `json:"rel_latency_joint"`
	JointSpread OptFloat `json:"rel_spread_joint"`
	// UniformAt is the uniform curve's test accuracy interpolated at the winner's latency
	// (Joint on the curve of the joint latencies, else Rel on the curve as delivered); Gain
	// is TestAcc - UniformAt.
	UniformAt OptFloat `json:"uniform_test_acc_at_same_latency"`
	Gain      OptFloat `json:"gain_over_uniform"`
	// Fitted is the test accuracy of the uniform plan fitted to the target (the curve's
	// point of the same seed), and FittedGain is TestAcc - Fitted: the gain at the target
	// itself, both plans meeting it, which the latency measured on each does not move.
	Fitted     OptFloat `json:"uniform_fitted_test_acc"`
	FittedGain OptFloat `json:"gain_over_uniform_fitted"`
	// Unranked is the trial the stored scores alone would have chosen among the candidates
	// that stayed under the target when measured again, and UnrankedAcc its
	// test accuracy after the same final fine-tune (null when it is the winner).
	Unranked    int      `json:"unranked_trial"`
	UnrankedAcc OptFloat `json:"unranked_test_acc"`
	// Ranked is the searched candidate the re-ranking put first when the uniform plan was
	// delivered instead (final.uniform_margin), and RankedAcc its test accuracy after the
	// same final fine-tune: what the rule gave up or saved. -1 and null otherwise.
	Ranked    int      `json:"ranked_trial"`
	RankedAcc OptFloat `json:"ranked_test_acc"`
	// Tau is Kendall's rank correlation between the trials' validation accuracy after their
	// short fine-tune and their test accuracy after the final one, on TauN sampled trials.
	Tau  OptFloat `json:"kendall_tau"`
	TauN int      `json:"tau_trials"`
	// ZeroTau is the same for the screening's score (validation accuracy without any
	// fine-tuning, batch norms recalibrated) on the same trials.
	ZeroTau OptFloat `json:"kendall_tau_zero_shot"`
	Wall    float64  `json:"wall_s"`

	plan prune.Plan // the winner's plan
}

// at is the latency the curve is read at: the joint measurement when there is one.
func (r CompareRow) at() float64 {
	if !math.IsNaN(float64(r.Joint)) {
		return float64(r.Joint)
	}
	return float64(r.Rel)
}

// UniformPoint is one plan of the uniform baseline, delivered like a winner.
type UniformPoint struct {
	Seed  int64   `json:"seed"` // the study seed whose final fine-tune seed it was delivered with
	Ratio float64 `json:"ratio"`
	Rel   float64 `json:"rel_latency"` // measured when the plan was delivered
	// Joint is the latency ratio measured again beside the winners (CompareRow.Joint).
	Joint   OptFloat `json:"rel_latency_joint"`
	TestAcc float64  `json:"test_acc"`
	ValAcc  float64  `json:"val_acc"`
	// Fitted marks the uniform plan fitted to the target (Ratio is then its mean ratio):
	// the point of the curve where the winners are, so that the curve is not read by a
	// straight line between two distant ratios.
	Fitted bool `json:"fitted_to_target,omitempty"`

	plan prune.Plan
}

// at is the latency the curve places the point at: the joint measurement when there is one.
func (u UniformPoint) at() float64 {
	if !math.IsNaN(float64(u.Joint)) {
		return float64(u.Joint)
	}
	return u.Rel
}

// OptFloat is a number that may be missing (NaN), written as null in JSON.
type OptFloat float64

// MarshalJSON writes NaN as null.
func (f OptFloat) MarshalJSON() ([]byte, error) {
	if math.IsNaN(float64(f)) {
		return []byte("null"), nil
	}
	return json.Marshal(float64(f))
}

// Comparison is the outcome of a Comparison: the uniform baseline and one row per study.
type Comparison struct {
	Target float64 `json:"target"`
	Steps  int     `json:"final_steps"`
	// DenseTest is the dense model's test accuracy (when a uniform curve was delivered):
	// what no plan is expected to exceed, so DenseTest minus the fitted uniform point is
	// the most a search can gain over uniform pruning at the target.
	DenseTest OptFloat       `json:"dense_test_acc"`
	Uniform   []UniformPoint `json:"uniform"`
	Rows      []CompareRow   `json:"rows"`
}

// compareStudy runs (or resumes) one study, delivers its winner, and measures what the
// Comparison reports of it.
func compareStudy(ctx context.Context, cfg *config.Config, tauN int, log *slog.Logger) (CompareRow, error) {
	nan := OptFloat(math.NaN())
	row := CompareRow{Study: cfg.Study.Name, Winner: -1, Unranked: -1, Ranked: -1, TestAcc: nan, Rel: nan, Spread: nan, Joint: nan, JointSpread: nan,
		UniformAt: nan, Gain: nan, Fitted: nan, FittedGain: nan, UnrankedAcc: nan, RankedAcc: nan, Tau: nan, ZeroTau: nan}
	log.Info(fmt.Sprintf("== %s", cfg.Study.Name))
	start := time.Now()
	s, err := Open(ctx, cfg, Options{Logger: log})
	if err != nil {
		return row, err
	}
	defer s.Close()
	if err := s.Run(ctx); err != nil {
		return row, err
	}
	sum, err := s.Summary()
	if err != nil {
		return row, err
	}
	row.Trials, row.Feasible = sum.Counts["complete"]+sum.Counts["pruned"], sum.Feasible
	res, err := s.Finalize(ctx)
	switch {
	case errors.Is(err, ErrInfeasible):
		log.Warn(err.Error())
		row.Wall = time.Since(start).Seconds()
		return row, nil
	case err != nil:
		return row, err
	}
	row.Winner, row.Unranked = res.Trial, res.Unranked
	row.TestAcc, row.Rel, row.Spread = OptFloat(res.TestAcc), OptFloat(res.Metrics.RelLatency), OptFloat(res.Metrics.RelSpread)
	row.Meets = res.Miss == ""
	row.plan = res.Plan
	final := map[int]float64{res.Trial: res.TestAcc}
	for _, c := range res.Candidates {
		if c.TestAcc > 0 { // delivered by the re-ranking itself
			final[c.Trial] = c.TestAcc
		}
	}
	deliver := func(n int) (float64, error) {
		if acc, ok := final[n]; ok {
			return acc, nil
		}
		for _, t := range sum.Trials {
			if t.Number == n {
				r, err := s.Evaluate(ctx, t.Plan)
				if err != nil {
					return 0, fmt.Errorf("compare: trial %d: %w", n, err)
				}
				final[n] = r.TestAcc
				return r.TestAcc, nil
			}
		}
		return 0, fmt.Errorf("compare: no trial %d", n)
	}
	if res.Unranked != res.Trial {
		acc, err := deliver(res.Unranked)
		if err != nil {
			return row, err
		}
		row.UnrankedAcc = OptFloat(acc)
	}
	if res.Kept != "" {
		top := -1
		for i, c := range res.Candidates {
			if !c.Uniform && (top < 0 || c.Accuracy > res.Candidates[top].Accuracy) {
				top = i
			}
		}
		if top >= 0 {
			acc, err := deliver(res.Candidates[top].Trial)
			if err != nil {
				return row, err
			}
			row.Ranked, row.RankedAcc = res.Candidates[top].Trial, OptFloat(acc)
		}
	}
	if tauN > 0 {
		// Trials evenly spread over the ranks of the stored validation accuracy, among the
		// complete ones that meet the target.
		var pool []TrialResult
		for _, t := range sum.Trials {
			if t.State == "complete" && t.Miss == "" && t.Metric != nil {
				pool = append(pool, t)
			}
		}
		sort.SliceStable(pool, func(i, j int) bool { return pool[i].Metric.Accuracy > pool[j].Metric.Accuracy })
		n := min(tauN, len(pool))
		var short, zero, long []float64
		for k := 0; k < n && n >= 2; k++ {
			t := pool[k*(len(pool)-1)/(n-1)]
			acc, err := deliver(t.Number)
			if err != nil {
				return row, err
			}
			z, err := s.ZeroShot(ctx, t.Plan)
			if err != nil {
				return row, fmt.Errorf("compare: trial %d: %w", t.Number, err)
			}
			short, zero, long = append(short, t.Metric.Accuracy), append(zero, z), append(long, acc)
		}
		if len(short) >= 2 {
			row.Tau, row.TauN = OptFloat(kendallTau(short, long)), len(short)
			row.ZeroTau = OptFloat(kendallTau(zero, long))
		}
	}
	row.Wall = time.Since(start).Seconds()
	return row, nil
}

// kendallTau is Kendall's tau-b rank correlation of x and y.
func kendallTau(x, y []float64) float64 {
	var conc, disc, tx, ty float64
	for i := range x {
		for j := i + 1; j < len(x); j++ {
			dx, dy := x[i]-x[j], y[i]-y[j]
			switch {
			case dx == 0 && dy == 0:
			case dx == 0:
				tx++
			case dy == 0:
				ty++
			case (dx > 0) == (dy > 0):
				conc++
			default:
				disc++
			}
		}
	}
	den := math.Sqrt((conc + disc + tx) * (conc + disc + ty))
	if den == 0 {
		return math.NaN()
	}
	return (conc - disc) / den
}

// interpolateAt returns the accuracy of a latency-accuracy curve at relative latency x,
// linearly between the closest measured points on either side of it (NaN when the points
// do not bracket x).
func interpolateAt(pts [][2]float64, x float64) float64 {
	lo, hi := -1, -1
	for i, p := range pts {
		if p[0] <= x && (lo < 0 || p[0] > pts[lo][0]) {
			lo = i
		}
		if p[0] >= x && (hi < 0 || p[0] < pts[hi][0]) {
			hi = i
		}
	}
	switch {
	case lo < 0 || hi < 0:
		return math.NaN()
	case pts[hi][0] == pts[lo][0]:
		return math.Max(pts[lo][1], pts[hi][1])
	}
	f := (x - pts[lo][0]) / (pts[hi][0] - pts[lo][0])
	return pts[lo][1] + f*(pts[hi][1]-pts[lo][1])
}

func (c *Comparison) Write(w io.Writer) {
	pct := func(v OptFloat) string {
		if math.IsNaN(float64(v)) {
			return "—"
		}
		return fmt.Sprintf("%.2f", 100*float64(v))
	}
	if len(c.Uniform) > 0 {
		fmt.Fprintf(w, "uniform pruning, each plan fine-tuned for %d steps:\n", c.Steps)
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "seed\tratio\tlatency\tagain, beside the winners\ttest acc %%\t\n")
		for _, u := range c.Uniform {
			ratio := fmt.Sprintf("%.2f", u.Ratio)
			if u.Fitted {
				ratio = fmt.Sprintf("%.3f (fitted to the target)", u.Ratio)
			}
			fmt.Fprintf(tw, "%d\t%s\t%.3fx\t%s\t%.2f\t\n", u.Seed, ratio, u.Rel, times(u.Joint), 100*u.TestAcc)
		}
		tw.Flush()
		if dense := float64(c.DenseTest); !math.IsNaN(dense) {
			fitted, n := 0.0, 0
			for _, u := range c.Uniform {
				if u.Fitted {
					fitted, n = fitted+u.TestAcc, n+1
				}
			}
			if n > 0 {
				fitted /= float64(n)
				fmt.Fprintf(w, "dense model: test acc %.2f %%; uniform pruning fitted to the target keeps %.2f %%: a searched plan can gain at most %.2f points over it unless it beats the dense model\n",
					100*dense, 100*fitted, 100*(dense-fitted))
			} else {
				fmt.Fprintf(w, "dense model: test acc %.2f %%\n", 100*dense)
			}
		}
		fmt.Fprintln(w)
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "method\tseed\twinner\ttest acc %%\tlatency (<= %.2fx?)\tagain, beside the curve\tuniform at same latency %%\tgain pt\tover uniform fitted pt\tunranked choice %%\ttau\ttrials\ttime s\t\n", c.Target)
	type agg struct {
		gain, fitted, acc, tau []float64
		meets, runs            int
		joint, jointMeets      int
		worse                  int
	}
	by := map[string]*agg{}
	var order []string
	for _, r := range c.Rows {
		lat, unr, tau := "—", "(same)", "—"
		if !math.IsNaN(float64(r.Rel)) {
			ok := "yes"
			if !r.Meets {
				ok = "NO"
			}
			lat = fmt.Sprintf("%.3fx %s", float64(r.Rel), ok)
		}
		if r.Winner < 0 {
			unr = "—"
		} else if r.Unranked != r.Winner {
			unr = fmt.Sprintf("%s (trial %d)", pct(r.UnrankedAcc), r.Unranked)
		}
		if !math.IsNaN(float64(r.Tau)) {
			tau = fmt.Sprintf("%.2f, zero-shot %.2f (n=%d)", float64(r.Tau), float64(r.ZeroTau), r.TauN)
		}
		gain := "—"
		if !math.IsNaN(float64(r.Gain)) {
			gain = fmt.Sprintf("%+.2f", 100*float64(r.Gain))
		}
		winner := fmt.Sprint(r.Winner)
		if r.Ranked >= 0 {
			winner = fmt.Sprintf("%d, uniform kept (ranked first: trial %d, %s)", r.Winner, r.Ranked, pct(r.RankedAcc))
		}
		fitted := "—"
		if !math.IsNaN(float64(r.FittedGain)) {
			fitted = fmt.Sprintf("%+.2f (%s)", 100*float64(r.FittedGain), pct(r.Fitted))
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%.0f\t\n", r.Method, r.Seed, winner, pct(r.TestAcc), lat,
			r.jointVerdict(c.Target), pct(r.UniformAt), gain, fitted, unr, tau, r.Trials, r.Wall)
		a, ok := by[r.Method]
		if !ok {
			a = &agg{}
			by[r.Method] = a
			order = append(order, r.Method)
		}
		a.runs++
		a.gain = append(a.gain, float64(r.Gain))
		a.fitted = append(a.fitted, float64(r.FittedGain))
		a.acc = append(a.acc, float64(r.TestAcc))
		a.tau = append(a.tau, float64(r.Tau))
		if r.Winner >= 0 && r.Meets {
			a.meets++
		}
		if !math.IsNaN(float64(r.Joint)) {
			a.joint++
			if float64(r.Joint) <= c.Target*(1+r.jointSpread()) {
				a.jointMeets++
			}
		}
		if r.Unranked != r.Winner && float64(r.UnrankedAcc) > float64(r.TestAcc) {
			a.worse++
		}
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "method\truns\twinners at target\ttest acc %% (mean ± sd)\tgain over uniform, pt (mean ± sd)\tover uniform fitted, pt\tmean tau\tre-ranking worse than unranked\t\n")
	for _, m := range order {
		a := by[m]
		am, as := meanSD(a.acc)
		gm, gs := meanSD(a.gain)
		fm, fs := meanSD(a.fitted)
		tm, _ := meanSD(a.tau)
		at := fmt.Sprintf("%d of %d", a.meets, a.runs)
		if a.joint > 0 {
			at += fmt.Sprintf("; again: %d of %d", a.jointMeets, a.joint)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%d of %d\t\n", m, a.runs, at, pmSD(100*am, 100*as), pmSD(100*gm, 100*gs), pmSD(100*fm, 100*fs), fmtNaN(tm), a.worse, a.runs)
	}
	tw.Flush()
}

// jointVerdict writes the winner's joint latency with its spread, and whether it meets
// target: "yes" at or under it, "within spread" over it by less than the measurement's
// own 95 % interval, "NO" beyond; a dash when there is no joint measurement.
func (r CompareRow) jointVerdict(target float64) string {
	j := float64(r.Joint)
	if math.IsNaN(j) {
		return "—"
	}
	sp := r.jointSpread()
	ok := "NO"
	if j <= target {
		ok = "yes"
	} else if j <= target*(1+sp) {
		ok = "within spread"
	}
	if math.IsNaN(float64(r.JointSpread)) {
		return fmt.Sprintf("%.3fx %s", j, ok)
	}
	return fmt.Sprintf("%.3fx ±%.1f%% %s", j, 100*sp, ok)
}

// jointSpread is JointSpread, or 0 when it is missing.
func (r CompareRow) jointSpread() float64 {
	if sp := float64(r.JointSpread); sp > 0 {
		return sp
	}
	return 0
}

// times writes a latency ratio, or a dash when it is missing.
func times(v OptFloat) string {
	if math.IsNaN(float64(v)) {
		return "—"
	}
	return fmt.Sprintf("%.3fx", float64(v))
}

func pmSD(m, sd float64) string {
	if math.IsNaN(m) {
		return "—"
	}
	return fmt.Sprintf("%.2f ± %.2f", m, sd)
}

func fmtNaN(v float64) string {
	if math.IsNaN(v) {
		return "—"
	}
	return fmt.Sprintf("%.2f", v)
}

func meanSD(v []float64) (float64, float64) {
	var n, s, ss float64
	for _, x := range v {
		if !math.IsNaN(x) {
			n++
			s += x
			ss += x * x
		}
	}
	if n == 0 {
		return math.NaN(), math.NaN()
	}
	m := s / n
	if n < 2 {
		return m, 0
	}
	return m, math.Sqrt(math.Max(0, (ss-n*m*m)/(n-1)))
}
