package prune

import (
	"fmt"
	"math"
)

// Schedule says how much to prune at each training step (dynamic, or gradual, pruning):
// pruning during training lets the remaining weights adapt, which loses less accuracy than
// pruning once at the end.
type Schedule struct {
	// Kind is "oneshot" (prune to Final at Start), "iterative" (Events equal steps from Start
	// to End) or "agp" (automated gradual pruning, Zhu & Gupta 2017: the cubic
	// s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3, evaluated at Events points from Start to
	// End, pruning fast early while redundancy is high and slowly near the end).
	Kind string
	// Initial and Final are the sparsities (or channel ratios) at Start and End.
	Initial, Final float64
	// Start and End are optimizer steps; End >= Start.
	Start, End int
	// Events is the number of pruning steps for iterative and agp (default 10).
	Events int
}

// ScheduleKinds lists the schedule kinds.
var ScheduleKinds = []string{"oneshot", "iterative", "agp"}

// Validate checks the schedule.
func (s Schedule) Validate() error {
	switch s.Kind {
	case "oneshot", "iterative", "agp":
	default:
		return fmt.Errorf("%w: schedule %q: want oneshot, iterative or agp", ErrPlan, s.Kind)
	}
	if s.Initial < 0 || s.Final >= 1 || s.Initial > s.Final || math.IsNaN(s.Initial+s.Final) {
		return fmt.Errorf("%w: schedule sparsity %v -> %v: want 0 <= initial <= final < 1", ErrPlan, s.Initial, s.Final)
	}
	if s.Start < 0 || s.End < s.Start {
		return fmt.Errorf("%w: schedule steps %d -> %d: want 0 <= start <= end", ErrPlan, s.Start, s.End)
	}
	if s.Events < 0 {
		return fmt.Errorf("%w: schedule events %d must not be negative", ErrPlan, s.Events)
	}
	return nil
}

func (s Schedule) events() int {
	if s.Kind == "oneshot" {
		return 1
	}
	if s.Events <= 0 {
		return 10
	}
	return s.Events
}

// stepOf returns the optimizer step of pruning event k (1-based).
func (s Schedule) stepOf(k int) int {
	n := s.events()
	if s.Kind == "oneshot" {
		return s.Start
	}
	return s.Start + int(math.Round(float64(k)*float64(s.End-s.Start)/float64(n)))
}

// Target returns the sparsity the schedule asks for at a step: 0 before the first event,
// then the value of the latest event at or before step.
func (s Schedule) Target(step int) float64 {
	n := s.events()
	last := 0.0
	for k := 1; k <= n; k++ {
		if s.stepOf(k) > step {
			break
		}
		last = s.value(k, n)
	}
	return last
}

func (s Schedule) value(k, n int) float64 {
	switch s.Kind {
	case "oneshot":
		return s.Final
	case "iterative":
		return s.Initial + (s.Final-s.Initial)*float64(k)/float64(n)
	}
	f := 1 - float64(k)/float64(n)
	return s.Final + (s.Initial-s.Final)*f*f*f
}

// PruneAt reports whether the schedule has a pruning event at step, and its target.
func (s Schedule) PruneAt(step int) (bool, float64) {
	n := s.events()
	for k := 1; k <= n; k++ {
		if st := s.stepOf(k); st == step {
			// Several events can round to one step; the latest wins.
			v := s.value(k, n)
			for j := k + 1; j <= n && s.stepOf(j) == step; j++ {
				v = s.value(j, n)
			}
			return true, v
		} else if st > step {
			break
		}
	}
	return false, 0
}
