// Package objectives turns a candidate's measurements (accuracy, latency, size) into the
// single number a search maximises. Built-ins follow MnasNet's latency-aware accuracy
// (soft and hard forms), hard budgets on latency or size, and a weighted sum; a library user
// plugs in a custom objective with Func.
package objectives

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/autoprune/autoprune/eval"
)

// Objective scores a candidate: higher is better.
type Objective interface {
	Name() string
	Score(m eval.Metrics) (float64, error)
}

// Func adapts a function to the Objective interface; its name is "custom".
type Func func(m eval.Metrics) (float64, error)

// Name returns "custom".
func (f Func) Name() string { return "custom" }

// Score calls f.
func (f Func) Score(m eval.Metrics) (float64, error) { return f(m) }

// Target is a latency target, either relative to the dense model (Rel, e.g. 0.5 for "half
// the dense latency", robust to machine drift) or absolute (Abs).
type Target struct {
	Rel float64
	Abs time.Duration
}

// ParseTarget reads "0.5x" (relative to the dense model) or a duration such as "2ms".
func ParseTarget(s string) (Target, error) {
	s = strings.TrimSpace(s)
	if r, ok := strings.CutSuffix(s, "x"); ok {
		v, err := strconv.ParseFloat(r, 64)
		if err != nil || !(v > 0) || math.IsInf(v, 0) {
			return Target{}, fmt.Errorf("latency target %q: want a positive ratio such as 0.5x", s)
		}
		return Target{Rel: v}, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return Target{}, fmt.Errorf("latency target %q: want a ratio to the dense model (0.5x) or a duration (2ms)", s)
	}
	return Target{Abs: d}, nil
}

// String formats the target as it is parsed.
func (t Target) String() string {
	if t.Rel > 0 {
		return strconv.FormatFloat(t.Rel, 'g', -1, 64) + "x"
	}
	return t.Abs.String()
}

// ratio returns the candidate's latency divided by the target.
func (t Target) ratio(m eval.Metrics) (float64, error) {
	if t.Rel > 0 {
		if !(m.RelLatency > 0) {
			return 0, fmt.Errorf("relative latency target %s needs the latency relative to the dense model, which was not measured", t)
		}
		return m.RelLatency / t.Rel, nil
	}
	if t.Abs <= 0 {
		return 0, fmt.Errorf("no latency target set")
	}
	if m.Latency.Median <= 0 {
		return 0, fmt.Errorf("latency was not measured")
	}
	return float64(m.Latency.Median) / float64(t.Abs), nil
}

// Mnas is MnasNet's latency-aware accuracy (Tan et al. 2019): ACC x (LAT/T)^w with
// w = Alpha when LAT <= T and Beta otherwise. The soft form (Alpha = Beta = -0.07) trades
// accuracy for speed smoothly; the hard form (Alpha = 0, Beta = -1) only penalises models
// over the target.
type Mnas struct {
	Target      Target
	Alpha, Beta float64
	Label       string // name reported; "mnas-soft" or "mnas-hard" for the presets
}

// Name returns the objective's label.
func (o Mnas) Name() string {
	if o.Label == "" {
		return "mnas"
	}
	return o.Label
}

// Score implements Objective.
func (o Mnas) Score(m eval.Metrics) (float64, error) {
	r, err := o.Target.ratio(m)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", o.Name(), err)
	}
	w := o.Alpha
	if r > 1 {
		w = o.Beta
	}
	return m.Accuracy * math.Pow(r, w), nil
}

// Budget maximises accuracy under hard limits on latency and/or model size. A candidate
// within every limit scores its accuracy (in [0, 1]); one over a limit scores
// accuracy - 1 - overshoot, so it ranks below every feasible candidate yet still guides the
// search towards the budget.
type Budget struct {
	Latency Target // zero for no latency limit
	Bytes   int64  // 0 for no size limit
}

// Name returns "budget".
func (Budget) Name() string { return "budget" }

