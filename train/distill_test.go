package train

import (
	"context"
	"math"
	"math/rand"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/autoprune/autoprune/data"
	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/nn/zoo"
)

// The distillation loss's gradient with respect to the logits matches central finite
// differences, for several temperatures and weights.
func TestDistillGradient(t *testing.T) {
	const n, k = 3, 5
	rng := rand.New(rand.NewSource(1))
	for _, tc := range []struct{ temp, alpha float64 }{{1, 0}, {4, 0.7}, {2, 1}, {8, 0.3}} {
		labels := []uint8{1, 4, 0}
		op := newXentOp(n, k, labels)
		op.distill, op.temp, op.alpha = true, tc.temp, tc.alpha
		z := make([]float32, n*k)
		for i := range z {
			z[i] = float32(rng.NormFloat64() * 2)
			op.teacher[i] = float32(rng.NormFloat64() * 3)
		}
		loss := func(z []float32) float64 {
			v := tensor.New(tensor.WithShape(n, k, 1, 1), tensor.WithBacking(append([]float32(nil), z...)))
			if _, err := op.Do(v); err != nil {
				t.Fatal(err)
			}
			return op.loss
		}
		loss(z)
		gop := &xentGradOp{opBase: newBase("xent.grad", ""), x: op}
		one := G.F32(1)
		gv, err := gop.Do(tensor.New(tensor.WithShape(n, k, 1, 1), tensor.WithBacking(z)), &one)
		if err != nil {
			t.Fatal(err)
		}
		grad := append([]float32(nil), gv.Data().([]float32)...)
		for i := range z {
			const h = 1e-2
			zp := append([]float32(nil), z...)
			zm := append([]float32(nil), z...)
			zp[i] += h
			zm[i] -= h
			fd := (loss(zp) - loss(zm)) / (2 * h)
			if d := math.Abs(fd - float64(grad[i])); d > 2e-3+1e-2*math.Abs(fd) {
				t.Errorf("T=%v alpha=%v: dL/dz[%d] = %v, finite difference %v", tc.temp, tc.alpha, i, grad[i], fd)
			}
		}
	}
}

// With weight 0 distillation is plain cross-entropy; with the teacher equal to the student
// and weight 1 the gradient vanishes.
func TestDistillLimits(t *testing.T) {
	m, err := zoo.Build("mlp", nn.Shape{C: 1, H: 28, W: 28}, 10, 3)
	if err != nil {
		t.Fatal(err)
	}
	x := make([]float32, 4*784)
	rng := rand.New(rand.NewSource(2))
	for i := range x {
		x[i] = rng.Float32()
	}
	labels := []uint8{1, 2, 3, 4}
	logits, err := Forward(m, x, 4)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := NewTrainer(m, 4, Config{LR: 1e-3})
	b, _ := NewTrainer(m, 4, Config{LR: 1e-3, DistillWeight: 1e-12})
	defer a.Close()
	defer b.Close()
	la, _ := a.Step(x, labels)
	lb, err := b.StepDistill(x, labels, logits)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(la-lb) > 1e-6 {
		t.Errorf("weight ~0: loss %v, plain %v", lb, la)
	}
	c, _ := NewTrainer(m, 4, Config{LR: 1e-2, DistillWeight: 1, Temperature: 3})
	defer c.Close()
	if _, err := c.StepDistill(x, labels, logits); err != nil {
		t.Fatal(err)
	}
	after := c.Model()
	for i, l := range m.Layers {
		for j, w := range l.Weight {
			if d := math.Abs(float64(w - after.Layers[i].Weight[j])); d > 1e-6 {
				t.Fatalf("teacher = student, weight 1: weight %s[%d] moved by %g", l.Name, j, d)
			}
		}
	}
	if _, err := c.StepDistill(x, labels, logits[:5]); err == nil {
		t.Error("short teacher logits: no error")
	}
}

