package search

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/c-bata/goptuna"

	"github.com/autoprune/autoprune/eval"
	"github.com/autoprune/autoprune/prune"
)

// TrialResult is one stored trial, decoded.
type TrialResult struct {
	Number int        `json:"number"`
	State  string     `json:"state"` // complete, pruned (stopped early), fail, running, waiting
	Value  float64    `json:"value"`
	Plan   prune.Plan `json:"plan,omitempty"`
	// Params is the plan as the sampler drew it (or the warm start gave it), before it was
	// shaped and fitted to the target.
	Params map[string]float64 `json:"params,omitempty"`
	Metric *eval.Metrics      `json:"metrics,omitempty"`
	Steps  int                `json:"steps"`
	Wall   time.Duration      `json:"wall_ns"`
	Worker string             `json:"worker,omitempty"`
	Error  string             `json:"error,omitempty"`
	Pareto bool               `json:"pareto,omitempty"` // on the accuracy-vs-latency front
	// Miss says what the trial misses of the study's constraint (latency target, size
	// budget); empty when it meets it.
	Miss string `json:"miss,omitempty"`
}

// Summary is a study as read back from storage.
type Summary struct {
	Study  string        `json:"study"`
	Dense  eval.Metrics  `json:"dense"`
	Groups []prune.Group `json:"groups"`
	Trials []TrialResult `json:"trials"`
	// Constraint is what a winner must meet; Best is the complete trial with the highest
	// score among those that meet it (nil when none does yet).
	Constraint Constraint     `json:"constraint"`
	Best       *TrialResult   `json:"best,omitempty"`
	Counts     map[string]int `json:"counts"`
	// Feasible counts the complete trials that meet the constraint.
	Feasible int `json:"feasible"`
	// ConfigPath is the file the study's config was read from; Config is that config with
	// every default filled in, as TOML (empty for studies made before it was stored).
	ConfigPath string `json:"config_path,omitempty"`
	Config     string `json:"config,omitempty"`
}

// Summarize reads a study from storage: every trial with its raw metrics, the best
// finished trial, and the Pareto front of accuracy against latency.
func Summarize(store *Storage, name string) (*Summary, error) {
	id, err := store.st.GetStudyIDFromName(name)
	if err != nil {
		names := []string{}
		if all, err := store.st.GetAllStudySummaries(); err == nil {
			for _, s := range all {
				names = append(names, s.Name)
			}
		}
		return nil, fmt.Errorf("no study %q in %s (studies: %s)", name, redact(store.URL), strings.Join(names, ", "))
	}
	attrs, err := store.st.GetStudyUserAttrs(id)
	if err != nil {
		return nil, err
	}
	sum := &Summary{Study: name, Counts: map[string]int{}}
	if err := json.Unmarshal([]byte(attrs[studyAttrDense]), &sum.Dense); err != nil {
		return nil, fmt.Errorf("study %q was not made by autoprune (no dense measurements)", name)
	}
	_ = json.Unmarshal([]byte(attrs[studyAttrGroups]), &sum.Groups)
	sum.ConfigPath, sum.Config = attrs[studyAttrConfig], attrs[studyAttrConfigTOML]
	if c := attrs[studyAttrConstraint]; c != "" {
		if err := json.Unmarshal([]byte(c), &sum.Constraint); err != nil {
			return nil, fmt.Errorf("study %q: stored constraint %q: %w", name, c, err)
		}
	}
	ts, err := store.st.GetAllTrials(id)
	if err != nil {
		return nil, err
	}
	for _, t := range ts {
		r := decodeTrial(t)
		sum.Counts[r.State]++
		sum.Trials = append(sum.Trials, r)
	}
	sort.Slice(sum.Trials, func(i, j int) bool { return sum.Trials[i].Number < sum.Trials[j].Number })
	markPareto(sum.Trials)
	for i := range sum.Trials {
		t := &sum.Trials[i]
		if t.Metric != nil {
			t.Miss = sum.Constraint.Miss(*t.Metric, 0)
		}
		if t.State != "complete" || t.Metric == nil || t.Miss != "" {
			continue
		}
		sum.Feasible++
		if sum.Best == nil || t.Value > sum.Best.Value {
			sum.Best = t
		}
	}
	return sum, nil
}