// Score implements Objective.
func (o Budget) Score(m eval.Metrics) (float64, error) {
	over := 0.0
	if o.Latency != (Target{}) {
		r, err := o.Latency.ratio(m)
		if err != nil {
			return 0, fmt.Errorf("budget: %w", err)
		}
		over += math.Max(0, r-1)
	}
	if o.Bytes > 0 {
		if m.Bytes <= 0 {
			return 0, fmt.Errorf("budget: model size was not measured")
		}
		over += math.Max(0, float64(m.Bytes)/float64(o.Bytes)-1)
	}
	if over > 0 {
		return m.Accuracy - 1 - over, nil
	}
	return m.Accuracy, nil
}

// Weighted is a linear trade-off: accuracy - LatencyWeight x (LAT/T) - SizeWeight x
// (bytes/SizeRef).
type Weighted struct {
	Latency       Target
	LatencyWeight float64
	SizeRef       int64
	SizeWeight    float64
}

// Name returns "weighted".
func (Weighted) Name() string { return "weighted" }

// Score implements Objective.
func (o Weighted) Score(m eval.Metrics) (float64, error) {
	s := m.Accuracy
	if o.LatencyWeight != 0 {
		r, err := o.Latency.ratio(m)
		if err != nil {
			return 0, fmt.Errorf("weighted: %w", err)
		}
		s -= o.LatencyWeight * r
	}
	if o.SizeWeight != 0 {
		if o.SizeRef <= 0 || m.Bytes <= 0 {
			return 0, fmt.Errorf("weighted: size weight needs a size reference and a measured size")
		}
		s -= o.SizeWeight * float64(m.Bytes) / float64(o.SizeRef)
	}
	return s, nil
}

// Params are the settings a named objective is built from (the [objective] section of a
// study config).
type Params struct {
	Target        Target  // latency target
	Weight        float64 // Mnas exponent override (negative), or the latency weight of "weighted"
	Bytes         int64   // size budget or size reference
	SizeWeight    float64 // size weight of "weighted"
	HasWeight     bool    // Weight was given
	HasSizeWeight bool    // SizeWeight was given
}

// Factory builds an objective from params.
type Factory func(p Params) (Objective, error)

var (
	mu       sync.RWMutex
	registry = map[string]Factory{
		"mnas-soft": func(p Params) (Objective, error) {
			w := -0.07
			if p.HasWeight {
				w = p.Weight
			}
			if p.Target == (Target{}) {
				return nil, fmt.Errorf("mnas-soft needs a latency target")
			}
			return Mnas{Target: p.Target, Alpha: w, Beta: w, Label: "mnas-soft"}, nil
		},
		"mnas-hard": func(p Params) (Objective, error) {
			w := -1.0
			if p.HasWeight {
				w = p.Weight
			}
			if p.Target == (Target{}) {
				return nil, fmt.Errorf("mnas-hard needs a latency target")
			}
			return Mnas{Target: p.Target, Alpha: 0, Beta: w, Label: "mnas-hard"}, nil
		},
		"budget": func(p Params) (Objective, error) {
			if p.Target == (Target{}) && p.Bytes <= 0 {
				return nil, fmt.Errorf("budget needs a latency target, a size budget in bytes, or both")
			}
			return Budget{Latency: p.Target, Bytes: p.Bytes}, nil
		},
		"weighted": func(p Params) (Objective, error) {
			o := Weighted{Latency: p.Target, LatencyWeight: p.Weight, SizeRef: p.Bytes, SizeWeight: p.SizeWeight}
			if o.LatencyWeight != 0 && p.Target == (Target{}) {
				return nil, fmt.Errorf("weighted: a latency weight needs a latency target")
			}
			if o.SizeWeight != 0 && p.Bytes <= 0 {
				return nil, fmt.Errorf("weighted: a size weight needs a size reference in bytes")
			}
			return o, nil
		},
	}
)

// Register adds a named objective factory, replacing any of the same name.
func Register(name string, f Factory) {
	mu.Lock()
	defer mu.Unlock()
	registry[name] = f
}

// Names lists the registered objectives, sorted.
func Names() []string {
	mu.RLock()
	defer mu.RUnlock()
	out := make([]string, 0, len(registry))
	for n := range registry {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// New builds the named objective.
func New(name string, p Params) (Objective, error) {
	mu.RLock()
	f, ok := registry[name]
	mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("unknown objective %q (known: %s)", name, strings.Join(Names(), ", "))
	}
	return f(p)
}
