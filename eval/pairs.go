package eval

import (
	"context"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/autoprune/autoprune/nn"
)

// Pairs is an interleaved measurement of a candidate against a reference model on one
// device: forward passes alternate (A B A B ...), so both see the same machine state, and
// the per-pair ratio candidate/reference survives drift (frequency scaling, thermal
// throttling, other work) that a candidate timed alone would carry into its score.
// RefTimes[i] and CandTimes[i] are the two halves of pair i.
type Pairs struct {
	RefTimes  []time.Duration `json:"ref_ns"`
	CandTimes []time.Duration `json:"cand_ns"`
	Batch     int             `json:"batch"`
	Threads   int             `json:"threads"`
	Device    Device          `json:"device"`
}

// Len is the number of pairs.
func (p Pairs) Len() int { return min(len(p.RefTimes), len(p.CandTimes)) }

// Check returns an error when p holds no pair, halves of different lengths or a
// non-positive time.
func (p Pairs) Check() error {
	if len(p.RefTimes) != len(p.CandTimes) {
		return fmt.Errorf("latency pairs: %d reference times but %d candidate times", len(p.RefTimes), len(p.CandTimes))
	}
	if len(p.RefTimes) == 0 {
		return fmt.Errorf("latency pairs: no timed pair")
	}
	for i := range p.RefTimes {
		if p.RefTimes[i] <= 0 || p.CandTimes[i] <= 0 {
			return fmt.Errorf("latency pairs: pair %d has a non-positive time (%d ns, %d ns)", i, p.RefTimes[i], p.CandTimes[i])
		}
	}
	return nil
}

// Ratios returns the per-pair ratios candidate/reference, sorted.
func (p Pairs) Ratios() []float64 {
	n := p.Len()
	r := make([]float64, n)
	for i := 0; i < n; i++ {
		r[i] = float64(p.CandTimes[i]) / float64(max(p.RefTimes[i], 1))
	}
	sort.Float64s(r)
	return r
}

// Ratio is the median of the per-pair ratios: the candidate's latency relative to the
// reference; 0 when there is no pair.
func (p Pairs) Ratio() float64 {
	r := p.Ratios()
	if len(r) == 0 {
		return 0
	}
	return medianSorted(r)
}

// Spread is the relative half-width of a 95 % confidence interval of the median ratio
// (distribution-free, from order statistics): 0.02 means the ratio is known within ±2 %.
// It is +Inf with fewer than 6 pairs.
func (p Pairs) Spread() float64 {
	r := p.Ratios()
	n := len(r)
	if n < 6 {
		return math.Inf(1)
	}
	med := medianSorted(r)
	h := 0.98 * math.Sqrt(float64(n)) // 1.96·sqrt(n)/2 ranks either side of the median
	lo := max(0, int(math.Floor(float64(n)/2-h)))
	hi := min(n-1, int(math.Ceil(float64(n)/2+h)))
	if med <= 0 {
		return math.Inf(1)
	}
	return (r[hi] - r[lo]) / (2 * med)
}

// Ref is the reference model's latency distribution.
func (p Pairs) Ref() Latency { return p.summary(p.RefTimes) }

// Cand is the candidate's latency distribution.
func (p Pairs) Cand() Latency { return p.summary(p.CandTimes) }

func (p Pairs) summary(t []time.Duration) Latency {
	l := Summarize(t)
	l.Batch, l.Threads, l.Device = p.Batch, p.Threads, p.Device
	return l
}

// Merge returns the pairs of p followed by those of q (a further round of the same
// measurement); the batch, threads and device of q win when p has none.
func (p Pairs) Merge(q Pairs) Pairs {
	out := Pairs{
		RefTimes:  append(append([]time.Duration(nil), p.RefTimes...), q.RefTimes...),
		CandTimes: append(append([]time.Duration(nil), p.CandTimes...), q.CandTimes...),
		Batch:     p.Batch, Threads: p.Threads, Device: p.Device,
	}
	if out.Batch == 0 {
		out.Batch, out.Threads, out.Device = q.Batch, q.Threads, q.Device
	}
	return out
}

func medianSorted(r []float64) float64 {
	n := len(r)
	if n%2 == 1 {
		return r[n/2]
	}
	return (r[n/2-1] + r[n/2]) / 2
}

// PairMeter times a candidate interleaved with a reference model on one device. Each call
// is a fresh round; callers merge rounds (Pairs.Merge) when one is not precise enough.
type PairMeter interface {
	MeasurePair(ctx context.Context, ref, cand *nn.Model) (Pairs, error)
}

// LocalPairMeter is the PairMeter of this machine (see InterleavedPairs).
type LocalPairMeter struct {
	Batch   int  // samples per pass; default 1
	Threads int  // engine threads; default 1
	Warmup  int  // untimed passes of each model; default 5
	Runs    int  // timed pairs, at least; default 50 (more for fast models, see Interleaved)
	CPU     *int // pin the measurement to this CPU (Linux and Android), if set
}

// MeasurePair implements PairMeter.
func (lm *LocalPairMeter) MeasurePair(ctx context.Context, ref, cand *nn.Model) (Pairs, error) {
	if lm.CPU != nil {
		release, err := PinToCPU(*lm.CPU)
		if err != nil {
			return Pairs{}, err
		}
		defer release()
	}
	return InterleavedPairs(ctx, ref, cand, lm.Batch, lm.Threads, lm.Warmup, lm.Runs)
}
