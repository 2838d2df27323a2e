package train

import (
	"context"
	"errors"
	"math"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/autoprune/autoprune/data"
	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/nn/zoo"
)

var (
	mnistOnce         sync.Once
	mnistTrain, mnist *data.Dataset
	mnistErr          error
)

// loadMNIST returns the MNIST training and test sets, loaded once per test binary.
func loadMNIST(t testing.TB) (train, test *data.Dataset) {
	t.Helper()
	mnistOnce.Do(func() { mnistTrain, mnist, mnistErr = data.LoadMNIST() })
	if mnistErr != nil {
		t.Fatal(mnistErr)
	}
	return mnistTrain, mnist
}

func build28(t testing.TB, name string, seed int64) *nn.Model {
	t.Helper()
	m, err := zoo.Build(name, nn.Shape{C: 1, H: 28, W: 28}, 10, seed)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// paramBits returns every parameter value of m (running statistics and masks included) as
// bits, in a fixed order.
func paramBits(m *nn.Model) []uint32 {
	var out []uint32
	for _, l := range m.Layers {
		for _, s := range [][]float32{l.Weight, l.Bias, l.Mask, l.Gamma, l.Beta, l.Mean, l.Var} {
			for _, v := range s {
				out = append(out, math.Float32bits(v))
			}
		}
	}
	return out
}

func equalBits(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestTrainDeterministic(t *testing.T) {
	train, _ := loadMNIST(t)
	ds := train.Head(200)
	for _, name := range []string{"lenet5", "mobilenet-small"} {
		t.Run(name, func(t *testing.T) {
			m := build28(t, name, 1)
			before := paramBits(m)
			cfg := Config{Steps: 4, BatchSize: 16, Seed: 3, Schedule: "cosine", WeightDecay: 1e-4}
			a, _, err := Train(context.Background(), m, ds, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if !equalBits(before, paramBits(m)) {
				t.Fatal("Train modified its input model")
			}
			if equalBits(before, paramBits(a)) {
				t.Fatal("training did not change the weights")
			}
			// Same seed, one thread: same bits.
			prev := runtime.GOMAXPROCS(1)
			b, _, err := Train(context.Background(), m, ds, cfg)
			runtime.GOMAXPROCS(prev)
			if err != nil {
				t.Fatal(err)
			}
			if !equalBits(paramBits(a), paramBits(b)) {
				t.Error("same seed gave different weights")
			}
			cfg.Seed = 4
			c, _, err := Train(context.Background(), m, ds, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if equalBits(paramBits(a), paramBits(c)) {
				t.Error("different seeds gave the same weights")
			}
			if err := a.Validate(); err != nil {
				t.Errorf("trained model: %v", err)
			}
		})
	}
}

func TestMaskedWeightsStayZero(t *testing.T) {
	train, _ := loadMNIST(t)
	ds := train.Head(256)
	for _, opt := range []string{"adam", "sgd"} {
		t.Run(opt, func(t *testing.T) {
			m := build28(t, "lenet5", 2)
			addMasks(m, 9, "conv2", "fc1", "fc3")
			cfg := Config{Steps: 6, BatchSize: 32, Optimizer: opt, WeightDecay: 1e-3, Seed: 1}
			out, _, err := Train(context.Background(), m, ds, cfg)
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{"conv2", "fc1", "fc3"} {
				l, before := out.Layer(name), m.Layer(name)
				for i := range before.Mask {
					if l.Mask[i] != before.Mask[i] {
						t.Fatalf("%s: mask[%d] changed", name, i)
					}
				}
				kept, changed := 0, 0
				for i, mk := range l.Mask {
					if mk == 0 {
						if math.Float32bits(l.Weight[i]) != 0 {
							t.Fatalf("%s: masked weight %d is %v", name, i, l.Weight[i])
						}
						continue
					}
					kept++
					if l.Weight[i] != before.Weight[i] {
						changed++
					}
				}
				if changed < kept*9/10 {
					t.Errorf("%s: only %d of %d unmasked weights changed", name, changed, kept)
				}
			}
		})
	}
}

func TestTrainerStepKeepsMasks(t *testing.T) {
	m := gradModels()["mlp"]
	randomize(m, 3)
	addMasks(m, 4, "fc1")
	tr, err := NewTrainer(m, 8, Config{LR: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	for i := 0; i < 3; i++ {
		x, labels := randomInput(m, 8, 3, int64(i))
		if _, err := tr.Step(x, labels); err != nil {
			t.Fatal(err)
		}
	}
	if tr.Steps() != 3 {
		t.Errorf("Steps() = %d, want 3", tr.Steps())
	}
	out := tr.Model()
	for i, mk := range out.Layer("fc1").Mask {
		if w := out.Layer("fc1").Weight[i]; mk == 0 && math.Float32bits(w) != 0 {
			t.Fatalf("masked weight %d is %v", i, w)
		}
	}
	if _, err := tr.Step(make([]float32, 3), make([]uint8, 8)); err == nil {
		t.Error("Step accepted a batch of the wrong size")
	}
	x, labels := randomInput(m, 8, 3, 9)
	labels[2] = 3
	if _, err := tr.Step(x, labels); err == nil || !strings.Contains(err.Error(), "label") {
		t.Errorf("Step with label 3 for 3 classes: %v", err)
	}
}

func TestBatchNormRunningStats(t *testing.T) {
	m := seq("bn", nn.Shape{C: 2, H: 3, W: 3}, layer("bn", nn.BatchNorm), layer("fl", nn.Flatten))
	randomize(m, 1)
	l := m.Layer("bn")
	mean0, var0 := append([]float32(nil), l.Mean...), append([]float32(nil), l.Var...)
	const n = 4
	x, labels := randomInput(m, n, 18, 5)
	tr, err := NewTrainer(m, n, Config{BNMomentum: 0.25})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if _, err := tr.Step(x, labels); err != nil {
		t.Fatal(err)
	}
	got := tr.Model().Layer("bn")
	hw := 9
	for c := 0; c < 2; c++ {
		var s, ss float64
		for b := 0; b < n; b++ {
			for i := 0; i < hw; i++ {
				s += float64(x[(b*2+c)*hw+i])
			}
		}
		mean := s / float64(n*hw)
		for b := 0; b < n; b++ {
			for i := 0; i < hw; i++ {
				d := float64(x[(b*2+c)*hw+i]) - mean
				ss += d * d
			}
		}
		unbiased := ss / float64(n*hw-1)
		wantMean := 0.75*float64(mean0[c]) + 0.25*mean
		wantVar := 0.75*float64(var0[c]) + 0.25*unbiased
		if math.Abs(float64(got.Mean[c])-wantMean) > 1e-6 || math.Abs(float64(got.Var[c])-wantVar) > 1e-6 {
			t.Errorf("channel %d: running mean, var %v, %v; want %v, %v", c, got.Mean[c], got.Var[c], wantMean, wantVar)
		}
	}
	if l.Mean[0] != mean0[0] || l.Var[0] != var0[0] {
		t.Error("NewTrainer's model was modified")
	}
}

func TestTrainCancel(t *testing.T) {
	train, _ := loadMNIST(t)
	ds := train.Head(2000)
	m := build28(t, "lenet5", 1)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls := 0
	cfg := Config{Epochs: 100, BatchSize: 16, LogEvery: 2, Progress: func(p Progress) {
		calls++
		if p.Step >= 4 {
			cancel()
		}
	}}
	start := time.Now()
	out, _, err := Train(ctx, m, ds, cfg)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want one wrapping context.Canceled", err)
	}
	if out != nil {
		t.Error("a cancelled Train returned a model")
	}
	if calls != 2 {
		t.Errorf("%d progress reports before cancelling, want 2", calls)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Train took %v to stop", d)
	}

	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if _, _, err := Train(ctx, m, ds, Config{}); !errors.Is(err, context.Canceled) {
		t.Errorf("pre-cancelled context: %v", err)
	}
}

func TestTrainNaNLoss(t *testing.T) {
	train, _ := loadMNIST(t)
	ds := train.Head(512)
	m := build28(t, "mlp", 1)
	_, _, err := Train(context.Background(), m, ds, Config{Steps: 30, BatchSize: 16, Optimizer: "sgd", LR: 1e30})
	if err == nil || !strings.Contains(err.Error(), "step") {
		t.Fatalf("diverging training: error %v, want one naming the step", err)
	}
}

func TestTrainProgressAndResult(t *testing.T) {
	train, _ := loadMNIST(t)
	ds := train.Head(100)
	m := build28(t, "mlp", 1)
	var got []Progress
	cfg := Config{Epochs: 2, BatchSize: 16, LogEvery: 4, Progress: func(p Progress) { got = append(got, p) }}
	_, res, err := Train(context.Background(), m, ds, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// 100 samples: 6 full batches per epoch; reports at steps 4, 6 (epoch end), 8, 12 (end).
	steps := []int{4, 6, 8, 12}
	if len(got) != len(steps) {
		t.Fatalf("%d reports %+v, want steps %v", len(got), got, steps)
	}
	for i, p := range got {
		if p.Step != steps[i] || p.Steps != 12 || p.Epochs != 2 || p.Epoch != 1+i/2 ||
			!(p.Loss > 0) || !(p.ImagesPerSec > 0) || p.Elapsed <= 0 {
			t.Errorf("report %d: %+v", i, p)
		}
	}
	if res.Steps != 12 || !(res.FinalLoss > 0) || !(res.ImagesPerSec > 0) || res.Elapsed <= 0 {
		t.Errorf("result %+v", res)
	}

	if _, _, err := Train(context.Background(), m, ds, Config{BatchSize: 101}); err == nil {
		t.Error("Train accepted a batch larger than the dataset")
	}
	if _, _, err := Train(context.Background(), build28(t, "mlp", 1), ds, Config{Optimizer: "lion"}); err == nil {
		t.Error("Train accepted an unknown optimizer")
	}
	small := &data.Dataset{Name: "x", Images: make([]float32, 64*4), Labels: make([]uint8, 64), N: 64, C: 1, H: 2, W: 2, Classes: 10}
	if _, _, err := Train(context.Background(), m, small, Config{}); err == nil {
		t.Error("Train accepted a dataset of the wrong shape")
	}
}

func TestLRSchedule(t *testing.T) {
	c := Config{Schedule: "cosine", LR: 0.1}
	for _, tc := range []struct {
		step int
		want float64
	}{{0, 0.1}, {50, 0.05}, {100, 0}} {
		if got := c.LRAt(tc.step, 100); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("cosine LRAt(%d, 100) = %v, want %v", tc.step, got, tc.want)
		}
	}
	if got := (Config{}).LRAt(10, 100); got != 1e-3 {
		t.Errorf("default adam LR %v", got)
	}
	if got := (Config{Optimizer: "sgd"}).LRAt(10, 100); got != 0.05 {
		t.Errorf("default sgd LR %v", got)
	}

	m := gradModels()["mlp"]
	randomize(m, 1)
	tr, err := NewTrainer(m, 2, Config{LR: 0.1, Schedule: "cosine", Steps: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	x, labels := randomInput(m, 2, 3, 1)
	for i, want := range []float64{0.1, 0.1 * (1 + math.Sqrt(0.5)) / 2, 0.05} {
		if got := tr.LR(); math.Abs(got-want) > 1e-12 {
			t.Errorf("trainer LR before step %d: %v, want %v", i, got, want)
		}
		if _, err := tr.Step(x, labels); err != nil {
			t.Fatal(err)
		}
	}
	tr.SetLR(0.3)
	if _, err := tr.Step(x, labels); err != nil || tr.LR() != 0.3 {
		t.Errorf("after SetLR(0.3): LR %v, error %v", tr.LR(), err)
	}
}

// TestSmokeMNIST trains LeNet-5 for 300 steps and checks its test accuracy with the pure-Go
// executor.
func TestSmokeMNIST(t *testing.T) {
	if testing.Short() {
		t.Skip("trains for a few seconds")
	}
	train, test := loadMNIST(t)
	m := build28(t, "lenet5", 1)
	out, res, err := Train(context.Background(), m, train, Config{Steps: 300, BatchSize: 64, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	acc := accuracy(t, out, test)
	t.Logf("lenet5, 300 steps: test accuracy %.2f %%, %.0f images/s, loss %.3f", 100*acc, res.ImagesPerSec, res.FinalLoss)
	if acc <= 0.90 {
		t.Errorf("test accuracy %.4f, want > 0.90", acc)
	}
}

// accuracy evaluates m on every sample of ds with the pure-Go executor.
func accuracy(t testing.TB, m *nn.Model, ds *data.Dataset) float64 {
	t.Helper()
	per := ds.C * ds.H * ds.W
	correct := 0
	execs := map[int]*nn.Executor{}
	for start := 0; start < ds.N; start += 500 {
		n := min(500, ds.N-start)
		ex := execs[n]
		if ex == nil {
			var err error
			if ex, err = nn.NewExecutor(m, n, nn.Options{Threads: runtime.GOMAXPROCS(0)}); err != nil {
				t.Fatal(err)
			}
			execs[n] = ex
		}
		logits, err := ex.Forward(ds.Images[start*per : (start+n)*per])
		if err != nil {
			t.Fatal(err)
		}
		k := len(logits) / n
		for i := 0; i < n; i++ {
			row := logits[i*k : (i+1)*k]
			best := 0
			for j, v := range row {
				if v > row[best] {
					best = j
				}
			}
			if best == int(ds.Labels[start+i]) {
				correct++
			}
		}
	}
	return float64(correct) / float64(ds.N)
}

// TestTrainerMatchesGradients checks that a step applies Adam to the gradients Gradients
// reports and that the next step sees the updated weights.
func TestTrainerMatchesGradients(t *testing.T) {
	m := gradModels()["convnet"]
	randomize(m, 8)
	addMasks(m, 9, "c1")
	const n, lr = 4, 1e-3
	x, labels := randomInput(m, n, 5, 10)
	loss0, g0, err := Gradients(m, x, labels, n)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := NewTrainer(m, n, Config{LR: lr})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	loss, err := tr.Step(x, labels)
	if err != nil {
		t.Fatal(err)
	}
	if loss != loss0 {
		t.Errorf("Step loss %v, Gradients loss %v", loss, loss0)
	}
	m1 := tr.Model()
	// Adam's first step moves every weight by lr·g/(|g|+1e-8): almost lr·sign(g).
	for key, g := range g0 {
		dot := strings.LastIndex(key, ".")
		name, field := key[:dot], key[dot+1:]
		l0, l1 := m.Layer(name), m1.Layer(name)
		var w0, w1 []float32
		switch field {
		case "weight":
			w0, w1 = l0.Weight, l1.Weight
		case "bias":
			w0, w1 = l0.Bias, l1.Bias
		case "gamma":
			w0, w1 = l0.Gamma, l1.Gamma
		case "beta":
			w0, w1 = l0.Beta, l1.Beta
		default:
			t.Fatalf("unexpected gradient %s", key)
		}
		for i, gi := range g {
			want := float64(w0[i]) - lr*float64(gi)/(math.Abs(float64(gi))+1e-8)
			if math.Abs(float64(w1[i])-want) > 1e-6 {
				t.Fatalf("%s[%d]: %v -> %v with gradient %v, want %v", key, i, w0[i], w1[i], gi, want)
			}
		}
	}
	loss1, _, err := Gradients(m1, x, labels, n)
	if err != nil {
		t.Fatal(err)
	}
	loss2, err := tr.Step(x, labels)
	if err != nil {
		t.Fatal(err)
	}
	if loss2 != loss1 || !(loss2 < loss0) {
		t.Errorf("second step loss %v, Gradients on the updated model %v, first loss %v", loss2, loss1, loss0)
	}
}
