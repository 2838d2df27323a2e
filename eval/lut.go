package eval

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/autoprune/autoprune/nn"
)

// LUTVersion is the version of the lookup-table file written by Save and read by LoadLUT.
const LUTVersion = 1

// LUT is a latency lookup table: the measured latency of single layers on one device,
// keyed by LayerSignature. A model's latency is predicted as the sum of its layers' entries
// times Scale, a factor fitted when the table was profiled: layers run inside a whole model
// find less of their weights and inputs in cache than layers timed alone, over and over.
type LUT struct {
	Version int                 `json:"version"`
	Device  Device              `json:"device"`           // where the entries were measured
	Batch   int                 `json:"batch"`            // samples per pass of every entry
	Threads int                 `json:"threads"`          // engine threads of every entry
	Model   string              `json:"model,omitempty"`  // the model profiled, for people
	Ratios  []float64           `json:"ratios,omitempty"` // the pruning ratios profiled
	Scale   float64             `json:"scale"`            // whole model / sum of layers; 1 when unset
	Entries map[string]LUTEntry `json:"entries"`          // by LayerSignature
}

// LUTEntry is the measured latency of one single-layer model.
type LUTEntry struct {
	Median time.Duration `json:"median_ns"`
	P90    time.Duration `json:"p90_ns"`
	Min    time.Duration `json:"min_ns"`
	N      int           `json:"n"` // timed runs
}

// NewLUT returns an empty table for a device, batch size and thread count.
func NewLUT(dev Device, batch, threads int) *LUT {
	return &LUT{Version: LUTVersion, Device: dev, Batch: max(batch, 1), Threads: max(threads, 1),
		Scale: 1, Entries: map[string]LUTEntry{}}
}

// LayerSignature is the key of a layer in a LUT: everything its latency depends on (kind,
// input shape and count, hyper-parameters, output channels, batch size and threads) and
// nothing it does not (names, weights).
func LayerSignature(l *nn.Layer, in nn.Shape, batch, threads int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s in=%v", l.Kind, in)
	switch l.Kind {
	case nn.Conv2D:
		fmt.Fprintf(&b, " out=%d k=%d s=%d p=%d g=%d bias=%t", l.Out, l.Kernel, l.StrideOrOne(), l.Pad, l.GroupsOrOne(), l.HasBias)
	case nn.Linear:
		fmt.Fprintf(&b, " out=%d bias=%t", l.Out, l.HasBias)
	case nn.MaxPool, nn.AvgPool:
		fmt.Fprintf(&b, " k=%d s=%d p=%d", l.Kernel, l.StrideOrOne(), l.Pad)
	case nn.Add, nn.Concat:
		fmt.Fprintf(&b, " n=%d", len(l.Inputs))
	}
	fmt.Fprintf(&b, " batch=%d threads=%d", max(batch, 1), max(threads, 1))
	return b.String()
}

// LayerInputs returns the shape of each layer's first input, in layer order.
func LayerInputs(m *nn.Model) ([]nn.Shape, error) {
	shapes, err := m.Shapes()
	if err != nil {
		return nil, err
	}
	known := map[string]nn.Shape{nn.InputName: m.Input}
	ins := make([]nn.Shape, len(m.Layers))
	for i, l := range m.Layers {
		ins[i] = known[l.Inputs[0]]
		known[l.Name] = shapes[i]
	}
	return ins, nil
}

// SingleLayer returns a model made of a copy of l alone, with random weights, reading the
// model input of shape in for each of its inputs. Its latency is the LUT entry of l.
func SingleLayer(l *nn.Layer, in nn.Shape) (*nn.Model, error) {
	c := &nn.Layer{Name: "layer", Kind: l.Kind, In: l.In, Out: l.Out, Kernel: l.Kernel,
		Stride: l.Stride, Pad: l.Pad, Groups: l.Groups, HasBias: l.HasBias, Eps: l.Eps, Slope: l.Slope, Offset: l.Offset}
	for range l.Inputs {
		c.Inputs = append(c.Inputs, nn.InputName)
	}
	m := &nn.Model{Name: string(l.Kind), Input: in, Layers: []*nn.Layer{c}}
	if err := m.Init(1); err != nil {
		return nil, fmt.Errorf("single-layer model of %q: %w", l.Name, err)
	}
	return m, nil
}

// Signatures returns the LUT key of every layer of m for the table's batch and threads.
func (t *LUT) Signatures(m *nn.Model) ([]string, error) {
	ins, err := LayerInputs(m)
	if err != nil {
		return nil, err
	}
	sigs := make([]string, len(m.Layers))
	for i, l := range m.Layers {
		sigs[i] = LayerSignature(l, ins[i], t.Batch, t.Threads)
	}
	return sigs, nil
}

