package eval_test

import (
	"context"
	"math/rand"
	"sort"
	"testing"
	"time"

	"github.com/autoprune/autoprune/eval"
	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/nn/zoo"
	"github.com/autoprune/autoprune/prune"
)

func TestMeasureLocal(t *testing.T) {
	m := lenet(t)
	l, err := eval.MeasureLocal(context.Background(), m, 2, 1, 1, 7, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if l.N != 7 || l.Batch != 2 || l.Threads != 1 || l.Proxy || l.Device != eval.ThisDevice() {
		t.Errorf("latency %+v", l)
	}
	if !(l.Min > 0 && l.Min <= l.Median && l.Median <= l.P90) {
		t.Errorf("distribution out of order: min %s, median %s, p90 %s", l.Min, l.Median, l.P90)
	}
	// The local meter caches by architecture.
	lm := &eval.LocalMeter{Runs: 5, Warmup: 1}
	a, err := lm.Measure(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := lm.Measure(context.Background(), m.Clone())
	if a != b {
		t.Errorf("second measurement of the same architecture not cached: %v vs %v", a, b)
	}
}

// vggPair returns vgg-small and vgg-small with half of every group's channels removed by
// L1 norm, and their multiply-adds per sample.
func vggPair(tb testing.TB) (dense, pruned *nn.Model, macsDense, macsPruned int64) {
	tb.Helper()
	dense, err := zoo.Build("vgg-small", nn.Shape{C: 1, H: 28, W: 28}, 10, 1)
	if err != nil {
		tb.Fatal(err)
	}
	gs, err := prune.Groups(dense)
	if err != nil {
		tb.Fatal(err)
	}
	pruned, err = prune.Structured(dense, prune.Uniform(gs, 0.5), prune.L1{})
	if err != nil {
		tb.Fatal(err)
	}
	_, macsDense, _ = dense.Totals()
	_, macsPruned, _ = pruned.Totals()
	return dense, pruned, macsDense, macsPruned
}

// BenchmarkVGGSmall times one forward pass (batch 1, 1 thread) of vgg-small, dense and with
// 50 % of its channels removed:
//
//	go test ./eval/ -run '^$' -bench VGGSmall -benchtime 2s -count 5
func BenchmarkVGGSmall(b *testing.B) {
	dense, pruned, md, mp := vggPair(b)
	for _, c := range []struct {
		name string
		m    *nn.Model
		macs int64
	}{{"dense", dense, md}, {"pruned50", pruned, mp}} {
		b.Run(c.name, func(b *testing.B) {
			ex, err := nn.NewExecutor(c.m, 1, nn.Options{Threads: 1})
			if err != nil {
				b.Fatal(err)
			}
			x := make([]float32, c.m.Input.Size())
			rng := rand.New(rand.NewSource(1))
			for i := range x {
				x[i] = rng.Float32()
			}
			for b.Loop() {
				if _, err := ex.Forward(x); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(c.macs)/1e6, "MMACs/op")
		})
	}
}

// BenchmarkPruningSpeedup measures dense and 50 %-pruned vgg-small with the local meter
// (batch 1, 1 thread; median of 200 passes), alternating the two five times so that drift of
// the machine affects both, and reports the medians, the measured speed-up and the MACs
// ratio:
//
//	go test ./eval/ -run '^$' -bench PruningSpeedup -benchtime 1x
func BenchmarkPruningSpeedup(b *testing.B) {
	dense, pruned, md, mp := vggPair(b)
	ctx := context.Background()
	var dm, pm []time.Duration
	for b.Loop() {
		for round := 0; round < 5; round++ {
			ld, err := eval.MeasureLocal(ctx, dense, 1, 1, 20, 200, 10*time.Second)
			if err != nil {
				b.Fatal(err)
			}
			lp, err := eval.MeasureLocal(ctx, pruned, 1, 1, 20, 200, 10*time.Second)
			if err != nil {
				b.Fatal(err)
			}
			dm, pm = append(dm, ld.Median), append(pm, lp.Median)
		}
	}
	med := func(s []time.Duration) time.Duration {
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return s[len(s)/2]
	}
	d, p := med(dm), med(pm)
	b.ReportMetric(float64(d)/1e6, "dense-ms")
	b.ReportMetric(float64(p)/1e6, "pruned-ms")
	b.ReportMetric(float64(d)/float64(p), "speedup")
	b.ReportMetric(float64(md)/float64(mp), "MACs-ratio")
	b.Logf("dense %.1f M MACs, %s; pruned %.1f M MACs, %s; speed-up %.2fx for %.2fx fewer MACs",
		float64(md)/1e6, d, float64(mp)/1e6, p, float64(d)/float64(p), float64(md)/float64(mp))
}
