package prune

import (
	"context"
	"errors"
	"testing"

	"github.com/autoprune/autoprune/nn"
)

func TestSensitivity(t *testing.T) {
	m := build(t, "lenet5")
	base, _, _ := m.Totals()
	// Score = fraction of parameters kept: monotone in every ratio, known in closed form.
	score := func(ctx context.Context, p *nn.Model) (float64, error) {
		n, _, err := p.Totals()
		return float64(n) / float64(base), err
	}
	var calls int
	rep, err := Sensitivity(context.Background(), m, L1{}, []float64{0.25, 0.5, 0.75}, score, func(SensitivityPoint) { calls++ })
	if err != nil {
		t.Fatal(err)
	}
	if rep.Base != 1 || len(rep.Points) != 4*3 || calls != 12 {
		t.Fatalf("base %v, %d points, %d calls", rep.Base, len(rep.Points), calls)
	}
	// fc1 holds 48000 of 61706 parameters: pruning it drops the score fastest.
	s, ok := rep.Score("fc1", 0.5)
	if !ok || s > 0.7 {
		t.Errorf("fc1 at 0.5: %v %v", s, ok)
	}
	max := rep.MaxRatios(0.05)
	if max["conv1"] != 0.75 || max["fc1"] != 0 {
		t.Errorf("max ratios %v", max)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Sensitivity(ctx, m, L1{}, nil, score, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: err = %v", err)
	}
}
