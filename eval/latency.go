package eval

import (
	"bufio"
	"context"
	"fmt"
	"math/rand"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/autoprune/autoprune/nn"
)

// Latency is the distribution of a model's forward-pass time on one device.
type Latency struct {
	Median  time.Duration `json:"median_ns"`
	P90     time.Duration `json:"p90_ns"`
	Mean    time.Duration `json:"mean_ns"`
	Min     time.Duration `json:"min_ns"`
	N       int           `json:"n"`               // timed runs
	Batch   int           `json:"batch"`           // samples per forward pass
	Threads int           `json:"threads"`         // worker threads of the engine
	Device  Device        `json:"device"`          // where it was measured
	Proxy   bool          `json:"proxy,omitempty"` // true when estimated, not measured
}

// String formats the distribution on one line.
func (l Latency) String() string {
	s := fmt.Sprintf("median %s  p90 %s  mean %s  min %s  (n=%d, batch %d, %d thread(s), %s)",
		ms(l.Median), ms(l.P90), ms(l.Mean), ms(l.Min), l.N, l.Batch, l.Threads, l.Device)
	if l.Proxy {
		s += " [proxy, not measured]"
	}
	return s
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/1e6) }

// Device describes the hardware a latency was measured on.
type Device struct {
	OS    string `json:"os"`
	Arch  string `json:"arch"`
	CPU   string `json:"cpu"`
	Cores int    `json:"cores"`
}

// String formats the device as "os/arch, cpu, N cores".
func (d Device) String() string {
	return fmt.Sprintf("%s/%s, %s, %d cores", d.OS, d.Arch, d.CPU, d.Cores)
}

// ThisDevice describes the machine the program runs on.
func ThisDevice() Device {
	return Device{OS: runtime.GOOS, Arch: runtime.GOARCH, CPU: cpuModel(), Cores: runtime.NumCPU()}
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		for _, key := range []string{"model name", "Hardware", "Processor", "cpu model"} {
			if strings.HasPrefix(line, key) {
				if i := strings.IndexByte(line, ':'); i >= 0 {
					if v := strings.TrimSpace(line[i+1:]); v != "" {
						return v
					}
				}
			}
		}
	}
	return "unknown CPU"
}

// Meter measures the latency of a model's forward pass.
type Meter interface {
	Measure(ctx context.Context, m *nn.Model) (Latency, error)
}

// MeterFunc adapts a function to the Meter interface.
type MeterFunc func(ctx context.Context, m *nn.Model) (Latency, error)

// Measure calls f.
func (f MeterFunc) Measure(ctx context.Context, m *nn.Model) (Latency, error) { return f(ctx, m) }

// LocalMeter times the pure-Go forward pass on this machine.
//
// To keep noise down it runs Warmup untimed passes first (buffers, caches, branch
// predictors), pins the measuring goroutine to one OS thread, times each pass separately and
// reports the median and p90 rather than the mean. Latency depends on the architecture only,
// so results are cached by nn.Model.Hash and the inputs are random. To keep the measuring
// thread on one core as well, call PinToCPU first (on the same goroutine).
type LocalMeter struct {
	Batch   int           // samples per pass; default 1
	Threads int           // engine threads; default 1
	Warmup  int           // untimed passes; default 5
	Runs    int           // timed passes; default 50
	Budget  time.Duration // stop timing after this long (at least 5 runs); default 3s

	mu    sync.Mutex
	cache map[string]Latency
}

// Measure returns the latency distribution of m, from the cache when the same architecture
// was measured before.
func (lm *LocalMeter) Measure(ctx context.Context, m *nn.Model) (Latency, error) {
	key := m.Hash()
	lm.mu.Lock()
	if l, ok := lm.cache[key]; ok {
		lm.mu.Unlock()
		return l, nil
	}
	lm.mu.Unlock()
	l, err := MeasureLocal(ctx, m, lm.Batch, lm.Threads, lm.Warmup, lm.Runs, lm.Budget)
	if err != nil {
		return Latency{}, err
	}
	lm.mu.Lock()
	if lm.cache == nil {
		lm.cache = map[string]Latency{}
	}
	lm.cache[key] = l
	lm.mu.Unlock()
	return l, nil
}

// MeasureLocal times m's forward pass on this machine without caching. Zero arguments take
// the LocalMeter defaults. The model needs weights, but their values do not matter for
// timing (nn.Model.Init fills an architecture with random ones).
func MeasureLocal(ctx context.Context, m *nn.Model, batch, threads, warmup, runs int, budget time.Duration) (Latency, error) {
	batch, threads, warmup, runs, budget = timingDefaults(batch, threads, warmup, runs, budget)
	ex, err := nn.NewExecutor(m, batch, nn.Options{Threads: threads})
	if err != nil {
		return Latency{}, fmt.Errorf("latency: %w", err)
	}
	x := randomInput(batch * m.Input.Size())
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for i := 0; i < warmup; i++ {
		if err := ctx.Err(); err != nil { // a deadline stops the warm-up too
			return Latency{}, fmt.Errorf("latency: %w", err)
		}
		if _, err := ex.ForwardContext(ctx, x); err != nil {
			return Latency{}, fmt.Errorf("latency: %w", err)
		}
	}
	times := make([]time.Duration, 0, runs)
	start := time.Now()
	for len(times) < runs {
		if err := ctx.Err(); err != nil {
			return Latency{}, fmt.Errorf("latency: %w", err)
		}
		t0 := time.Now()
		if _, err := ex.ForwardContext(ctx, x); err != nil {
			return Latency{}, fmt.Errorf("latency: %w", err)
		}
		times = append(times, time.Since(t0))
		if len(times) >= 5 && time.Since(start) > budget {
			break
		}
	}
	l := Summarize(times)
	l.Batch, l.Threads, l.Device = batch, threads, ThisDevice()
	return l, nil
}