func decodeTrial(t goptuna.FrozenTrial) TrialResult {
	r := TrialResult{Number: t.Number, Value: t.Value, Worker: t.UserAttrs[attrWorker], Error: t.UserAttrs[attrError]}
	switch t.State {
	case goptuna.TrialStateComplete:
		r.State = "complete"
	case goptuna.TrialStatePruned:
		r.State = "pruned"
	case goptuna.TrialStateFail:
		r.State = "fail"
	case goptuna.TrialStateRunning:
		r.State = "running"
	case goptuna.TrialStateWaiting:
		r.State = "waiting"
	}
	if p := t.UserAttrs[attrPlan]; p != "" {
		_ = json.Unmarshal([]byte(p), &r.Plan)
	}
	if len(t.InternalParams) > 0 {
		r.Params = t.InternalParams
	}
	if m := t.UserAttrs[attrMetrics]; m != "" {
		var mm eval.Metrics
		if json.Unmarshal([]byte(m), &mm) == nil {
			r.Metric = &mm
		}
	}
	fmt.Sscan(t.UserAttrs[attrSteps], &r.Steps)
	var ms int64
	fmt.Sscan(t.UserAttrs[attrWall], &ms)
	r.Wall = time.Duration(ms) * time.Millisecond
	return r
}

// markPareto flags the complete trials that no other complete trial beats on both accuracy
// (higher) and relative latency (lower).
func markPareto(ts []TrialResult) {
	for i := range ts {
		a := &ts[i]
		if a.State != "complete" || a.Metric == nil {
			continue
		}
		a.Pareto = true
		for j := range ts {
			b := &ts[j]
			if i == j || b.State != "complete" || b.Metric == nil {
				continue
			}
			if b.Metric.Accuracy >= a.Metric.Accuracy && b.Metric.RelLatency <= a.Metric.RelLatency &&
				(b.Metric.Accuracy > a.Metric.Accuracy || b.Metric.RelLatency < a.Metric.RelLatency) {
				a.Pareto = false
				break
			}
		}
	}
}

// Top returns up to n complete trials with measurements, best first: those that meet the
// constraint by score, then those that miss it by score.
func (s *Summary) Top(n int) []TrialResult {
	var ts []TrialResult
	for _, t := range s.Trials {
		if t.State == "complete" && t.Metric != nil {
			ts = append(ts, t)
		}
	}
	sort.SliceStable(ts, func(i, j int) bool {
		if (ts[i].Miss == "") != (ts[j].Miss == "") {
			return ts[i].Miss == ""
		}
		return ts[i].Value > ts[j].Value
	})
	return ts[:min(n, len(ts))]
}

// Front returns the complete trials on the accuracy-vs-latency Pareto front, fastest first.
func (s *Summary) Front() []TrialResult {
	var ts []TrialResult
	for _, t := range s.Trials {
		if t.Pareto {
			ts = append(ts, t)
		}
	}
	sort.SliceStable(ts, func(i, j int) bool { return ts[i].Metric.RelLatency < ts[j].Metric.RelLatency })
	return ts
}

