package eval_test

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/autoprune/autoprune/eval"
	"github.com/autoprune/autoprune/nn"
)

// macsMeter is a fake device: a model takes 1 µs plus 1 ns per multiply-add.
var macsMeter = eval.MeterFunc(func(ctx context.Context, m *nn.Model) (eval.Latency, error) {
	_, macs, err := m.Totals()
	if err != nil {
		return eval.Latency{}, err
	}
	d := time.Microsecond + time.Duration(macs)
	return eval.Latency{Median: d, P90: d + 10, Mean: d, Min: d, N: 5, Batch: 1, Threads: 1}, nil
})

func TestLUTProfilePredictAndRoundTrip(t *testing.T) {
	m := lenet(t)
	dev := eval.Device{OS: "android", Arch: "arm64", CPU: "test", Cores: 4}
	table := eval.NewLUT(dev, 1, 1)
	var calls int
	err := table.Profile(context.Background(), macsMeter, []*nn.Model{m, m.Clone()}, func(p eval.ProfileProgress) {
		calls++
		if p.Total != len(m.Layers) || p.Done != calls {
			t.Errorf("progress %d/%d at call %d", p.Done, p.Total, calls)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(table.Entries) != len(m.Layers) || calls != len(m.Layers) {
		t.Fatalf("%d entries and %d progress calls, want one per layer (%d)", len(table.Entries), calls, len(m.Layers))
	}

	// The prediction is the sum of the layers' entries.
	sigs, err := table.Signatures(m)
	if err != nil {
		t.Fatal(err)
	}
	var sum time.Duration
	for _, s := range sigs {
		sum += table.Entries[s].Median
	}
	p, err := eval.LUTMeter{Table: table}.Measure(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	if p.Median != sum || p.N != 0 || !p.Proxy || p.Device != dev {
		t.Errorf("prediction %+v: want median %s (the sum), N 0, Proxy, device %v", p, sum, dev)
	}
	if !strings.Contains(p.String(), "proxy") {
		t.Errorf("%q does not say it is not a measurement", p.String())
	}

	// Calibrating against the fake device: each single-layer entry paid 1 µs, the whole
	// model pays it once, so the scale brings the sum down to the measured latency.
	if err := table.Calibrate(context.Background(), macsMeter, []*nn.Model{m}); err != nil {
		t.Fatal(err)
	}
	got, _ := macsMeter.Measure(context.Background(), m)
	if want := float64(got.Median) / float64(sum); math.Abs(table.Scale-want) > 1e-12 {
		t.Errorf("scale %v, want %v", table.Scale, want)
	}
	if p, _ := table.Predict(m); p.Median < got.Median-2 || p.Median > got.Median+2 {
		t.Errorf("calibrated prediction %s, measured %s", p.Median, got.Median)
	}

	// Save and load give the same table.
	path := filepath.Join(t.TempDir(), "lut.json")
	if err := table.Save(path); err != nil {
		t.Fatal(err)
	}
	back, err := eval.LoadLUT(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, table) {
		t.Errorf("round trip changed the table:\n%+v\n%+v", back, table)
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("Save left %d files, want 1", len(ents))
	}
}

func TestLUTMergeAndFit(t *testing.T) {
	a := eval.NewLUT(eval.Device{}, 1, 1)
	b := eval.NewLUT(eval.Device{}, 1, 1)
	a.Entries["x"] = eval.LUTEntry{Median: 5, N: 1}
	a.Entries["y"] = eval.LUTEntry{Median: 5, N: 1}
	b.Entries["y"] = eval.LUTEntry{Median: 3, N: 2}
	b.Entries["z"] = eval.LUTEntry{Median: 7, N: 2}
	a.Merge(b)
	want := map[string]eval.LUTEntry{"x": {Median: 5, N: 1}, "y": {Median: 3, N: 2}, "z": {Median: 7, N: 2}}
	if !reflect.DeepEqual(a.Entries, want) {
		t.Errorf("merged %v, want the faster entry of each: %v", a.Entries, want)
	}

	m := lenet(t)
	table := eval.NewLUT(eval.Device{}, 1, 1)
	if err := table.Profile(context.Background(), macsMeter, []*nn.Model{m}, nil); err != nil {
		t.Fatal(err)
	}
	base, _ := table.Predict(m)
	// Three models measured 1.2, 1.5 and 3 times their sums: the median ratio wins.
	ms := []*nn.Model{m, m, m}
	lats := []eval.Latency{{Median: base.Median * 12 / 10}, {Median: base.Median * 3}, {Median: base.Median * 15 / 10}}
	if err := table.Fit(ms, lats); err != nil {
		t.Fatal(err)
	}
	if math.Abs(table.Scale-1.5) > 1e-9 {
		t.Errorf("scale %v, want the median ratio 1.5", table.Scale)
	}
	if p, _ := table.Predict(m); p.Median != base.Median*15/10 {
		t.Errorf("scaled prediction %s, want %s", p.Median, base.Median*15/10)
	}
	if err := table.Fit(ms, lats[:1]); err == nil {
		t.Error("fit with fewer measurements than models")
	}
}

func TestLUTMissingLayer(t *testing.T) {
	m := lenet(t)
	table := eval.NewLUT(eval.ThisDevice(), 1, 1)
	if err := table.Profile(context.Background(), macsMeter, []*nn.Model{m}, nil); err != nil {
		t.Fatal(err)
	}
	// Prune conv2 to 8 filters: conv2, relu2, pool2, flatten and fc1 change shape.
	p := m.Clone()
	p.Layers[p.Index("conv2")].Out = 8
	p.Layers[p.Index("fc1")].In = 8 * 5 * 5
	_, err := eval.LUTMeter{Table: table}.Measure(context.Background(), p)
	if !errors.Is(err, eval.ErrNotInLUT) || !strings.Contains(err.Error(), `layer "conv2"`) ||
		!strings.Contains(err.Error(), "conv2d in=6x14x14 out=8 k=5") {
		t.Fatalf("error %v: want one naming layer conv2 and its signature", err)
	}
	if _, err := (eval.LUTMeter{}).Measure(context.Background(), m); err == nil {
		t.Error("a meter without a table measured something")
	}
}

func TestLayerSignature(t *testing.T) {
	in := nn.Shape{C: 3, H: 8, W: 8}
	conv := &nn.Layer{Name: "a", Kind: nn.Conv2D, In: 3, Out: 4, Kernel: 3, Pad: 1}
	conv2 := &nn.Layer{Name: "b", Kind: nn.Conv2D, In: 3, Out: 4, Kernel: 3, Pad: 1, Stride: 1, Groups: 1}
	if a, b := eval.LayerSignature(conv, in, 1, 1), eval.LayerSignature(conv2, in, 1, 1); a != b {
		t.Errorf("names and explicit defaults change the signature: %q vs %q", a, b)
	}
	base := eval.LayerSignature(conv, in, 1, 1)
	for _, other := range []string{
		eval.LayerSignature(conv, in, 2, 1),
		eval.LayerSignature(conv, in, 1, 2),
		eval.LayerSignature(conv, nn.Shape{C: 3, H: 9, W: 8}, 1, 1),
		eval.LayerSignature(&nn.Layer{Kind: nn.Conv2D, In: 3, Out: 5, Kernel: 3, Pad: 1}, in, 1, 1),
		eval.LayerSignature(&nn.Layer{Kind: nn.Conv2D, In: 3, Out: 4, Kernel: 3, Pad: 1, HasBias: true}, in, 1, 1),
	} {
		if other == base {
			t.Errorf("signature %q does not distinguish a change", base)
		}
	}
	add := &nn.Layer{Name: "s", Kind: nn.Add, Inputs: []string{"x", "y", "z"}}
	one, err := eval.SingleLayer(add, in)
	if err != nil {
		t.Fatal(err)
	}
	if err := one.Validate(); err != nil || len(one.Layers[0].Inputs) != 3 {
		t.Errorf("single-layer add: %v, %d inputs", err, len(one.Layers[0].Inputs))
	}
}

func TestLoadLUTStrict(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"unknown field": `{"version":1,"batch":1,"threads":1,"entries":{},"colour":1}`,
		"version":       `{"version":2,"batch":1,"threads":1,"entries":{}}`,
		"batch":         `{"version":1,"batch":0,"threads":1,"entries":{}}`,
		"zero entry":    `{"version":1,"batch":1,"threads":1,"entries":{"relu in=1x1x1 batch=1 threads=1":{"median_ns":0,"p90_ns":0,"n":1}}}`,
		"trailing":      `{"version":1,"batch":1,"threads":1,"entries":{}} x`,
	} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".json")
		os.WriteFile(path, []byte(body), 0o644)
		if _, err := eval.LoadLUT(path); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: error %v, want one naming the file", name, err)
		}
	}
	if _, err := eval.LoadLUT(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("loaded a missing file")
	}
}
