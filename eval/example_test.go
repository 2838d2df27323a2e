package eval_test

import (
	"context"
	"fmt"
	"time"

	"github.com/autoprune/autoprune/eval"
	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/nn/zoo"
)

// A custom latency meter in a few lines: here a model of a device that needs 2 ns per
// multiply-add plus 50 µs per inference. The search accepts any eval.Meter.
func ExampleMeterFunc() {
	meter := eval.MeterFunc(func(ctx context.Context, m *nn.Model) (eval.Latency, error) {
		_, macs, err := m.Totals()
		if err != nil {
			return eval.Latency{}, err
		}
		d := 50*time.Microsecond + time.Duration(2*macs)
		return eval.Latency{Median: d, P90: d, Mean: d, Min: d, N: 1, Batch: 1, Threads: 1, Proxy: true}, nil
	})
	m, _ := zoo.Build("lenet5", nn.Shape{C: 1, H: 28, W: 28}, 10, 1)
	lat, _ := meter.Measure(context.Background(), m)
	fmt.Println(lat.Median)
	// Output: 883.04µs
}
