package nn

import (
	"math"
	"math/rand"
)

// Init allocates every parameter of the model and fills it from a seeded generator: He
// (Kaiming) normal weights for Conv2D and Linear layers (std = sqrt(2/fan_in)), zero biases,
// and identity batch norms (gamma 1, beta 0, running mean 0, running variance 1). Masks are
// dropped. The same seed gives the same weights.
func (m *Model) Init(seed int64) error {
	shapes, err := m.Shapes()
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewSource(seed))
	for _, l := range m.Layers {
		l.Mask = nil
		c := m.Input.C
		if len(l.Inputs) > 0 {
			if j := m.Index(l.Inputs[0]); j >= 0 {
				c = shapes[j].C
			}
		}
		switch l.Kind {
		case Conv2D, Linear:
			fanIn := l.In
			if l.Kind == Conv2D {
				fanIn = l.In / l.groups() * l.Kernel * l.Kernel
			}
			std := math.Sqrt(2 / float64(fanIn))
			n := 1
			for _, d := range l.Params(c)[0].Shape {
				n *= d
			}
			l.Weight = make([]float32, n)
			for i := range l.Weight {
				l.Weight[i] = float32(rng.NormFloat64() * std)
			}
			l.Bias = nil
			if l.HasBias {
				l.Bias = make([]float32, l.Out)
			}
		case BatchNorm:
			l.Gamma = fill(c, 1)
			l.Beta = fill(c, 0)
			l.Mean = fill(c, 0)
			l.Var = fill(c, 1)
		}
	}
	return nil
}

func fill(n int, v float32) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = v
	}
	return s
}