// ErrNotInLUT is wrapped by the error of Predict for a layer the table has no entry for.
var ErrNotInLUT = errors.New("layer not in the latency lookup table")

// Predict returns the predicted latency of m: the sum of its layers' entries times Scale
// (median, p90 and min each from the entries' own). The result has N = 0 and Proxy set: it
// is a prediction, not a measurement. A layer missing from the table is an error naming the
// layer and its signature.
func (t *LUT) Predict(m *nn.Model) (Latency, error) {
	sum, err := t.sum(m)
	if err != nil {
		return Latency{}, err
	}
	scale := t.Scale
	if scale <= 0 {
		scale = 1
	}
	f := func(d time.Duration) time.Duration { return time.Duration(math.Round(float64(d) * scale)) }
	return Latency{Median: f(sum.Median), P90: f(sum.P90), Mean: f(sum.Median), Min: f(sum.Min), N: 0,
		Batch: t.Batch, Threads: t.Threads, Device: t.Device, Proxy: true}, nil
}

// sum adds up the entries of m's layers.
func (t *LUT) sum(m *nn.Model) (LUTEntry, error) {
	sigs, err := t.Signatures(m)
	if err != nil {
		return LUTEntry{}, fmt.Errorf("lookup table: %w", err)
	}
	var sum LUTEntry
	for i, s := range sigs {
		e, ok := t.Entries[s]
		if !ok {
			return LUTEntry{}, fmt.Errorf("%w: layer %q of model %q has signature %q; profile the device again with the widths this search uses (\"autoprune profile\")",
				ErrNotInLUT, m.Layers[i].Name, m.Name, s)
		}
		sum.Median += e.Median
		sum.P90 += e.P90
		sum.Min += e.Min
	}
	return sum, nil
}

// Set records the measured latency of a layer signature.
func (t *LUT) Set(sig string, l Latency) {
	if t.Entries == nil {
		t.Entries = map[string]LUTEntry{}
	}
	t.Entries[sig] = LUTEntry{Median: l.Median, P90: l.P90, Min: l.Min, N: l.N}
}

// LoadLUT reads a lookup table written by Save, strictly: unknown fields, another version,
// a bad batch or thread count and non-positive entries are errors naming the file.
func LoadLUT(path string) (*LUT, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("lookup table: %w", err)
	}
	t, err := decodeLUT(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("lookup table %s: %w", path, lutFormatError{err})
	}
	return t, nil
}

// ErrLUTFormat is wrapped by LoadLUT's error when the file is not a valid table.
var ErrLUTFormat = errors.New("not a valid lookup table")

// lutFormatError is a decoding error that also matches ErrLUTFormat, with the decoder's
// message alone.
type lutFormatError struct{ err error }

func (e lutFormatError) Error() string   { return e.err.Error() }
func (e lutFormatError) Unwrap() []error { return []error{ErrLUTFormat, e.err} }

func decodeLUT(r io.Reader) (*LUT, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	t := new(LUT)
	if err := dec.Decode(t); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("unexpected data after the JSON object")
	}
	if t.Version != LUTVersion {
		return nil, fmt.Errorf("version %d, this build reads version %d", t.Version, LUTVersion)
	}
	if t.Batch <= 0 || t.Threads <= 0 {
		return nil, fmt.Errorf("batch %d and threads %d must be positive", t.Batch, t.Threads)
	}
	if t.Entries == nil {
		t.Entries = map[string]LUTEntry{}
	}
	if t.Scale < 0 || math.IsNaN(t.Scale) || math.IsInf(t.Scale, 0) {
		return nil, fmt.Errorf("scale %v is not a positive factor", t.Scale)
	}
	for k, e := range t.Entries {
		if e.Median <= 0 || e.P90 < 0 || e.Min < 0 {
			return nil, fmt.Errorf("entry %q: median %d ns is not positive", k, e.Median)
		}
	}
	return t, nil
}

// Save writes the table as indented JSON (entries sorted by signature), through a
// temporary file in the same folder so that a crash never leaves half a table.
func (t *LUT) Save(path string) error {
	if t.Version == 0 {
		t.Version = LUTVersion
	}
	data, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		return fmt.Errorf("lookup table %s: %w", path, err)
	}
	data = append(data, '\n')
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("lookup table: %w", err)
	}
	tmp := f.Name()
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("lookup table %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("lookup table %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("lookup table %s: %w", path, err)
	}
	return nil
}

