package search

import (
	"math"
	"strings"
	"testing"
)

func TestInterpolateAt(t *testing.T) {
	pts := [][2]float64{{0.99, 0.88}, {0.55, 0.80}, {0.40, 0.72}, {0.56, 0.77}}
	for _, tc := range []struct {
		x, want float64
	}{
		{0.5, 0.72 + (0.1/0.15)*0.08},
		{0.40, 0.72},
		{0.99, 0.88},
		{0.3, math.NaN()},
		{1.2, math.NaN()},
	} {
		got := interpolateAt(pts, tc.x)
		if math.IsNaN(tc.want) != math.IsNaN(got) || (!math.IsNaN(got) && math.Abs(got-tc.want) > 1e-12) {
			t.Errorf("interpolateAt(%v) = %v, want %v", tc.x, got, tc.want)
		}
	}
}

func TestKendallTau(t *testing.T) {
	for _, tc := range []struct {
		x, y []float64
		want float64
	}{
		{[]float64{1, 2, 3, 4}, []float64{10, 20, 30, 40}, 1},
		{[]float64{1, 2, 3, 4}, []float64{4, 3, 2, 1}, -1},
		{[]float64{1, 2, 3}, []float64{1, 3, 2}, 1.0 / 3},
		{[]float64{1, 1, 1}, []float64{1, 2, 3}, math.NaN()},
	} {
		got := kendallTau(tc.x, tc.y)
		if math.IsNaN(tc.want) != math.IsNaN(got) || (!math.IsNaN(got) && math.Abs(got-tc.want) > 1e-12) {
			t.Errorf("kendallTau(%v, %v) = %v, want %v", tc.x, tc.y, got, tc.want)
		}
	}
}

// The table says when the uniform plan was kept over the re-ranking's first choice, and
// what that choice would have delivered, and the gain over the uniform plan fitted to the
// target.
func TestCompareWriteKeptUniform(t *testing.T) {
	nan := OptFloat(math.NaN())
	c := Comparison{Target: 0.25, DenseTest: nan, Rows: []CompareRow{
		{Method: "tpe", Seed: 1, Winner: 0, Unranked: 0, Ranked: 31, RankedAcc: 0.7960, TestAcc: 0.8041, Rel: 0.24, Meets: true,
			UniformAt: 0.8040, Gain: 0.0001, Fitted: 0.8041, FittedGain: 0, UnrankedAcc: nan, Tau: nan, ZeroTau: nan},
		{Method: "tpe", Seed: 2, Winner: 7, Unranked: 7, Ranked: -1, RankedAcc: nan, TestAcc: 0.81, Rel: 0.24, Meets: true,
			UniformAt: 0.80, Gain: 0.01, Fitted: 0.805, FittedGain: 0.005, UnrankedAcc: nan, Tau: nan, ZeroTau: nan},
	}}
	var out strings.Builder
	c.Write(&out)
	text := out.String()
	if !strings.Contains(text, "0, uniform kept (ranked first: trial 31, 79.60") {
		t.Errorf("the kept uniform plan is not reported:\n%s", text)
	}
	if strings.Count(text, "uniform kept") != 1 {
		t.Errorf("want one row with the uniform kept:\n%s", text)
	}
	// The gain at the target itself: per row, and its mean over the two.
	for _, want := range []string{"+0.00 (80.41", "+0.50 (80.50", "0.25 ± 0.35"} {
		if !strings.Contains(text, want) {
			t.Errorf("no %q in the table:\n%s", want, text)
		}
	}
}

func TestJointVerdict(t *testing.T) {
	nan := OptFloat(math.NaN())
	for _, tc := range []struct {
		joint, spread OptFloat
		want          string
	}{
		{0.39, 0.02, "0.390x ±2.0% yes"},
		{0.40, 0.02, "0.400x ±2.0% yes"},
		{0.405, 0.02, "0.405x ±2.0% within spread"},
		{0.41, 0.02, "0.410x ±2.0% NO"},
		{0.401, nan, "0.401x NO"},
		{nan, 0.02, "—"},
	} {
		r := CompareRow{Joint: tc.joint, JointSpread: tc.spread}
		if got := r.jointVerdict(0.4); got != tc.want {
			t.Errorf("joint %v spread %v: %q, want %q", tc.joint, tc.spread, got, tc.want)
		}
	}
	// The summary counts the winners that meet the target again, within the spread.
	c := Comparison{Target: 0.4, DenseTest: nan, Rows: []CompareRow{
		{Method: "tpe", Seed: 1, Winner: 3, Unranked: 3, Ranked: -1, TestAcc: 0.84, Rel: 0.39, Meets: true, Joint: 0.405, JointSpread: 0.02},
		{Method: "tpe", Seed: 2, Winner: 4, Unranked: 4, Ranked: -1, TestAcc: 0.84, Rel: 0.39, Meets: true, Joint: 0.42, JointSpread: 0.02},
	}}
	var out strings.Builder
	c.Write(&out)
	if !strings.Contains(out.String(), "2 of 2; again: 1 of 2") {
		t.Errorf("the summary does not count the winners meeting the target again:\n%s", out.String())
	}
}
