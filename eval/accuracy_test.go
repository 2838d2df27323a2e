package eval

import (
	"context"
	"testing"

	"github.com/autoprune/autoprune/data"
	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/nn/zoo"
)

// Logits returns one row per sample in dataset order, whose arg-max agrees with what
// Accuracy counts, and whose rows do not depend on the batch a sample fell in.
func TestLogitsAgreeWithAccuracy(t *testing.T) {
	_, test, err := data.LoadMNIST()
	if err != nil {
		t.Fatal(err)
	}
	ds := test.Head(1234) // not a multiple of the batch
	m, err := zoo.Build("lenet5", nn.Shape{C: 1, H: 28, W: 28}, 10, 3)
	if err != nil {
		t.Fatal(err)
	}
	z, err := Logits(context.Background(), m, ds, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(z) != ds.N*10 {
		t.Fatalf("%d logits for %d samples x 10 classes", len(z), ds.N)
	}
	correct := 0
	for i := 0; i < ds.N; i++ {
		row := z[i*10 : (i+1)*10]
		best := 0
		for j, v := range row {
			if v > row[best] {
				best = j
			}
		}
		if best == int(ds.Labels[i]) {
			correct++
		}
	}
	score, err := Accuracy(context.Background(), m, ds, 100, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := float64(correct) / float64(ds.N); got != score.Accuracy {
		t.Errorf("arg-max of Logits gives accuracy %v, Accuracy %v", got, score.Accuracy)
	}
	idx := make([]int, 34)
	for i := range idx {
		idx[i] = 1200 + i
	}
	tail, err := Logits(context.Background(), m, ds.Subset(idx), 1)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range tail {
		if d := v - z[1200*10+i]; d > 1e-4 || d < -1e-4 {
			t.Fatalf("logit %d of the last samples differs by %v when computed in another batch", i, d)
		}
	}
}