// Write prints the summary as tables: counts, the best trials and the Pareto front (each
// against the dense model, trials over the constraint marked), and the best trial's plan.
func (s *Summary) Write(w io.Writer) error {
	fmt.Fprintf(w, "study %s: %d complete, %d stopped early, %d failed, %d running, %d waiting\n",
		s.Study, s.Counts["complete"], s.Counts["pruned"], s.Counts["fail"], s.Counts["running"], s.Counts["waiting"])
	if s.Constraint.any() {
		fmt.Fprintf(w, "constraint %s: met by %d of %d complete trials\n", s.Constraint, s.Feasible, s.Counts["complete"])
	}
	if s.Dense.Latency.N > 0 {
		fmt.Fprintf(w, "latency measured on %s, batch %d, %d thread(s)\n", s.Dense.Latency.Device, s.Dense.Latency.Batch, s.Dense.Latency.Threads)
	}
	table := func(title string, ts []TrialResult) error {
		fmt.Fprintf(w, "\n%s\n", title)
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "trial\tscore\tval acc %\tvs dense\tlatency ms\tspeed-up\tMACs %\tparams\tbytes\t")
		row := func(label string, score string, m eval.Metrics) {
			speed, delta := "-", "-"
			if m.RelLatency > 0 {
				speed = fmt.Sprintf("%.2fx", 1/m.RelLatency)
			}
			if label != "dense" {
				delta = fmt.Sprintf("%+.2f", 100*(m.Accuracy-s.Dense.Accuracy))
			}
			fmt.Fprintf(tw, "%s\t%s\t%.2f\t%s\t%.3f\t%s\t%.1f\t%d\t%d\t\n", label, score, 100*m.Accuracy, delta,
				float64(m.Latency.Median)/1e6, speed, 100*float64(m.MACs)/float64(max(s.Dense.MACs, 1)), m.Params, m.Bytes)
		}
		row("dense", "-", s.Dense)
		for _, t := range ts {
			label := fmt.Sprintf("%d", t.Number)
			if s.Best != nil && t.Number == s.Best.Number {
				label += " (best)"
			}
			if t.Miss != "" {
				label += " (over)"
			}
			row(label, fmt.Sprintf("%.4f", t.Value), *t.Metric)
		}
		return tw.Flush()
	}
	if top := s.Top(5); len(top) > 0 {
		if err := table("best trials (by score; those that meet the constraint first):", top); err != nil {
			return err
		}
	}
	if err := table("accuracy-vs-latency Pareto front of complete trials, fastest first:", s.Front()); err != nil {
		return err
	}
	fmt.Fprintln(w, "(\"vs dense\": validation accuracy points against the dense model; \"over\": misses the constraint)")
	if s.Best == nil && s.Constraint.any() && s.Counts["complete"] > 0 {
		fmt.Fprintf(w, "\nno complete trial meets the constraint %s%s\n", s.Constraint, s.closestNote())
	}
	if s.Best != nil {
		fmt.Fprintf(w, "\nbest trial %d, plan (ratio of channels removed per group, channels kept of the dense model's):\n", s.Best.Number)
		for _, k := range s.Widths(s.Best.Plan) {
			fmt.Fprintf(w, "  %-20s %.2f  %4d of %d\n", k.Group, k.Ratio, k.Kept, k.Size)
		}
	}
	var fails []string
	for _, t := range s.Trials {
		if t.State == "fail" && t.Error != "" {
			fails = append(fails, fmt.Sprintf("  trial %d: %s", t.Number, t.Error))
		}
	}
	if len(fails) > 0 {
		fmt.Fprintf(w, "\nfailed trials:\n%s\n", strings.Join(fails, "\n"))
	}
	return nil
}

// Width is one group of a plan: its ratio, and the channels it keeps of the dense model's.
type Width struct {
	Group string
	Ratio float64
	Kept  int
	Size  int
}

// Widths lists the searched groups in layer order with what plan keeps of each; groups the
// plan leaves out keep every channel.
func (s *Summary) Widths(plan prune.Plan) []Width {
	ws := make([]Width, 0, len(s.Groups))
	for _, g := range s.Groups {
		r := plan[g.Name]
		ws = append(ws, Width{Group: g.Name, Ratio: r, Kept: prune.Keep(g.Size, r), Size: g.Size})
	}
	return ws
}

// Summary reads this search's study back from storage.
func (s *Search) Summary() (*Summary, error) { return Summarize(s.store, s.cfg.Study.Name) }

// closestNote names the complete trial closest to the latency target, for a study where
// none meets it.
func (s *Summary) closestNote() string {
	var best *TrialResult
	for i := range s.Trials {
		t := &s.Trials[i]
		if t.State != "complete" || t.Metric == nil || t.Metric.RelLatency <= 0 {
			continue
		}
		if best == nil || t.Metric.RelLatency < best.Metric.RelLatency {
			best = t
		}
	}
	if best == nil {
		return ""
	}
	return fmt.Sprintf("; the fastest, trial %d, measured %.3fx the dense latency at %.2f %% accuracy (raise prune.max_ratio, run more trials, or loosen the target)",
		best.Number, best.Metric.RelLatency, 100*best.Metric.Accuracy)
}
