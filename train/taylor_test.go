package train

import (
	"reflect"
	"strings"
	"testing"

	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/nn/zoo"
	"github.com/autoprune/autoprune/prune"
)

// The Taylor criterion is a function of the model, the data and the seed: the same seed
// ranks channels the same way, another seed draws other samples; data that does not fit
// the model is refused.
func TestTaylorCriterion(t *testing.T) {
	trainSet, _ := loadMNIST(t)
	ds := trainSet.Head(2000)
	m := build28(t, "lenet5", 1)
	gs, err := prune.Groups(m)
	if err != nil {
		t.Fatal(err)
	}
	scores := func(seed int64) []float64 {
		c, err := TaylorCriterion(m, ds, seed)
		if err != nil {
			t.Fatal(err)
		}
		s, err := c.Score(m, gs[0])
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a, b, c := scores(1), scores(1), scores(2)
	if !reflect.DeepEqual(a, b) {
		t.Errorf("same seed, different scores: %v and %v", a, b)
	}
	if reflect.DeepEqual(a, c) {
		t.Errorf("seeds 1 and 2 gave the same scores %v", a)
	}
	small, err := zoo.Build("lenet5", nn.Shape{C: 1, H: 14, W: 14}, 10, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := TaylorCriterion(small, ds, 1); err == nil || !strings.Contains(err.Error(), "expects 1x14x14 inputs") {
		t.Errorf("mismatched data: %v", err)
	}
}
