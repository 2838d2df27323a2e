package eval_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/autoprune/autoprune/eval"
	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/nn/zoo"
	"github.com/autoprune/autoprune/prune"
)

func TestParseCommandTimes(t *testing.T) {
	got, err := eval.ParseCommandTimes([]byte("# runtime x\n0 0.002\n1 0.001\n\n0 0.004\n1 0.0015\n"), 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(got[0]) != 2 || got[0][1] != 4*time.Millisecond || got[1][0] != time.Millisecond {
		t.Errorf("parsed %v", got)
	}
	bad := map[string]string{
		"0 0.001\n2 0.001\n": `model index "2" is not in 0..1`,
		"0 fast\n1 0.001\n":  `"fast" is not a time in seconds`,
		"0 -1\n1 0.001\n":    `"-1" is not a time in seconds`,
		"0 0.001 extra\n":    `want "MODEL-INDEX SECONDS"`,
		"0 0.001\n0 0.002\n": "no timed pass of model 1",
		"":                   "no timed pass of model 0",
	}
	for out, want := range bad {
		if _, err := eval.ParseCommandTimes([]byte(out), 2); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", out, err, want)
		}
	}
}

// A command that reports its own times: the meter pairs them by order; failures and
// garbage are errors that name the command.
func TestCommandMeterProtocol(t *testing.T) {
	m, err := zoo.Build("lenet5", nn.Shape{C: 1, H: 28, W: 28}, 10, 1)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	script := func(s string) *eval.CommandMeter { return &eval.CommandMeter{Argv: []string{"sh", "-c", s, "runner"}} }
	p, err := script(`for i in 1 2 3; do echo "0 0.002"; echo "1 0.001"; done`).MeasurePair(ctx, m, m)
	if err != nil {
		t.Fatal(err)
	}
	if p.Len() != 3 || p.Ratio() != 0.5 || !strings.Contains(p.Device.CPU, "via") {
		t.Errorf("pairs %+v, ratio %v", p, p.Ratio())
	}
	// The models arrive as ONNX files the command can read.
	if _, err := script(`set -- "$@"; test "$1" = --models && for f in $(echo "$2" | tr , ' '); do test -s "$f" || exit 3; done; echo "0 0.001"`).Measure(ctx, m); err != nil {
		t.Errorf("the command did not get the models: %v", err)
	}
	if _, err := script(`echo broken >&2; exit 1`).Measure(ctx, m); err == nil || !strings.Contains(err.Error(), "latency command sh") || !strings.Contains(err.Error(), "broken") {
		t.Errorf("failing command: %v", err)
	}
	if _, err := script(`echo hello`).Measure(ctx, m); err == nil || !strings.Contains(err.Error(), `output line 1 "hello"`) {
		t.Errorf("garbage output: %v", err)
	}
	slow := script(`sleep 5`)
	slow.Timeout = 200 * time.Millisecond
	if _, err := slow.Measure(ctx, m); err == nil || !strings.Contains(err.Error(), "no result within 200ms") {
		t.Errorf("slow command: %v", err)
	}
}

// ONNX Runtime, through the runner kept in the repository, times a half-pruned vgg-small
// faster than the dense one.
func TestCommandMeterOnnxRuntime(t *testing.T) {
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node is not installed")
	}
	if out, err := exec.Command("node", "-e", "require('onnxruntime-node')").CombinedOutput(); err != nil {
		t.Skipf("onnxruntime-node not found (see runners/onnxruntime.js): %.200s", out)
	}
	dense, err := zoo.Build("vgg-small", nn.Shape{C: 1, H: 28, W: 28}, 10, 1)
	if err != nil {
		t.Fatal(err)
	}
	gs, _ := prune.Groups(dense)
	half, err := prune.Structured(dense, prune.Uniform(gs, 0.5), prune.L1{})
	if err != nil {
		t.Fatal(err)
	}
	meter := &eval.CommandMeter{Argv: []string{"node", "../runners/onnxruntime.js"}, Runs: 30, Warmup: 3}
	p, err := meter.MeasurePair(context.Background(), dense, half)
	if err != nil {
		t.Fatal(err)
	}
	if p.Len() != 30 || !(p.Ratio() < 0.9) {
		t.Errorf("%d pairs, ratio %.3f: the half-pruned model is not faster in ONNX Runtime", p.Len(), p.Ratio())
	}
}