// LUTMeter predicts latency from a lookup table instead of measuring it. Its results are
// marked as proxies (Proxy set, N = 0).
type LUTMeter struct {
	Table *LUT
}

// Measure returns the table's prediction for m.
func (lm LUTMeter) Measure(ctx context.Context, m *nn.Model) (Latency, error) {
	if err := ctx.Err(); err != nil {
		return Latency{}, err
	}
	if lm.Table == nil {
		return Latency{}, errors.New("lookup table meter: no table")
	}
	return lm.Table.Predict(m)
}

// ProfileProgress reports one measured signature of Profile: done of total.
type ProfileProgress struct {
	Done, Total int
	Signature   string
	Latency     Latency
}

// Profile measures, with meter, a single-layer model for every distinct layer signature of
// the given models (the variants a search can produce), in the order the models list them,
// and records the results in t. Its entries are only as good as the meter: it should use
// t.Batch and t.Threads. Signatures already in the table are skipped, so an interrupted
// profile can be resumed.
func (t *LUT) Profile(ctx context.Context, meter Meter, models []*nn.Model, progress func(ProfileProgress)) error {
	type job struct {
		sig   string
		model *nn.Model
	}
	var jobs []job
	seen := map[string]bool{}
	for _, m := range models {
		ins, err := LayerInputs(m)
		if err != nil {
			return fmt.Errorf("profile %q: %w", m.Name, err)
		}
		for i, l := range m.Layers {
			sig := LayerSignature(l, ins[i], t.Batch, t.Threads)
			if seen[sig] {
				continue
			}
			seen[sig] = true
			if _, ok := t.Entries[sig]; ok {
				continue
			}
			one, err := SingleLayer(l, ins[i])
			if err != nil {
				return fmt.Errorf("profile %q: %w", m.Name, err)
			}
			jobs = append(jobs, job{sig, one})
		}
	}
	for i, j := range jobs {
		l, err := meter.Measure(ctx, j.model)
		if err != nil {
			return fmt.Errorf("profile %s: %w", j.sig, err)
		}
		t.Set(j.sig, l)
		if progress != nil {
			progress(ProfileProgress{Done: i + 1, Total: len(jobs), Signature: j.sig, Latency: l})
		}
	}
	return nil
}

// Merge adds the entries of o to t, keeping the one with the lower median where both have
// a signature: on a device whose speed varies (other work, heat), the fastest of several
// passes is the one least disturbed.
func (t *LUT) Merge(o *LUT) {
	if t.Entries == nil {
		t.Entries = map[string]LUTEntry{}
	}
	for k, e := range o.Entries {
		if old, ok := t.Entries[k]; !ok || e.Median < old.Median {
			t.Entries[k] = e
		}
	}
}

// Calibrate measures each model with meter and sets Scale from the results; see Fit.
func (t *LUT) Calibrate(ctx context.Context, meter Meter, models []*nn.Model) error {
	lats := make([]Latency, len(models))
	for i, m := range models {
		l, err := meter.Measure(ctx, m)
		if err != nil {
			return fmt.Errorf("calibrate %q: %w", m.Name, err)
		}
		lats[i] = l
	}
	return t.Fit(models, lats)
}

// Fit sets Scale to the median, over the models, of their measured latency divided by the
// sum of their layers' entries. Timed alone and over and over, a layer keeps its weights and
// input in cache; inside a whole model the other layers evict them, so the sum of the
// entries misses the whole by a roughly constant fraction. The ratio is taken on the minimum
// latencies when both sides have them, since other work on the device inflates medians far
// more than minimums; the measurements should be taken like the entries were (for instance,
// both the fastest of several passes).
func (t *LUT) Fit(models []*nn.Model, measured []Latency) error {
	if len(models) != len(measured) {
		return fmt.Errorf("calibrate: %d models but %d measurements", len(models), len(measured))
	}
	ratios := make([]float64, 0, len(models))
	for i, m := range models {
		sum, err := t.sum(m)
		if err != nil {
			return fmt.Errorf("calibrate: %w", err)
		}
		switch got := measured[i]; {
		case sum.Min > 0 && got.Min > 0:
			ratios = append(ratios, float64(got.Min)/float64(sum.Min))
		case sum.Median > 0 && got.Median > 0:
			ratios = append(ratios, float64(got.Median)/float64(sum.Median))
		}
	}
	if len(ratios) == 0 {
		return errors.New("calibrate: no model with measured time")
	}
	sort.Float64s(ratios)
	n := len(ratios)
	t.Scale = (ratios[(n-1)/2] + ratios[n/2]) / 2
	return nil
}
