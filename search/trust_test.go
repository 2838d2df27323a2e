package search

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/c-bata/goptuna"

	"github.com/autoprune/autoprune/config"
	"github.com/autoprune/autoprune/eval"
	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/prune"
)

func TestConstraintMiss(t *testing.T) {
	rel := func(r float64) eval.Metrics {
		return eval.Metrics{RelLatency: r, Latency: eval.Latency{Median: time.Duration(r * float64(time.Millisecond))}, Bytes: 1000}
	}
	tests := []struct {
		c    Constraint
		m    eval.Metrics
		tol  float64
		miss string // substring; "" for feasible
	}{
		{Constraint{}, rel(3), 0, ""},
		{Constraint{Target: "0.5x"}, rel(0.5), 0, ""},
		{Constraint{Target: "0.5x"}, rel(0.51), 0, "latency 0.510x over the target 0.5x"},
		{Constraint{Target: "0.5x"}, rel(0.51), 0.03, ""},
		{Constraint{Target: "0.5x"}, rel(0), 0, "not measured"},
		{Constraint{Target: "2ms"}, rel(1.9), 0, ""},
		{Constraint{Target: "2ms"}, rel(2.5), 0, "over the target 2ms"},
		{Constraint{MaxBytes: 1000}, rel(9), 0, ""},
		{Constraint{MaxBytes: 999}, rel(0.1), 0, "size 1000 bytes over the budget 999"},
		{Constraint{Target: "0.5x", MaxBytes: 999}, rel(0.4), 0, "size"},
	}
	for _, tc := range tests {
		got := tc.c.Miss(tc.m, tc.tol)
		if (tc.miss == "") != (got == "") || !strings.Contains(got, tc.miss) {
			t.Errorf("%v.Miss(rel %v, tol %v) = %q, want %q", tc.c, tc.m.RelLatency, tc.tol, got, tc.miss)
		}
	}
}