// timingDefaults fills the zero (or negative) timing arguments with the LocalMeter
// defaults: batch 1, 1 thread, 5 warm-up passes, 50 timed passes, a 3 s budget.
func timingDefaults(batch, threads, warmup, runs int, budget time.Duration) (int, int, int, int, time.Duration) {
	if warmup <= 0 {
		warmup = 5
	}
	if runs <= 0 {
		runs = 50
	}
	if budget <= 0 {
		budget = 3 * time.Second
	}
	return max(batch, 1), max(threads, 1), warmup, runs, budget
}

// Summarize computes the distribution of a set of timings (N, min, median, p90, mean).
func Summarize(times []time.Duration) Latency {
	if len(times) == 0 {
		return Latency{}
	}
	s := append([]time.Duration(nil), times...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	var sum time.Duration
	for _, t := range s {
		sum += t
	}
	return Latency{
		Median: quantile(s, 0.5),
		P90:    quantile(s, 0.9),
		Mean:   sum / time.Duration(len(s)),
		Min:    s[0],
		N:      len(s),
	}
}

// quantile interpolates linearly between order statistics of sorted s.
func quantile(s []time.Duration, q float64) time.Duration {
	pos := q * float64(len(s)-1)
	i := int(pos)
	if i+1 >= len(s) {
		return s[len(s)-1]
	}
	f := pos - float64(i)
	return s[i] + time.Duration(f*float64(s[i+1]-s[i]))
}

// MinInterleaved is the least time InterleavedPairs spends on timed pairs.
const MinInterleaved = 300 * time.Millisecond

// InterleavedPairs times a candidate against a reference model on this machine, alternating
// single passes (A B A B ..., and which goes first within a pair) and returns every pair.
// Zero arguments take the LocalMeter defaults; fast models run more pairs than runs, until
// the pairs cover MinInterleaved.
func InterleavedPairs(ctx context.Context, ref, cand *nn.Model, batch, threads, warmup, runs int) (Pairs, error) {
	batch, threads, warmup, runs, _ = timingDefaults(batch, threads, warmup, runs, 0)
	if ref.Input != cand.Input {
		return Pairs{}, fmt.Errorf("latency: reference input %v differs from candidate input %v", ref.Input, cand.Input)
	}
	exA, err := nn.NewExecutor(ref, batch, nn.Options{Threads: threads})
	if err != nil {
		return Pairs{}, fmt.Errorf("latency: reference: %w", err)
	}
	exB, err := nn.NewExecutor(cand, batch, nn.Options{Threads: threads})
	if err != nil {
		return Pairs{}, fmt.Errorf("latency: candidate: %w", err)
	}
	x := randomInput(batch * ref.Input.Size())
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for i := 0; i < warmup; i++ {
		if err := ctx.Err(); err != nil { // a deadline stops the warm-up too
			return Pairs{}, fmt.Errorf("latency: %w", err)
		}
		if _, err := exA.ForwardContext(ctx, x); err != nil {
			return Pairs{}, err
		}
		if _, err := exB.ForwardContext(ctx, x); err != nil {
			return Pairs{}, err
		}
	}
	// Small models take microseconds per pass: keep going past runs until the pairs cover
	// MinInterleaved, so scheduler noise averages out.
	p := Pairs{RefTimes: make([]time.Duration, 0, runs), CandTimes: make([]time.Duration, 0, runs),
		Batch: batch, Threads: threads, Device: ThisDevice()}
	start := time.Now()
	for i := 0; i < runs || (time.Since(start) < MinInterleaved && i < 50*runs); i++ {
		if err := ctx.Err(); err != nil {
			return Pairs{}, fmt.Errorf("latency: %w", err)
		}
		// Alternate which goes first so neither always runs on a warmer cache.
		first, second := exA, exB
		if i%2 == 1 {
			first, second = exB, exA
		}
		t0 := time.Now()
		if _, err := first.ForwardContext(ctx, x); err != nil {
			return Pairs{}, err
		}
		t1 := time.Now()
		if _, err := second.ForwardContext(ctx, x); err != nil {
			return Pairs{}, err
		}
		tf, ts := t1.Sub(t0), time.Since(t1)
		if i%2 == 1 {
			tf, ts = ts, tf
		}
		p.RefTimes = append(p.RefTimes, max(tf, 1))
		p.CandTimes = append(p.CandTimes, max(ts, 1))
	}
	return p, nil
}

// randomInput returns n fixed pseudo-random values in [0, 1): timing does not depend on
// them, but zeros could take shortcuts that real inputs do not.
func randomInput(n int) []float32 {
	x := make([]float32, n)
	rng := rand.New(rand.NewSource(1))
	for i := range x {
		x[i] = rng.Float32()
	}
	return x
}
