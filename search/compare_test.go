package search

import (
	"math"
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
