package eval

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/autoprune/autoprune/nn"
)

// MACsMeter estimates latency as the model's multiply-adds times a fixed cost per
// multiply-add. It measures nothing: its results have Proxy set and N = 0, and
// Latency.String labels them as proxies. It ignores everything but convolutions and linear
// layers, so it is a rough guide that favours pruning the layers with the most MACs.
type MACsMeter struct {
	NsPerMAC float64 // nanoseconds per multiply-add; 1 when unset
	Batch    int     // samples per pass; default 1
	Device   Device  // the device NsPerMAC was calibrated on, if any
}

// Measure returns MACs(m) x Batch x NsPerMAC as a proxy latency.
func (mm MACsMeter) Measure(ctx context.Context, m *nn.Model) (Latency, error) {
	if err := ctx.Err(); err != nil {
		return Latency{}, err
	}
	_, macs, err := m.Totals()
	if err != nil {
		return Latency{}, fmt.Errorf("MACs proxy: %w", err)
	}
	ns := mm.NsPerMAC
	if ns <= 0 {
		ns = 1
	}
	batch := max(mm.Batch, 1)
	d := time.Duration(float64(macs) * float64(batch) * ns)
	dev := mm.Device
	if dev == (Device{}) {
		dev = Device{OS: "any", Arch: "any", CPU: fmt.Sprintf("MACs proxy at %.4g ns/MAC", ns)}
	}
	return Latency{Median: d, P90: d, Mean: d, Min: d, N: 0, Batch: batch, Threads: 1, Device: dev, Proxy: true}, nil
}

// CalibrateMACs returns a MACsMeter whose cost per multiply-add makes its estimate of ref
// equal to ref's median latency measured by meter (for instance a LocalMeter on the target
// machine).
func CalibrateMACs(ctx context.Context, meter Meter, ref *nn.Model) (MACsMeter, error) {
	_, macs, err := ref.Totals()
	if err != nil {
		return MACsMeter{}, fmt.Errorf("calibrating the MACs proxy: %w", err)
	}
	if macs <= 0 {
		return MACsMeter{}, errors.New("calibrating the MACs proxy: the reference model has no multiply-adds")
	}
	l, err := meter.Measure(ctx, ref)
	if err != nil {
		return MACsMeter{}, fmt.Errorf("calibrating the MACs proxy on %q: %w", ref.Name, err)
	}
	batch := max(l.Batch, 1)
	return MACsMeter{NsPerMAC: float64(l.Median) / (float64(macs) * float64(batch)), Batch: batch, Device: l.Device}, nil
}
