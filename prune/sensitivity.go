package prune

import (
	"context"
	"fmt"

	"github.com/autoprune/autoprune/nn"
)

// EvalFunc scores a candidate model, typically validation accuracy (after an optional
// batch-norm recalibration).
type EvalFunc func(ctx context.Context, m *nn.Model) (float64, error)

// SensitivityPoint is the score of the model with one group pruned by one ratio.
type SensitivityPoint struct {
	Group string  `json:"group"`
	Ratio float64 `json:"ratio"`
	Kept  int     `json:"kept"`  // channels kept
	Score float64 `json:"score"` // e.g. validation accuracy
}

// SensitivityReport is the result of a sensitivity analysis: how much each group alone can
// be pruned. Layers differ widely (the first convolutions and the layers before the output
// are usually fragile), which is why per-group ratios beat one global ratio.
type SensitivityReport struct {
	Criterion string             `json:"criterion"`
	Base      float64            `json:"base"` // score of the unpruned model
	Ratios    []float64          `json:"ratios"`
	Groups    []Group            `json:"groups"`
	Points    []SensitivityPoint `json:"points"`
}

// DefaultRatios are the ratios 0.1, 0.2, ..., 0.9.
var DefaultRatios = []float64{0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9}

// Sensitivity prunes each group alone at each ratio with the criterion and scores the
// result with eval. progress, when not nil, is called after each point.
func Sensitivity(ctx context.Context, m *nn.Model, c Criterion, ratios []float64, eval EvalFunc, progress func(SensitivityPoint)) (*SensitivityReport, error) {
	if len(ratios) == 0 {
		ratios = DefaultRatios
	}
	gs, err := Groups(m)
	if err != nil {
		return nil, err
	}
	base, err := eval(ctx, m)
	if err != nil {
		return nil, fmt.Errorf("sensitivity: scoring the unpruned model: %w", err)
	}
	rep := &SensitivityReport{Criterion: c.Name(), Base: base, Ratios: ratios, Groups: gs}
	for _, g := range gs {
		for _, r := range ratios {
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("sensitivity: %w", err)
			}
			p, err := Structured(m, Plan{g.Name: r}, c)
			if err != nil {
				return nil, fmt.Errorf("sensitivity: group %s at %.2f: %w", g.Name, r, err)
			}
			s, err := eval(ctx, p)
			if err != nil {
				return nil, fmt.Errorf("sensitivity: group %s at %.2f: %w", g.Name, r, err)
			}
			pt := SensitivityPoint{Group: g.Name, Ratio: r, Kept: Keep(g.Size, r), Score: s}
			rep.Points = append(rep.Points, pt)
			if progress != nil {
				progress(pt)
			}
		}
	}
	return rep, nil
}

// Score returns the score of a group at a ratio, and whether it was measured.
func (r *SensitivityReport) Score(group string, ratio float64) (float64, bool) {
	for _, p := range r.Points {
		if p.Group == group && p.Ratio == ratio {
			return p.Score, true
		}
	}
	return 0, false
}

// MaxRatios derives, for each group, the largest measured ratio such that this ratio and
// every smaller one keep the score within maxDrop of the unpruned score (0 when even the
// smallest ratio loses more). A search can use these as per-group upper bounds.
func (r *SensitivityReport) MaxRatios(maxDrop float64) map[string]float64 {
	out := map[string]float64{}
	for _, g := range r.Groups {
		best := 0.0
		for _, ratio := range r.Ratios {
			s, ok := r.Score(g.Name, ratio)
			if !ok || s < r.Base-maxDrop {
				break
			}
			best = ratio
		}
		out[g.Name] = best
	}
	return out
}
