package eval

import (
	"context"
	"math"
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
	right := make([]bool, ds.N)
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
			right[i] = true
		}
	}
	score, err := Accuracy(context.Background(), m, ds, 100, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := float64(correct) / float64(ds.N); got != score.Accuracy {
		t.Errorf("arg-max of Logits gives accuracy %v, Accuracy %v", got, score.Accuracy)
	}
	if len(score.Hits) != ds.N {
		t.Fatalf("%d hits for %d samples", len(score.Hits), ds.N)
	}
	for i, h := range score.Hits {
		if h != right[i] {
			t.Fatalf("sample %d: Accuracy's hit %v, Logits' arg-max right %v", i, h, right[i])
		}
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

// PairedGap counts the samples one model gets right and the other wrong: shared mistakes
// add no noise, so the standard error follows the disagreements alone.
func TestPairedGap(t *testing.T) {
	score := func(hits ...bool) Score { return Score{Hits: hits, N: len(hits)} }
	tests := []struct {
		name    string
		a, b    Score
		gap, se float64
	}{
		{"identical", score(true, false, true, true), score(true, false, true, true), 0, 0},
		// d = (+1, 0, 0, 0): mean 1/4, variance 1/4 - 1/16 = 3/16, se sqrt(3/16/4).
		{"one more right", score(true, false, true, true), score(false, false, true, true), 0.25, math.Sqrt(3.0 / 64)},
		// d = (+1, -1, 0, 0): mean 0, variance 1/2, se sqrt(1/8).
		{"one each way", score(true, false, true, true), score(false, true, true, true), 0, math.Sqrt(1.0 / 8)},
		{"the other way", score(false, false, true, true), score(true, false, true, true), -0.25, math.Sqrt(3.0 / 64)},
	}
	for _, tc := range tests {
		gap, se, err := PairedGap(tc.a, tc.b)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if math.Abs(gap-tc.gap) > 1e-12 || math.Abs(se-tc.se) > 1e-12 {
			t.Errorf("%s: gap %.4f ± %.4f, want %.4f ± %.4f", tc.name, gap, se, tc.gap, tc.se)
		}
	}
	if _, _, err := PairedGap(score(true), score(true, false)); err == nil {
		t.Error("scores over 1 and 2 samples compared without an error")
	}
	if _, _, err := PairedGap(Score{}, Score{}); err == nil {
		t.Error("scores without samples compared without an error")
	}
}
