package search

import (
	"errors"
	"fmt"

	"github.com/autoprune/autoprune/eval"
	"github.com/autoprune/autoprune/objectives"
)

// Constraint is what a winner must meet: the config's latency target (objective.target,
// unless the objective is "weighted", where the target only scales the latency term) and
// its size budget (objective.max_bytes with kind = "budget"). Objectives may trade
// accuracy against latency to guide the sampler; the winner is chosen among the trials
// that meet the constraint.
type Constraint struct {
	Target   string `json:"target,omitempty"`    // "0.5x" (of the dense latency) or a duration such as "2ms"
	MaxBytes int64  `json:"max_bytes,omitempty"` // model file size
}

// ErrInfeasible is returned by Finalize when no finished trial meets the constraint.
var ErrInfeasible = errors.New("no trial meets the target")

func (c Constraint) any() bool { return c.Target != "" || c.MaxBytes > 0 }

// String formats the constraint as "latency <= 0.5x, size <= 65536 bytes".
func (c Constraint) String() string {
	switch {
	case c.Target != "" && c.MaxBytes > 0:
		return fmt.Sprintf("latency <= %s, size <= %d bytes", c.Target, c.MaxBytes)
	case c.Target != "":
		return "latency <= " + c.Target
	case c.MaxBytes > 0:
		return fmt.Sprintf("size <= %d bytes", c.MaxBytes)
	}
	return "none"
}

// Miss says what m misses of the constraint, or "" when it meets it. A latency within
// tol (a fraction, such as the measurement's own spread) over the target still meets it; a
// negative tol asks for that margin under the target.
func (c Constraint) Miss(m eval.Metrics, tol float64) string {
	if c.Target != "" {
		t, err := objectives.ParseTarget(c.Target)
		if err != nil {
			return err.Error()
		}
		if t.Rel > 0 {
			if !(m.RelLatency > 0) {
				return "latency not measured"
			}
			if m.RelLatency > t.Rel*(1+tol) {
				return fmt.Sprintf("latency %.3fx over the target %s", m.RelLatency, c.Target)
			}
		} else {
			if m.Latency.Median <= 0 {
				return "latency not measured"
			}
			if float64(m.Latency.Median) > float64(t.Abs)*(1+tol) {
				return fmt.Sprintf("latency %s over the target %s", m.Latency.Median, c.Target)
			}
		}
	}
	if c.MaxBytes > 0 && m.Bytes > c.MaxBytes {
		return fmt.Sprintf("size %d bytes over the budget %d", m.Bytes, c.MaxBytes)
	}
	return ""
}

// constraint is the config's constraint.
func (s *Search) constraint() Constraint {
	o := s.cfg.Objective
	var c Constraint
	if o.Kind != "weighted" {
		c.Target = o.Target
	}
	if o.Kind == "budget" {
		c.MaxBytes = o.MaxBytes
	}
	return c
}
