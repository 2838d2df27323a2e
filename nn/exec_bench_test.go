package nn_test

import (
	"fmt"
	"math/rand"
	"runtime"
	"testing"

	"github.com/autoprune/autoprune/internal/kernel"
	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/nn/zoo"
)

// BenchmarkForward times one forward pass of every zoo model on 28x28x1 inputs.
func BenchmarkForward(b *testing.B) {
	for _, name := range zoo.Names {
		m, err := zoo.Build(name, execMNIST, 10, 1)
		if err != nil {
			b.Fatal(err)
		}
		_, macs, err := m.Totals()
		if err != nil {
			b.Fatal(err)
		}
		for _, batch := range []int{1, 32} {
			for _, threads := range []int{1, 2} {
				b.Run(fmt.Sprintf("%s/batch=%d/threads=%d", name, batch, threads), func(b *testing.B) {
					e, err := nn.NewExecutor(m, batch, nn.Options{Threads: threads})
					if err != nil {
						b.Fatal(err)
					}
					x := execRandVec(rand.New(rand.NewSource(1)), batch*execMNIST.Size(), 1)
					if _, err := e.Forward(x); err != nil { // sizes the kernels' scratch
						b.Fatal(err)
					}
					b.ReportAllocs()
					for b.Loop() {
						if _, err := e.Forward(x); err != nil {
							b.Fatal(err)
						}
					}
					sec := b.Elapsed().Seconds()
					b.ReportMetric(float64(b.N*batch)/sec, "images/s")
					b.ReportMetric(2*float64(macs)*float64(b.N*batch)/sec/1e9, "GFLOP/s")
				})
			}
		}
	}
}

// BenchmarkGemm compares the SGEMM kernels on the shape of vgg-small's second convolution
// (M=64 output channels, N=784 pixels, K=288 = 32 channels x 3x3) and a few others.
func BenchmarkGemm(b *testing.B) {
	rng := rand.New(rand.NewSource(1))
	for _, d := range []struct{ m, n, k int }{{64, 784, 288}, {64, 196, 576}, {128, 49, 576}} {
		a := execRandVec(rng, d.m*d.k, 1)
		bm := execRandVec(rng, d.k*d.n, 1)
		c := make([]float32, d.m*d.n)
		impls := []struct {
			name  string
			g     kernel.Gemm
			procs int // GOMAXPROCS during the run; 0 leaves it alone
		}{
			{"default", kernel.New(), 0},
			{"portable", kernel.NewPortable(), 0},
			{"gonum", kernel.Gonum{}, 0},
			{"gonum-1proc", kernel.Gonum{}, 1},
		}
		for _, im := range impls {
			b.Run(fmt.Sprintf("%dx%dx%d/%s", d.m, d.n, d.k, im.name), func(b *testing.B) {
				if im.procs > 0 {
					defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(im.procs))
				}
				for b.Loop() {
					im.g.Sgemm(false, false, d.m, d.n, d.k, 1, a, d.k, bm, d.n, 0, c, d.n)
				}
				b.ReportMetric(2*float64(d.m*d.n*d.k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}
