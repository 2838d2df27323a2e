package objectives_test

import (
	"fmt"

	"github.com/autoprune/autoprune/eval"
	"github.com/autoprune/autoprune/objectives"
)

// A custom objective in a few lines: accuracy, minus a penalty per million multiply-adds.
func ExampleFunc() {
	obj := objectives.Func(func(m eval.Metrics) (float64, error) {
		return m.Accuracy - 0.01*float64(m.MACs)/1e6, nil
	})
	score, _ := obj.Score(eval.Metrics{Accuracy: 0.98, MACs: 2_000_000})
	fmt.Printf("%s: %.2f\n", obj.Name(), score)
	// Output: custom: 0.96
}
