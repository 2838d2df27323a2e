package search

import (
	"reflect"
	"testing"

	"github.com/autoprune/autoprune/eval"
)

// The Pareto front of a fixed set of trials, worked out by hand.
func TestParetoFrontByHand(t *testing.T) {
	tr := func(n int, state string, acc, rel float64) TrialResult {
		return TrialResult{Number: n, State: state, Value: acc, Metric: &eval.Metrics{Accuracy: acc, RelLatency: rel}}
	}
	for _, c := range []struct {
		name   string
		trials []TrialResult
		front  []int // fastest first
	}{
		{"one trial", []TrialResult{tr(0, "complete", 0.8, 0.5)}, []int{0}},
		{"a chain of trade-offs", []TrialResult{
			tr(0, "complete", 0.80, 0.40), tr(1, "complete", 0.85, 0.50), tr(2, "complete", 0.90, 0.60),
			tr(3, "complete", 0.84, 0.55), // beaten by 1: slower and less accurate
			tr(4, "complete", 0.79, 0.45), // beaten by 0
		}, []int{0, 1, 2}},
		{"ties on one axis", []TrialResult{
			tr(0, "complete", 0.80, 0.50), tr(1, "complete", 0.85, 0.50), // same latency, 1 more accurate
			tr(2, "complete", 0.85, 0.45), // same accuracy as 1, faster
		}, []int{2}},
		{"equal trials are both on the front", []TrialResult{tr(0, "complete", 0.8, 0.5), tr(1, "complete", 0.8, 0.5)}, []int{0, 1}},
		{"only complete trials count", []TrialResult{
			tr(0, "complete", 0.80, 0.50),
			tr(1, "pruned", 0.95, 0.30), tr(2, "fail", 0.99, 0.20), {Number: 3, State: "complete"},
		}, []int{0}},
	} {
		t.Run(c.name, func(t *testing.T) {
			markPareto(c.trials)
			s := &Summary{Trials: c.trials}
			var got []int
			for _, f := range s.Front() {
				got = append(got, f.Number)
			}
			if !reflect.DeepEqual(got, c.front) {
				t.Errorf("front %v, want %v", got, c.front)
			}
		})
	}
}

func TestTopPutsFeasibleFirst(t *testing.T) {
	s := &Summary{Trials: []TrialResult{
		{Number: 0, State: "complete", Value: 0.9, Metric: &eval.Metrics{}, Miss: "over"},
		{Number: 1, State: "complete", Value: 0.7, Metric: &eval.Metrics{}},
		{Number: 2, State: "pruned", Value: 0.99, Metric: &eval.Metrics{}},
		{Number: 3, State: "complete", Value: 0.8, Metric: &eval.Metrics{}},
		{Number: 4, State: "complete", Value: 0.95},
	}}
	var got []int
	for _, t := range s.Top(10) {
		got = append(got, t.Number)
	}
	if want := []int{3, 1, 0}; !reflect.DeepEqual(got, want) {
		t.Errorf("top %v, want %v", got, want)
	}
	if n := len(s.Top(2)); n != 2 {
		t.Errorf("Top(2) gave %d trials", n)
	}
}
