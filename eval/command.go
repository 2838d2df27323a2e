package eval

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/nn/onnx"
)

// CommandMeter measures latency in the runtime a model is deployed with: it exports the
// models to ONNX and runs a command that times them. The command (Argv, run without a
// shell) gets these arguments appended:
//
//	--models A.onnx[,B.onnx] --batch N --threads N --warmup N --runs N
//
// It runs each model's warm-up passes, then the timed passes, interleaving the models
// (A B A B ...) so that a drift of the machine hits both alike, and prints one line per
// timed pass: the model's index in --models and the pass's wall time in seconds, such as
// "1 0.000213". Other lines starting with "#" are comments; anything else is an error. It
// exits 0. runners/onnxruntime.js in the repository is such a command for ONNX Runtime.
type CommandMeter struct {
	Argv    []string      // the command and its own arguments
	Dir     string        // working folder of the command; default the current one
	Batch   int           // samples per pass; default 1
	Threads int           // runtime threads; default 1
	Warmup  int           // untimed passes of each model; default 5
	Runs    int           // timed passes of each model; default 50
	Timeout time.Duration // for one run of the command; default 5 minutes
	Device  Device        // reported with the results; default this machine, runtime named by Argv
}

func (c *CommandMeter) defaults() (batch, threads, warmup, runs int, timeout time.Duration) {
	batch, threads, warmup, runs, _ = timingDefaults(c.Batch, c.Threads, c.Warmup, c.Runs, 0)
	timeout = c.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	return
}

// Describe returns the device its measurements report: Device, or this machine with the
// runner's name.
func (c *CommandMeter) Describe() Device {
	if c.Device != (Device{}) {
		return c.Device
	}
	d := ThisDevice()
	if len(c.Argv) > 0 {
		d.CPU += " via " + filepath.Base(c.Argv[len(c.Argv)-1])
	}
	return d
}

// Measure times one model with the command.
func (c *CommandMeter) Measure(ctx context.Context, m *nn.Model) (Latency, error) {
	times, err := c.run(ctx, m)
	if err != nil {
		return Latency{}, err
	}
	batch, threads, _, _, _ := c.defaults()
	l := Summarize(times[0])
	l.Batch, l.Threads, l.Device = batch, threads, c.Describe()
	return l, nil
}

// MeasurePair times a candidate interleaved with a reference in one run of the command.
func (c *CommandMeter) MeasurePair(ctx context.Context, ref, cand *nn.Model) (Pairs, error) {
	times, err := c.run(ctx, ref, cand)
	if err != nil {
		return Pairs{}, err
	}
	n := min(len(times[0]), len(times[1]))
	batch, threads, _, _, _ := c.defaults()
	p := Pairs{RefTimes: times[0][:n], CandTimes: times[1][:n], Batch: batch, Threads: threads, Device: c.Describe()}
	if err := p.Check(); err != nil {
		return Pairs{}, fmt.Errorf("latency command %s: %w", c.Argv[0], err)
	}
	return p, nil
}

// run exports the models, runs the command and returns each model's pass times.
func (c *CommandMeter) run(ctx context.Context, models ...*nn.Model) ([][]time.Duration, error) {
	if len(c.Argv) == 0 {
		return nil, errors.New("latency command: no command given")
	}
	batch, threads, warmup, runs, timeout := c.defaults()
	dir, err := os.MkdirTemp("", "autoprune-latency-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	paths := make([]string, len(models))
	for i, m := range models {
		paths[i] = filepath.Join(dir, fmt.Sprintf("model%d.onnx", i))
		if err := onnx.Save(paths[i], m); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	args := append(append([]string(nil), c.Argv[1:]...), "--models", strings.Join(paths, ","),
		"--batch", strconv.Itoa(batch), "--threads", strconv.Itoa(threads),
		"--warmup", strconv.Itoa(warmup), "--runs", strconv.Itoa(runs))
	cmd := exec.CommandContext(ctx, c.Argv[0], args...)
	cmd.Dir = c.Dir
	cmd.WaitDelay = time.Second // a child the command left running must not hold us up
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, fmt.Errorf("latency command %s: no result within %s", c.Argv[0], timeout)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("latency command %s: %w: %s", c.Argv[0], err, lastLine(stderr.String()))
	}
	times, err := ParseCommandTimes(stdout.Bytes(), len(models))
	if err != nil {
		return nil, fmt.Errorf("latency command %s: %w", c.Argv[0], err)
	}
	return times, nil
}

// ParseCommandTimes reads the output of a latency command (see CommandMeter): one line per
// timed pass, "INDEX SECONDS", for models 0..n-1, "#" lines being comments. Every model
// must have at least one pass.
func ParseCommandTimes(out []byte, n int) ([][]time.Duration, error) {
	times := make([][]time.Duration, n)
	sc := bufio.NewScanner(bytes.NewReader(out))
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		f := strings.Fields(text)
		if len(f) != 2 {
			return nil, fmt.Errorf("output line %d %q: want \"MODEL-INDEX SECONDS\"", line, text)
		}
		i, err := strconv.Atoi(f[0])
		if err != nil || i < 0 || i >= n {
			return nil, fmt.Errorf("output line %d %q: model index %q is not in 0..%d", line, text, f[0], n-1)
		}
		sec, err := strconv.ParseFloat(f[1], 64)
		if err != nil || !(sec > 0) || sec > 3600 {
			return nil, fmt.Errorf("output line %d %q: %q is not a time in seconds", line, text, f[1])
		}
		times[i] = append(times[i], time.Duration(sec*1e9))
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for i, t := range times {
		if len(t) == 0 {
			return nil, fmt.Errorf("no timed pass of model %d in the output", i)
		}
	}
	return times, nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if len(s) > 300 {
		s = s[:300]
	}
	return s
}