// Under a constraint, candidates that meet it (within their spread) rank by accuracy alone:
// the objective's penalty for being over the target by less than the measurement's noise
// must not choose. Without a constraint the score ranks.
func TestFeasibleRankedByAccuracy(t *testing.T) {
	target := Constraint{Target: "0.5x"}
	tests := []struct {
		name string
		cons Constraint
		a, b Candidate
		want bool // a ranks above b
	}{
		{"more accurate, within its spread over the target", target,
			Candidate{Accuracy: 0.80, Rel: 0.51, Spread: 0.03, Score: 0.80 * 0.5 / 0.51},
			Candidate{Accuracy: 0.79, Rel: 0.49, Spread: 0.03, Score: 0.79}, true},
		{"less accurate, further under the target", target,
			Candidate{Accuracy: 0.78, Rel: 0.40, Score: 0.78},
			Candidate{Accuracy: 0.79, Rel: 0.49, Score: 0.79}, false},
		{"same accuracy: the score breaks the tie", target,
			Candidate{Accuracy: 0.79, Score: 0.79},
			Candidate{Accuracy: 0.79, Score: 0.78}, true},
		{"no constraint: the score decides", Constraint{},
			Candidate{Accuracy: 0.80, Score: 0.70},
			Candidate{Accuracy: 0.75, Score: 0.72}, false},
	}
	for _, tc := range tests {
		if got := better(tc.cons, tc.a, tc.b); got != tc.want {
			t.Errorf("%s: better = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// fakeDevice is a device whose forward pass takes a time proportional to the model's MACs,
// times a speed factor that can drift while a study runs (thermal throttling, frequency
// scaling), plus optional lies: the first measurement of each architecture is off by
// lieFactor.
type fakeDevice struct {
	drift     bool    // the device slows down 2x over the first 200 pairs it times
	lieFactor float64 // the first round of each candidate reports this ratio factor (0: none)
	noise     float64 // relative noise of each candidate time
	// slow is an architecture whose measurements after its first slowAfter rounds read
	// 1.5x slower: a model that lands over the target late.
	slow      string
	slowAfter int
	slowOne   int
	// slowAll applies the slow rule to every candidate architecture, each counted apart,
	// with the factor slowAll: every model reads slower once it has been measured
	// slowAfter times.
	slowAll  float64
	slowSeen map[string]int

	mu    sync.Mutex
	pairs int
	seen  map[string]bool
	rng   *rand.Rand
}

func (d *fakeDevice) speed() float64 {
	if !d.drift {
		return 1
	}
	return 1 + math.Min(float64(d.pairs)/200, 1) // 1x, then up to 2x slower
}

func macsOf(m *nn.Model) float64 {
	_, macs, err := m.Totals()
	if err != nil {
		return 1
	}
	return float64(macs)
}

// Measure times a model alone, as a meter without pairs would.
func (d *fakeDevice) Measure(ctx context.Context, m *nn.Model) (eval.Latency, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.pairs += 20
	t := time.Duration(macsOf(m) * d.speed())
	return eval.Latency{Median: t, P90: t, Mean: t, Min: t, N: 20, Batch: 1, Threads: 1}, nil
}

// MeasurePair times both models interleaved, 20 pairs.
func (d *fakeDevice) MeasurePair(ctx context.Context, ref, cand *nn.Model) (eval.Pairs, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.seen == nil {
		d.seen = map[string]bool{}
	}
	lie := 1.0
	if h := cand.Hash(); d.lieFactor > 0 && !d.seen[h] && ref.Hash() != h {
		d.seen[h] = true
		lie = d.lieFactor
	}
	if cand.Hash() == d.slow {
		if d.slowOne >= d.slowAfter {
			lie = 1.5
		}
		d.slowOne++
	}
	if h := cand.Hash(); d.slowAll > 0 && h != ref.Hash() {
		if d.slowSeen == nil {
			d.slowSeen = map[string]int{}
		}
		if d.slowSeen[h] >= d.slowAfter {
			lie = d.slowAll
		}
		d.slowSeen[h]++
	}
	if d.rng == nil {
		d.rng = rand.New(rand.NewSource(1))
	}
	p := eval.Pairs{Batch: 1, Threads: 1}
	for i := 0; i < 20; i++ {
		d.pairs++
		sp := d.speed()
		noise := math.Max(0.1, 1+d.noise*d.rng.NormFloat64())
		p.RefTimes = append(p.RefTimes, time.Duration(macsOf(ref)*sp))
		p.CandTimes = append(p.CandTimes, time.Duration(macsOf(cand)*sp*lie*noise))
	}
	return p, nil
}

func openWith(t *testing.T, path string, opts Options) *Search {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	opts.Logger = testLogger(t)
	if _, err := TrainBase(context.Background(), cfg, opts); err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// A device whose speed halves during the study must not change the study: the ratio of
// interleaved pairs cancels the drift, so the same trials and the same winner come out.
func TestDeviceDriftDoesNotChooseTheWinner(t *testing.T) {
	if testing.Short() {
		t.Skip("fine-tunes models")
	}
	run := func(drift bool) (plans []string, winner int) {
		dir := t.TempDir()
		path := writeConfig(t, dir, "drift", "drift.db", 8, "[objective]\nkind = \"mnas-hard\"\ntarget = \"0.4x\"\n[final]\nsteps = 5\nrerank_steps = 5\n")
		s := openWith(t, path, Options{Meter: &fakeDevice{drift: drift}})
		if err := s.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		sum := checkStudy(t, s.store, "drift", 8)
		for _, tr := range sum.Trials {
			plans = append(plans, fmt.Sprint(tr.Plan))
		}
		res, err := s.Finalize(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return plans, res.Trial
	}
	steadyPlans, steady := run(false)
	driftPlans, drifting := run(true)
	if strings.Join(steadyPlans, ";") != strings.Join(driftPlans, ";") || steady != drifting {
		t.Errorf("drift changed the study:\nsteady   %v winner %d\ndrifting %v winner %d", steadyPlans, steady, driftPlans, drifting)
	}
}

// A noisy round is measured again, up to latency.max_rounds, and the rounds merge.
func TestNoisyLatencyIsMeasuredAgain(t *testing.T) {
	if testing.Short() {
		t.Skip("loads data")
	}
	for _, tc := range []struct {
		noise      float64
		wantRounds int
	}{{0.001, 1}, {0.5, 4}} {
		dir := t.TempDir()
		path := writeConfig(t, dir, "noisy", "noisy.db", 1, "")
		s := openWith(t, path, Options{Meter: &fakeDevice{noise: tc.noise}})
		cand, err := pruneUniform(s, 0.5)
		if err != nil {
			t.Fatal(err)
		}
		before := s.latCache[cand.Hash()].rounds // the uniform plans were timed when the study began
		e, err := s.measure(context.Background(), cand, true)
		if err != nil {
			t.Fatal(err)
		}
		if e.rounds != tc.wantRounds || e.pairs.Len() != 20*tc.wantRounds {
			t.Errorf("noise %v: %d rounds (%d pairs), want %d", tc.noise, e.rounds, e.pairs.Len(), tc.wantRounds)
		}
		if want := macsOf(cand) / macsOf(s.base); math.Abs(e.rel/want-1) > 0.2 {
			t.Errorf("noise %v: ratio %.3f, want about %.3f", tc.noise, e.rel, want)
		}
		// Asked again, the cache answers with every round so far: it merges, never freezes.
		again, _ := s.measure(context.Background(), cand, false)
		if again.rounds != before+e.rounds || again.pairs.Len() != 20*again.rounds {
			t.Errorf("cached rounds %d (%d pairs), want %d", again.rounds, again.pairs.Len(), before+e.rounds)
		}
	}
}

// A device that reports half the true latency the first time it sees an architecture
// would make trials look faster than they are. The round after each trial's fine-tune sees
// through it (the slower round scores), so no trial is stored under the target while over
// it, the trials say their latency moved, and the winner meets the target when measured
// again.
func TestLyingMeterDoesNotDecide(t *testing.T) {
	if testing.Short() {
		t.Skip("fine-tunes models")
	}
	dir := t.TempDir()
	path := writeConfig(t, dir, "lie", "lie.db", 8, "[objective]\nkind = \"mnas-hard\"\ntarget = \"0.3x\"\n[final]\nsteps = 5\nrerank_steps = 5\ncandidates = 8\n")
	var log strings.Builder
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), cfg, Options{Meter: &fakeDevice{lieFactor: 0.5}, Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	sum, err := s.Summary()
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range sum.Trials {
		if tr.Metric == nil || tr.Miss != "" || tr.State != "complete" {
			continue
		}
		cand, err := pruneUniform(s, -1, tr.Plan)
		if err != nil {
			t.Fatal(err)
		}
		if truth := macsOf(cand) / macsOf(s.base); truth > 0.3*1.05 {
			t.Errorf("trial %d stored at %.3fx, under the target, while it is %.3fx", tr.Number, tr.Metric.RelLatency, truth)
		}
	}
	if n := strings.Count(log.String(), "latency moved during the trial"); n == 0 {
		t.Errorf("no trial said its latency moved, of %d complete", sum.Counts["complete"])
	}
	res, err := s.Finalize(context.Background())
	if errors.Is(err, ErrInfeasible) {
		return // no winner rather than a wrong one
	}
	if err != nil {
		t.Fatal(err)
	}
	if truth := macsOf(res.Model) / macsOf(s.base); truth > 0.3 || res.Miss != "" {
		t.Errorf("winner trial %d is %.3fx the dense latency (reported %.3fx, %q), over the target 0.3x", res.Trial, truth, res.Metrics.RelLatency, res.Miss)
	}
}

// The re-ranking gives every candidate the final fine-tune and delivers the best as it
// is: the winner's delivered numbers are its candidate's, no candidate ranked higher, and
// the plan the stored scores would have chosen delivers exactly the model it was ranked by.
func TestRerankDeliversWhatItRanked(t *testing.T) {
	if testing.Short() {
		t.Skip("fine-tunes models")
	}
	dir := t.TempDir()
	path := writeConfig(t, dir, "rerank", "rerank.db", 8, "[objective]\nkind = \"mnas-hard\"\ntarget = \"0.6x\"\n[final]\nsteps = 30\ncandidates = 3\nuniform_margin = 0\n")
	s := openWith(t, path, Options{Meter: &fakeDevice{}})
	ctx := context.Background()
	if err := s.Run(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := s.Finalize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Candidates) < 2 {
		t.Fatalf("%d candidates: the test proves nothing", len(res.Candidates))
	}
	var win *Candidate
	for i, c := range res.Candidates {
		if c.TestAcc == 0 {
			t.Errorf("candidate trial %d has no test accuracy after its final fine-tune", c.Trial)
		}
		if c.Trial == res.Trial {
			win = &res.Candidates[i]
		}
	}
	if win == nil {
		t.Fatalf("winner trial %d is not among the candidates %+v", res.Trial, res.Candidates)
	}
	if win.Accuracy != res.Metrics.Accuracy || win.TestAcc != res.TestAcc || res.Steps != 30 {
		t.Errorf("delivered val %.4f test %.4f after %d steps, ranked val %.4f test %.4f", res.Metrics.Accuracy, res.TestAcc, res.Steps, win.Accuracy, win.TestAcc)
	}
	for _, c := range res.Candidates {
		if c.Accuracy > win.Accuracy {
			t.Errorf("trial %d reached %.4f after re-ranking, above the winner's %.4f", c.Trial, c.Accuracy, win.Accuracy)
		}
	}
	var plan prune.Plan
	sum, err := s.Summary()
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range sum.Trials {
		if tr.Number == res.Unranked {
			plan = tr.Plan
		}
	}
	again, err := s.Evaluate(ctx, plan)
	if err != nil {
		t.Fatal(err)
	}
	if again.TestAcc != res.Candidates[0].TestAcc {
		t.Errorf("trial %d delivered again: test %.4f, ranked with test %.4f", res.Unranked, again.TestAcc, res.Candidates[0].TestAcc)
	}
}

// The uniform plan is always a re-ranked candidate, and a searched plan replaces it only
// when it is ahead by final.uniform_margin standard errors of the paired validation
// difference: at 10, a searched winner must be ahead by at least 100/(n+100) of the n
// validation samples (the smallest gap that can be 10 standard errors), 9 points here.
func TestUniformKeptWithinNoise(t *testing.T) {
	if testing.Short() {
		t.Skip("fine-tunes models")
	}
	dir := t.TempDir()
	path := writeConfig(t, dir, "keep", "keep.db", 8, "[objective]\nkind = \"mnas-hard\"\ntarget = \"0.4x\"\n[final]\nsteps = 30\ncandidates = 2\nuniform_margin = 10\n")
	s := openWith(t, path, Options{Meter: &fakeDevice{}})
	ctx := context.Background()
	if err := s.Run(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := s.Finalize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var uni, win *Candidate
	best := 0.0
	for i, c := range res.Candidates {
		if c.Uniform {
			uni = &res.Candidates[i]
		}
		if c.Trial == res.Trial {
			win = &res.Candidates[i]
		}
		best = max(best, c.Accuracy)
	}
	if uni == nil || win == nil {
		t.Fatalf("candidates %+v: no uniform plan among them, or not the winner (trial %d)", res.Candidates, res.Trial)
	}
	switch {
	case win.Uniform && best > win.Accuracy && res.Kept == "":
		t.Errorf("the uniform plan was delivered below a searched candidate (%.4f < %.4f) and nothing says why", win.Accuracy, best)
	case win.Uniform && best == win.Accuracy && res.Kept != "":
		t.Errorf("the uniform plan ranked first, yet the result says it was kept: %s", res.Kept)
	case !win.Uniform && win.Accuracy-uni.Accuracy < 0.09:
		t.Errorf("searched trial %d delivered at %.4f, only %.4f over the uniform plan", win.Trial, win.Accuracy, win.Accuracy-uni.Accuracy)
	}
	var out strings.Builder
	if err := res.Write(&out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "uniform") {
		t.Errorf("the final table does not say which candidate is the uniform plan:\n%s", out.String())
	}
}

// uniform recognises a drawn plan that prunes every group by one ratio, clamped to each
// group's range, and nothing else.
func TestUniformPlanRecognised(t *testing.T) {
	s := &Search{space: map[string]interface{}{
		"a": goptuna.DiscreteUniformDistribution{Low: 0, High: 0.8, Q: 0.1},
		"b": goptuna.DiscreteUniformDistribution{Low: 0, High: 0.5, Q: 0.1},
		"c": goptuna.UniformDistribution{Low: 0.1, High: 0.9},
	}}
	tests := []struct {
		name   string
		params map[string]float64
		want   bool
	}{
		{"one ratio", map[string]float64{"a": 0.3, "b": 0.3, "c": 0.3}, true},
		{"clamped to a group's top", map[string]float64{"a": 0.7, "b": 0.5, "c": 0.7}, true},
		{"two ratios", map[string]float64{"a": 0.3, "b": 0.2, "c": 0.3}, false},
		{"a group missing", map[string]float64{"a": 0.3, "b": 0.3}, false},
		{"no plan", nil, false},
	}
	for _, tc := range tests {
		if got := s.uniform(tc.params); got != tc.want {
			t.Errorf("%s: uniform(%v) = %v, want %v", tc.name, tc.params, got, tc.want)
		}
	}
}

// A winner whose final measurement lands over the target is not delivered: the next
// candidate is, and it meets the target.
func TestFinalMissDeliversTheNext(t *testing.T) {
	if testing.Short() {
		t.Skip("fine-tunes models")
	}
	dir := t.TempDir()
	path := writeConfig(t, dir, "late", "late.db", 8, "[objective]\nkind = \"mnas-hard\"\ntarget = \"0.6x\"\n[final]\nsteps = 10\ncandidates = 3\n")
	dev := &fakeDevice{}
	s := openWith(t, path, Options{Meter: dev})
	ctx := context.Background()
	if err := s.Run(ctx); err != nil {
		t.Fatal(err)
	}
	first, err := s.Finalize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Candidates) < 2 {
		t.Fatalf("%d candidates: the test proves nothing", len(first.Candidates))
	}
	// The same choice again, but the winner reads 1.5x slower once it has been measured
	// again before the choice: only its final measurement misses.
	dev.mu.Lock()
	dev.slow, dev.slowAfter = first.Model.Hash(), 1
	dev.mu.Unlock()
	res, err := s.Finalize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Trial == first.Trial || res.Miss != "" {
		t.Errorf("delivered trial %d (%q); trial %d misses its final measurement and should have been passed over", res.Trial, res.Miss, first.Trial)
	}
	if saved, err := nn.Load(res.ModelPath); err != nil || saved.Hash() != res.Model.Hash() {
		t.Errorf("the saved model is not the delivered one: %v", err)
	}
}

// When every candidate reads slower on its final measurement than before the choice (the
// machine got busier), a trial with that much room under the target is delivered instead
// of one over it.
func TestAllMissDeliversOneWithRoom(t *testing.T) {
	if testing.Short() {
		t.Skip("fine-tunes models")
	}
	dir := t.TempDir()
	path := writeConfig(t, dir, "busy", "busy.db", 12, "[objective]\nkind = \"mnas-hard\"\ntarget = \"0.6x\"\n[final]\nsteps = 10\ncandidates = 2\n")
	dev := &fakeDevice{}
	s := openWith(t, path, Options{Meter: dev})
	ctx := context.Background()
	if err := s.Run(ctx); err != nil {
		t.Fatal(err)
	}
	// From now on every model reads 30 % slower after its first measurement: the
	// candidates pass the measurement before the choice and miss the final one.
	dev.mu.Lock()
	dev.slowAll, dev.slowAfter = 1.3, 1
	dev.mu.Unlock()
	res, err := s.Finalize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := Summarize(s.store, s.cfg.Study.Name)
	if err != nil {
		t.Fatal(err)
	}
	cand := map[int]bool{}
	for _, c := range res.Candidates {
		if c.Rel*1.3 <= 0.6 {
			t.Fatalf("candidate %d at %.3fx meets the target even 30 %% slower: the test proves nothing", c.Trial, c.Rel)
		}
		cand[c.Trial] = true
	}
	room := 0
	for _, tr := range sum.Trials {
		if tr.State == "complete" && tr.Metric != nil && !cand[tr.Number] && tr.Metric.RelLatency*1.3 <= 0.6 {
			room++
		}
	}
	if room == 0 {
		t.Fatal("no other trial leaves room under the target: the test proves nothing")
	}
	if cand[res.Trial] {
		t.Errorf("delivered candidate %d, which measured over the target at the end", res.Trial)
	}
	if res.Miss != "" || res.Metrics.RelLatency > 0.6 {
		t.Errorf("delivered trial %d at %.3fx: %q", res.Trial, res.Metrics.RelLatency, res.Miss)
	}
}

// A study where no trial meets the target says so: no winner, and the report names the
// fastest trial.
func TestInfeasibleStudySaysSo(t *testing.T) {
	if testing.Short() {
		t.Skip("fine-tunes models")
	}
	dir := t.TempDir()
	path := writeConfig(t, dir, "never", "never.db", 3, "[objective]\nkind = \"mnas-hard\"\ntarget = \"0.001x\"\n[final]\nsteps = 5\n")
	s := openWith(t, path, Options{Meter: &fakeDevice{}})
	if err := s.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, err := s.Finalize(context.Background())
	if !errors.Is(err, ErrInfeasible) || !strings.Contains(err.Error(), "the fastest, trial") {
		t.Fatalf("Finalize = %v, want ErrInfeasible naming the fastest trial", err)
	}
	sum, err := s.Summary()
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := sum.Write(&out); err != nil {
		t.Fatal(err)
	}
	if sum.Best != nil || sum.Feasible != 0 || !strings.Contains(out.String(), "no complete trial meets the constraint latency <= 0.001x") ||
		!strings.Contains(out.String(), "(over)") {
		t.Errorf("report of an infeasible study:\n%s", out.String())
	}
}

// Plans that prune to the same architecture are fine-tuned once: later ones are scored
// from the first.
func TestSameArchitectureScoredOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("fine-tunes models")
	}
	dir := t.TempDir()
	// Two groups on a grid of {0, 0.4, 0.8}: nine architectures, so 14 trials repeat some.
	path := writeConfig(t, dir, "dup", "dup.db", 14, "")
	editConfig(t, path, "step = 0.1", "step = 0.4")
	s := openWith(t, path, Options{Meter: &fakeDevice{}})
	if err := s.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	ts, err := s.study.GetTrials()
	if err != nil {
		t.Fatal(err)
	}
	tuned := map[string]int{}
	value := map[string]float64{}
	dups := 0
	for _, tr := range ts {
		arch := tr.UserAttrs[attrArch]
		if arch == "" {
			t.Fatalf("trial %d has no architecture recorded", tr.Number)
		}
		if tr.UserAttrs[attrDupOf] != "" {
			dups++
			if tr.UserAttrs[attrSteps] != "0" {
				t.Errorf("duplicate trial %d was fine-tuned (%s steps)", tr.Number, tr.UserAttrs[attrSteps])
			}
		} else {
			tuned[arch]++
			value[arch] = tr.Value
		}
	}
	for _, tr := range ts {
		if tr.UserAttrs[attrDupOf] != "" && tr.Value != value[tr.UserAttrs[attrArch]] {
			t.Errorf("duplicate trial %d scored %v, its original %v", tr.Number, tr.Value, value[tr.UserAttrs[attrArch]])
		}
	}
	for arch, n := range tuned {
		if n > 1 {
			t.Errorf("architecture %.12s fine-tuned %d times", arch, n)
		}
	}
	if dups == 0 {
		t.Errorf("14 trials over 9 architectures and no duplicate found")
	}
}

// pruneUniform prunes the search's base model with every group at r, or with plan.
func pruneUniform(s *Search, r float64, plan ...prune.Plan) (*nn.Model, error) {
	p := prune.Plan{}
	if len(plan) > 0 {
		p = plan[0]
	} else {
		for _, g := range s.groups {
			p[g.Name] = r
		}
	}
	return prune.Structured(s.base, p, s.crit)
}

// With prune.round_to and prune.min_channels every stored plan keeps a multiple of the
// rounding in every group, and at least the minimum.
func TestPlansKeepRoundedWidths(t *testing.T) {
	if testing.Short() {
		t.Skip("fine-tunes models")
	}
	dir := t.TempDir()
	path := writeConfig(t, dir, "round", "round.db", 4, "")
	editConfig(t, path, "step = 0.1", "step = 0.05\nround_to = 8\nmin_channels = 16")
	s := openWith(t, path, Options{Meter: &fakeDevice{}})
	if err := s.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	sum := checkStudy(t, s.store, "round", 4)
	for _, tr := range sum.Trials {
		for _, g := range s.groups {
			k := prune.Keep(g.Size, tr.Plan[g.Name])
			if (k%8 != 0 && k != g.Size) || k < 16 {
				t.Errorf("trial %d keeps %d of %d channels in %s: not a multiple of 8 of at least 16", tr.Number, k, g.Size, g.Name)
			}
		}
	}
}

// With prune.fit_target every trial is shifted to just meet the latency target: none over
// it, none far under it.
func TestPlansFitTheTarget(t *testing.T) {
	if testing.Short() {
		t.Skip("fine-tunes models")
	}
	dir := t.TempDir()
	path := writeConfig(t, dir, "fit", "fit.db", 6, "[objective]\nkind = \"mnas-hard\"\ntarget = \"0.3x\"\n")
	editConfig(t, path, "fit_target = false", "fit_target = true")
	s := openWith(t, path, Options{Meter: &fakeDevice{}})
	if err := s.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	sum := checkStudy(t, s.store, "fit", 6)
	for _, tr := range sum.Trials {
		if tr.Metric == nil {
			t.Fatalf("trial %d: no metrics", tr.Number)
		}
		if rel := tr.Metric.RelLatency; rel > 0.3*0.99 || rel < 0.3*0.85 {
			t.Errorf("trial %d (plan %v) measured %.3fx, want just under the target 0.3x", tr.Number, tr.Plan, rel)
		}
	}
	if sum.Feasible != sum.Counts["complete"] {
		t.Errorf("%d of %d complete trials meet the target", sum.Feasible, sum.Counts["complete"])
	}
}

// scriptedDevice times one architecture with a scripted ratio per measurement, everything
// else by its MACs.
type scriptedDevice struct {
	fakeDevice
	hash   string
	ratios []float64
	calls  int
}

func (d *scriptedDevice) MeasurePair(ctx context.Context, ref, cand *nn.Model) (eval.Pairs, error) {
	if cand.Hash() != d.hash {
		return d.fakeDevice.MeasurePair(ctx, ref, cand)
	}
	r := d.ratios[min(d.calls, len(d.ratios)-1)]
	d.calls++
	p := eval.Pairs{Batch: 1, Threads: 1}
	for i := 0; i < 20; i++ {
		p.RefTimes = append(p.RefTimes, time.Millisecond)
		p.CandTimes = append(p.CandTimes, time.Duration(r*float64(time.Millisecond)))
	}
	return p, nil
}

// A decision against the target is not taken on one unlucky measurement: a miss is
// measured twice more and the median decides.
func TestVerdictTakesTheMedian(t *testing.T) {
	if testing.Short() {
		t.Skip("loads data")
	}
	for _, tc := range []struct {
		ratios []float64
		want   float64
		meets  bool
	}{
		{[]float64{0.50}, 0.50, true},
		{[]float64{0.62, 0.50, 0.51}, 0.51, true},
		{[]float64{0.62, 0.61, 0.50}, 0.61, false},
	} {
		dir := t.TempDir()
		path := writeConfig(t, dir, "verdict", "verdict.db", 1, "[objective]\nkind = \"mnas-hard\"\ntarget = \"0.55x\"\n")
		dev := &scriptedDevice{}
		s := openWith(t, path, Options{Meter: dev})
		cand, err := pruneUniform(s, 0.3)
		if err != nil {
			t.Fatal(err)
		}
		dev.hash, dev.ratios = cand.Hash(), tc.ratios
		cons := s.constraint()
		e, err := s.verdict(context.Background(), cand, cons, eval.Metrics{})
		if err != nil {
			t.Fatal(err)
		}
		m := eval.Metrics{RelLatency: e.rel, Latency: e.lat}
		if math.Abs(e.rel-tc.want) > 1e-9 || (cons.Miss(m, e.spread) == "") != tc.meets || dev.calls != len(tc.ratios) {
			t.Errorf("ratios %v: verdict %.3f after %d measurements (meets %v), want %.3f after %d (meets %v)",
				tc.ratios, e.rel, dev.calls, cons.Miss(m, e.spread) == "", tc.want, len(tc.ratios), tc.meets)
		}
	}
}

// With plans fitted to a target, the study's first trials after the uniform plan are the
// best plans of the screening by accuracy without fine-tuning, and the screening is the
// same from the same seed.
func TestScreenedPlansStartTheStudy(t *testing.T) {
	if testing.Short() {
		t.Skip("fine-tunes models")
	}
	dir := t.TempDir()
	path := writeConfig(t, dir, "screen", "screen.db", 4, "[objective]\nkind = \"mnas-hard\"\ntarget = \"0.3x\"\n")
	editConfig(t, path, "fit_target = false", "fit_target = true")
	editConfig(t, path, "seed = 7", "seed = 7\nscreen = 8\nscreen_keep = 2")
	s := openWith(t, path, Options{Meter: &fakeDevice{}})
	ctx := context.Background()
	if err := s.Run(ctx); err != nil {
		t.Fatal(err)
	}
	near, _, err := s.nearTarget(ctx)
	if err != nil {
		t.Fatal(err)
	}
	again, err := s.screen(ctx, near)
	if err != nil {
		t.Fatal(err)
	}
	if len(again) != 2 || again[0].accuracy < again[1].accuracy {
		t.Fatalf("screening kept %+v, want 2 plans, best first", again)
	}
	trials, err := s.study.GetTrials()
	if err != nil {
		t.Fatal(err)
	}
	if len(trials) != 4 {
		t.Fatalf("%d trials, want 4", len(trials))
	}
	for i, p := range again {
		got := trials[1+i].InternalParams
		for name, v := range p.params {
			if math.Abs(got[name]-v) > 1e-9 {
				t.Errorf("trial %d: %s = %v, want the screened plan's %v (%v)", 1+i, name, got[name], v, p.params)
			}
		}
	}
	// Without a fitted target there is nothing to compare plans at: no screening.
	editConfig(t, path, "fit_target = true", "fit_target = false")
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	s.cfg = cfg
	if got, err := s.screen(ctx, nil); err != nil || got != nil {
		t.Errorf("screen without a fitted target = %v, %v", got, err)
	}
}

// Plans measured side by side: every distinct architecture is measured once per round
// (plans that prune alike share the measurement), the ratios are those of the device, and
// the cache is left as it was.
func TestRemeasureSideBySide(t *testing.T) {
	if testing.Short() {
		t.Skip("loads data")
	}
	dir := t.TempDir()
	path := writeConfig(t, dir, "joint", "joint.db", 1, "[objective]\nkind = \"mnas-hard\"\ntarget = \"0.5x\"\n")
	dev := &fakeDevice{drift: true}
	s := openWith(t, path, Options{Meter: dev})
	half, heavy := prune.Uniform(s.Groups(), 0.5), prune.Uniform(s.Groups(), 0.8)
	cached := len(s.latCache)
	before := dev.pairs
	rel, spread, err := s.Remeasure(context.Background(), []prune.Plan{half, heavy, half}, 3)
	if err != nil {
		t.Fatal(err)
	}
	if got := dev.pairs - before; got != 3*2*20 {
		t.Errorf("%d pairs timed, want 3 rounds of 2 architectures of 20 pairs", got)
	}
	if len(rel) != 3 || rel[0] != rel[2] || spread[0] != spread[2] {
		t.Fatalf("ratios %v ± %v: the same architecture measured apart", rel, spread)
	}
	for i, p := range []prune.Plan{half, heavy} {
		m, err := prune.Structured(s.base, p, s.crit)
		if err != nil {
			t.Fatal(err)
		}
		if want := macsOf(m) / macsOf(s.base); math.Abs(rel[i]-want) > 1e-6 {
			t.Errorf("plan %d: ratio %.4f, want the device's %.4f", i, rel[i], want)
		}
	}
	if len(s.latCache) != cached {
		t.Errorf("the cache grew from %d to %d entries", cached, len(s.latCache))
	}
	if _, _, err := s.Remeasure(context.Background(), []prune.Plan{{"no-such-group": 0.5}}, 1); err == nil {
		t.Error("a plan naming no group of the model was measured")
	}
}
