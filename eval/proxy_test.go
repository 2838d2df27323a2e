package eval_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/autoprune/autoprune/eval"
	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/nn/zoo"
)

func TestMACsMeter(t *testing.T) {
	small := lenet(t)
	big, err := zoo.Build("vgg-small", nn.Shape{C: 1, H: 28, W: 28}, 10, 1)
	if err != nil {
		t.Fatal(err)
	}
	mm := eval.MACsMeter{NsPerMAC: 0.5}
	ls, err := mm.Measure(context.Background(), small)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := mm.Measure(context.Background(), big)
	if err != nil {
		t.Fatal(err)
	}
	_, ms, _ := small.Totals()
	_, mb, _ := big.Totals()
	if ls.Median != time.Duration(float64(ms)*0.5) || lb.Median != time.Duration(float64(mb)*0.5) {
		t.Errorf("medians %s and %s, want MACs x 0.5 ns (%d and %d MACs)", ls.Median, lb.Median, ms, mb)
	}
	if !ls.Proxy || ls.N != 0 || !strings.Contains(ls.String(), "proxy") {
		t.Errorf("latency %+v (%s) is not marked as a proxy", ls, ls)
	}
	l8, _ := eval.MACsMeter{NsPerMAC: 0.5, Batch: 8}.Measure(context.Background(), small)
	if l8.Median != 8*ls.Median || l8.Batch != 8 {
		t.Errorf("batch 8: %s, want 8 x %s", l8.Median, ls.Median)
	}
}

func TestCalibrateMACs(t *testing.T) {
	m := lenet(t)
	_, macs, _ := m.Totals()
	mm, err := eval.CalibrateMACs(context.Background(), macsMeter, m)
	if err != nil {
		t.Fatal(err)
	}
	want := float64(time.Microsecond+time.Duration(macs)) / float64(macs)
	if d := mm.NsPerMAC - want; d > 1e-9 || d < -1e-9 {
		t.Errorf("%v ns/MAC, want %v", mm.NsPerMAC, want)
	}
	l, _ := mm.Measure(context.Background(), m)
	if got, _ := macsMeter.Measure(context.Background(), m); l.Median-got.Median > 1 || got.Median-l.Median > 1 {
		t.Errorf("calibrated estimate %s of the reference, measured %s", l.Median, got.Median)
	}
	relu := &nn.Model{Name: "relu", Input: nn.Shape{C: 1, H: 2, W: 2}, Layers: []*nn.Layer{{Name: "r", Kind: nn.ReLU, Inputs: []string{nn.InputName}}}}
	if _, err := eval.CalibrateMACs(context.Background(), macsMeter, relu); err == nil {
		t.Error("calibrated on a model without multiply-adds")
	}
}
