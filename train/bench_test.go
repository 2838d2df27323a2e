package train

import (
	"testing"

	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/nn/zoo"
)

// BenchmarkTrainStep measures one Adam step on a batch of 64 MNIST-sized images per zoo
// model.
func BenchmarkTrainStep(b *testing.B) {
	const batch = 64
	for _, name := range zoo.Names {
		b.Run(name, func(b *testing.B) {
			m, err := zoo.Build(name, nn.Shape{C: 1, H: 28, W: 28}, 10, 1)
			if err != nil {
				b.Fatal(err)
			}
			x, labels := randomInput(m, batch, 10, 1)
			for i := range x {
				x[i] = x[i]*0.3 + 0.2
			}
			tr, err := NewTrainer(m, batch, Config{})
			if err != nil {
				b.Fatal(err)
			}
			defer tr.Close()
			if _, err := tr.Step(x, labels); err != nil { // warm up: first-run allocations
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := tr.Step(x, labels); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "images/s")
		})
	}
}
