package prune

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand"
	"sort"
	"strings"

	"github.com/autoprune/autoprune/nn"
)

// Criterion scores the channels of a group: a higher score means more important. A group
// is scored as a whole: a channel's score sums over every layer that produces it.
type Criterion interface {
	Name() string
	Score(m *nn.Model, g Group) ([]float64, error)
}

// L1 scores a channel by the L1 norm of its filters (the producing weights).
type L1 struct{}

// Name returns "l1".
func (L1) Name() string { return "l1" }

// Score implements Criterion.
func (L1) Score(m *nn.Model, g Group) ([]float64, error) {
	return filterNorms(m, g, func(v float64) float64 { return math.Abs(v) }, false)
}

// L2 scores a channel by the L2 norm of its filters.
type L2 struct{}

// Name returns "l2".
func (L2) Name() string { return "l2" }

// Score implements Criterion.
func (L2) Score(m *nn.Model, g Group) ([]float64, error) {
	return filterNorms(m, g, func(v float64) float64 { return v * v }, true)
}

// filterNorms sums f over each output channel's weights in every producer (and depthwise
// carrier), then optionally takes the square root.
func filterNorms(m *nn.Model, g Group, f func(float64) float64, sqrt bool) ([]float64, error) {
	s := make([]float64, g.Size)
	layers := append(append([]string(nil), g.Producers...), g.Carriers...)
	for _, name := range layers {
		l := m.Layer(name)
		if l == nil || (l.Kind != nn.Conv2D && l.Kind != nn.Linear) {
			continue
		}
		if l.Out != g.Size || len(l.Weight)%l.Out != 0 {
			return nil, fmt.Errorf("layer %q has %d outputs, group %q has %d", name, l.Out, g.Name, g.Size)
		}
		per := len(l.Weight) / l.Out
		for c := 0; c < l.Out; c++ {
			for _, w := range l.Weight[c*per : (c+1)*per] {
				s[c] += f(float64(w))
			}
		}
	}
	if sqrt {
		for i := range s {
			s[i] = math.Sqrt(s[i])
		}
	}
	return s, nil
}

// BNScale scores a channel by the absolute batch-norm scale |gamma| that follows it (network
// slimming, Liu et al. 2017), summed over the group's batch norms. Groups without batch norm
// fall back to the L1 filter norm.
type BNScale struct{}

// Name returns "bn".
func (BNScale) Name() string { return "bn" }

// Score implements Criterion.
func (BNScale) Score(m *nn.Model, g Group) ([]float64, error) {
	s := make([]float64, g.Size)
	found := false
	for _, name := range g.Carriers {
		l := m.Layer(name)
		if l == nil || l.Kind != nn.BatchNorm {
			continue
		}
		if len(l.Gamma) != g.Size {
			return nil, fmt.Errorf("batch norm %q has %d channels, group %q has %d", name, len(l.Gamma), g.Name, g.Size)
		}
		found = true
		for c, v := range l.Gamma {
			s[c] += math.Abs(float64(v))
		}
	}
	if !found {
		return L1{}.Score(m, g)
	}
	return s, nil
}

// Random scores channels at random: the control every criterion must beat. The scores
// depend only on the seed and the group name.
type Random struct{ Seed int64 }

// Name returns "random".
func (Random) Name() string { return "random" }

// Score implements Criterion.
func (r Random) Score(m *nn.Model, g Group) ([]float64, error) {
	h := fnv.New64a()
	h.Write([]byte(g.Name))
	rng := rand.New(rand.NewSource(r.Seed ^ int64(h.Sum64())))
	s := make([]float64, g.Size)
	for i := range s {
		s[i] = rng.Float64()
	}
	return s, nil
}

// Taylor is the first-order Taylor criterion (Molchanov et al. 2019): the loss change from
// removing a channel is estimated from parameter gradients as the squared sum of
// gradient x parameter over the channel's batch-norm scale and shift when the group has batch
// norm, otherwise over its filter weights. Grads holds gradients accumulated over a few
// batches, keyed "<layer>.<param>" (weight, gamma, beta), as returned by train.Gradients.
type Taylor struct {
	Grads map[string][]float32
}

// Name returns "taylor".
func (Taylor) Name() string { return "taylor" }

// Score implements Criterion.
func (t Taylor) Score(m *nn.Model, g Group) ([]float64, error) {
	s := make([]float64, g.Size)
	usedBN := false
	for _, name := range g.Carriers {
		l := m.Layer(name)
		if l == nil || l.Kind != nn.BatchNorm {
			continue
		}
		gg, gb := t.Grads[name+".gamma"], t.Grads[name+".beta"]
		if len(gg) != g.Size || len(gb) != g.Size {
			return nil, fmt.Errorf("taylor: no gradients for batch norm %q (have %s)", name, t.keys())
		}
		usedBN = true
		for c := range s {
			v := float64(gg[c])*float64(l.Gamma[c]) + float64(gb[c])*float64(l.Beta[c])
			s[c] += v * v
		}
	}
	if usedBN {
		return s, nil
	}
	for _, name := range g.Producers {
		l := m.Layer(name)
		gw := t.Grads[name+".weight"]
		if len(gw) != len(l.Weight) {
			return nil, fmt.Errorf("taylor: no weight gradients for layer %q (have %s)", name, t.keys())
		}
		per := len(l.Weight) / l.Out
		for c := 0; c < l.Out; c++ {
			var v float64
			for j := c * per; j < (c+1)*per; j++ {
				v += float64(gw[j]) * float64(l.Weight[j])
			}
			s[c] += v * v
		}
	}
	return s, nil
}

func (t Taylor) keys() string {
	if len(t.Grads) == 0 {
		return "none"
	}
	ks := make([]string, 0, len(t.Grads))
	for k := range t.Grads {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	if len(ks) > 6 {
		ks = append(ks[:6], "...")
	}
	return strings.Join(ks, ", ")
}

// CriterionNames lists the criteria NewCriterion knows; "taylor" needs gradients and is
// built with Taylor directly.
var CriterionNames = []string{"l1", "l2", "bn", "random"}

// AllCriteria lists every criterion by name: CriterionNames and "taylor", which ranks
// channels by loss gradients on data (Taylor).
var AllCriteria = append(append([]string(nil), CriterionNames...), "taylor")

// NewCriterion returns the named data-free criterion.
func NewCriterion(name string, seed int64) (Criterion, error) {
	switch name {
	case "l1":
		return L1{}, nil
	case "l2":
		return L2{}, nil
	case "bn":
		return BNScale{}, nil
	case "random":
		return Random{Seed: seed}, nil
	}
	return nil, fmt.Errorf("unknown criterion %q (known: %s, taylor)", name, strings.Join(CriterionNames, ", "))
}
