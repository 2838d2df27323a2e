package objectives

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/autoprune/autoprune/eval"
)

func metrics(acc, rel float64, lat time.Duration, bytes int64) eval.Metrics {
	return eval.Metrics{Accuracy: acc, RelLatency: rel, Latency: eval.Latency{Median: lat}, Bytes: bytes}
}

func TestScores(t *testing.T) {
	half := Target{Rel: 0.5}
	tests := []struct {
		name string
		o    Objective
		m    eval.Metrics
		want float64
	}{
		{"soft at target", Mnas{Target: half, Alpha: -0.07, Beta: -0.07}, metrics(0.9, 0.5, 0, 0), 0.9},
		{"soft faster", Mnas{Target: half, Alpha: -0.07, Beta: -0.07}, metrics(0.9, 0.25, 0, 0), 0.9 * math.Pow(0.5, -0.07)},
		{"soft slower", Mnas{Target: half, Alpha: -0.07, Beta: -0.07}, metrics(0.9, 1, 0, 0), 0.9 * math.Pow(2, -0.07)},
		{"hard faster", Mnas{Target: half, Alpha: 0, Beta: -1}, metrics(0.9, 0.25, 0, 0), 0.9},
		{"hard slower", Mnas{Target: half, Alpha: 0, Beta: -1}, metrics(0.9, 1, 0, 0), 0.45},
		{"absolute", Mnas{Target: Target{Abs: 2 * time.Millisecond}, Alpha: 0, Beta: -1}, metrics(0.8, 0, 4*time.Millisecond, 0), 0.4},
		{"budget feasible", Budget{Latency: half, Bytes: 1000}, metrics(0.9, 0.4, 0, 900), 0.9},
		{"budget over", Budget{Latency: half, Bytes: 1000}, metrics(0.9, 0.75, 0, 1500), 0.9 - 1 - 0.5 - 0.5},
		{"weighted", Weighted{Latency: half, LatencyWeight: 0.1, SizeRef: 1000, SizeWeight: 0.2}, metrics(0.9, 0.5, 0, 500), 0.9 - 0.1 - 0.1},
		{"func", Func(func(m eval.Metrics) (float64, error) { return m.Accuracy - m.RelLatency, nil }), metrics(0.9, 0.5, 0, 0), 0.4},
	}
	for _, tc := range tests {
		got, err := tc.o.Score(tc.m)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	// Any feasible candidate beats any infeasible one.
	b := Budget{Latency: half}
	bad, _ := b.Score(metrics(1, 0.51, 0, 0))
	good, _ := b.Score(metrics(0.01, 0.5, 0, 0))
	if bad >= good {
		t.Errorf("infeasible %v >= feasible %v", bad, good)
	}
	if _, err := (Mnas{Target: half}).Score(metrics(0.9, 0, time.Millisecond, 0)); err == nil {
		t.Error("relative target without relative latency: no error")
	}
}

func TestRegistry(t *testing.T) {
	tgt, err := ParseTarget("0.5x")
	if err != nil || tgt.Rel != 0.5 {
		t.Fatal(tgt, err)
	}
	if tgt, err := ParseTarget("1.5ms"); err != nil || tgt.Abs != 1500*time.Microsecond {
		t.Fatal(tgt, err)
	}
	for _, bad := range []string{"", "x", "-1x", "fast", "-2ms", "0x"} {
		if _, err := ParseTarget(bad); err == nil {
			t.Errorf("ParseTarget(%q): no error", bad)
		}
	}
	for _, name := range []string{"mnas-soft", "mnas-hard", "budget"} {
		o, err := New(name, Params{Target: tgt})
		if err != nil || o.Name() != name {
			t.Errorf("New(%q) = %v, %v", name, o, err)
		}
	}
	if _, err := New("mnas-soft", Params{}); err == nil {
		t.Error("mnas-soft without target: no error")
	}
	if _, err := New("nope", Params{}); err == nil || !strings.Contains(err.Error(), "mnas-soft") {
		t.Errorf("unknown objective: %v", err)
	}
	Register("acc", func(Params) (Objective, error) {
		return Func(func(m eval.Metrics) (float64, error) { return m.Accuracy, nil }), nil
	})
	if o, err := New("acc", Params{}); err != nil || o == nil {
		t.Errorf("registered objective: %v", err)
	}
}