func TestRecalibrateBN(t *testing.T) {
	m, err := zoo.Build("vgg-small", nn.Shape{C: 1, H: 28, W: 28}, 10, 1)
	if err != nil {
		t.Fatal(err)
	}
	ds := randomDataset(3, 2) // mean 2.5: far from the initial running mean 0
	r, err := RecalibrateBN(context.Background(), m, ds, 2, 32, 1)
	if err != nil {
		t.Fatal(err)
	}
	// The first batch norm follows conv1 on inputs of mean 2.5: its running mean must now
	// be the mean of conv1's outputs, not 0; weights are untouched; the input is unchanged.
	bn := r.Layer("conv1.bn")
	if bn.Mean[0] == 0 || m.Layer("conv1.bn").Mean[0] != 0 {
		t.Errorf("running mean %v (input model %v)", bn.Mean[0], m.Layer("conv1.bn").Mean[0])
	}
	conv := m.Layer("conv1")
	var want float64
	for _, w := range conv.Weight[:9] {
		want += 2.5 * float64(w)
	}
	if math.Abs(float64(bn.Mean[0])-want) > 0.15*math.Abs(want)+0.05 {
		t.Errorf("conv1.bn running mean[0] = %v, expected about %v", bn.Mean[0], want)
	}
	for i, w := range conv.Weight {
		if r.Layer("conv1").Weight[i] != w {
			t.Fatal("recalibration changed weights")
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := RecalibrateBN(ctx, m, ds, 2, 32, 1); err == nil {
		t.Error("cancelled: no error")
	}
}

// hook masks every other weight of fc1 at step 3, then changes nothing.
type hook struct{ calls int }

func (h *hook) At(step int) bool { return step == 3 }

func (h *hook) Apply(step int, m *nn.Model) (*nn.Model, error) {
	h.calls++
	p := m.Clone()
	l := p.Layer("fc1")
	l.Mask = make([]float32, len(l.Weight))
	for i := range l.Mask {
		if i%2 == 0 {
			l.Mask[i] = 1
		} else {
			l.Weight[i] = 0
		}
	}
	return p, nil
}

func TestTrainPruneHook(t *testing.T) {
	m, err := zoo.Build("mlp", nn.Shape{C: 1, H: 28, W: 28}, 10, 3)
	if err != nil {
		t.Fatal(err)
	}
	ds := randomDataset(4, 0)
	h := &hook{}
	out, res, err := Train(context.Background(), m, ds, Config{Steps: 8, BatchSize: 16, Prune: h})
	if err != nil {
		t.Fatal(err)
	}
	if h.calls != 1 || res.Steps != 8 {
		t.Fatalf("hook called %d times, %d steps", h.calls, res.Steps)
	}
	l := out.Layer("fc1")
	if l.Mask == nil {
		t.Fatal("mask lost after the hook")
	}
	moved := false
	for i, w := range l.Weight {
		if i%2 == 1 && w != 0 {
			t.Fatalf("masked weight %d is %v after training", i, w)
		}
		moved = moved || (i%2 == 0 && w != m.Layer("fc1").Weight[i])
	}
	if !moved {
		t.Error("kept weights did not train after the hook")
	}
}

// randomDataset returns 64 random 28x28 images with pixels in [offset, offset+1) and labels
// cycling through the 10 classes.
func randomDataset(seed int64, offset float32) *data.Dataset {
	ds := &data.Dataset{Name: "rand", N: 64, C: 1, H: 28, W: 28, Classes: 10,
		Images: make([]float32, 64*784), Labels: make([]uint8, 64)}
	rng := rand.New(rand.NewSource(seed))
	for i := range ds.Images {
		ds.Images[i] = offset + rng.Float32()
	}
	for i := range ds.Labels {
		ds.Labels[i] = uint8(i % 10)
	}
	return ds
}

// Distillation defaults to temperature 1: higher temperatures made pruned students of
// short fine-tunes less accurate than labels alone (Config.Temperature).
func TestDistillDefaults(t *testing.T) {
	c, err := Config{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.Temperature != 1 || c.DistillWeight != 0.7 {
		t.Errorf("default temperature %v, weight %v; want 1 and 0.7", c.Temperature, c.DistillWeight)
	}
	if c, _ := (Config{Temperature: 3, DistillWeight: 0.2}).withDefaults(); c.Temperature != 3 || c.DistillWeight != 0.2 {
		t.Errorf("explicit temperature and weight replaced: %v, %v", c.Temperature, c.DistillWeight)
	}
}
