package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/autoprune/autoprune/agent"
	"github.com/autoprune/autoprune/eval"
)

// syncBuffer is a bytes.Buffer safe for a writer and a reader in different goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runLatencyCmd runs one command line and returns its exit code, stdout and stderr.
func runLatencyCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// startAgentCmd runs "autoprune agent" on a free loopback port until the test ends and
// returns its URL.
func startAgentCmd(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, append([]string{"agent", "--listen", "127.0.0.1:0", "--quiet"}, args...), &stderr, &stderr)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != exitInterrupt {
				t.Errorf("agent exit code %d after cancel, want %d; stderr:\n%s", code, exitInterrupt, stderr.String())
			}
		case <-time.After(15 * time.Second):
			t.Error("agent did not stop")
		}
	})
	re := regexp.MustCompile(`listening on (http://127\.0\.0\.1:\d+)`)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(stderr.String()); m != nil {
			return m[1]
		}
		select {
		case code := <-done:
			t.Fatalf("agent exited with %d: %s", code, stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatalf("agent did not start: %s", stderr.String())
	return ""
}

func TestAgentCommandRefusesOpenAddressWithoutToken(t *testing.T) {
	t.Setenv(agent.TokenEnv, "")
	for _, addr := range []string{"0.0.0.0:7070", ":7070"} {
		code, _, stderr := runLatencyCmd(t, "agent", "--listen", addr)
		if code != exitUsage || !strings.Contains(stderr, "without authentication") || !strings.Contains(stderr, "--token") {
			t.Errorf("agent --listen %s: exit %d, stderr %q", addr, code, stderr)
		}
	}
	if code, _, stderr := runLatencyCmd(t, "agent", "--listen", "nonsense"); code != exitUsage {
		t.Errorf("bad address: exit %d, %s", code, stderr)
	}
}

func TestBenchCommand(t *testing.T) {
	t.Setenv(agent.TokenEnv, "")
	code, out, stderr := runLatencyCmd(t, "bench", "zoo:lenet5", "--runs", "3", "--warmup", "1")
	if code != exitOK || !strings.Contains(out, "latency   median") || !strings.Contains(out, "this machine") {
		t.Errorf("local bench: exit %d\n%s%s", code, out, stderr)
	}
	code, out, _ = runLatencyCmd(t, "bench", "zoo:lenet5", "--macs", "0.5")
	if code != exitOK || !strings.Contains(out, "proxy") {
		t.Errorf("MACs bench: exit %d\n%s", code, out)
	}

	if runtime.GOOS == "linux" {
		code, out, stderr = runLatencyCmd(t, "bench", "zoo:lenet5", "--runs", "3", "--cpu", "0", "--versus", "zoo:lenet5")
		if code != exitOK || !strings.Contains(out, "ratio") {
			t.Errorf("bench pinned to CPU 0: exit %d\n%s%s", code, out, stderr)
		}
		pinned := startAgentCmd(t, "--cpu", "0")
		code, out, stderr = runLatencyCmd(t, "bench", "zoo:lenet5", "--agent", pinned, "--runs", "3")
		if code != exitOK || !strings.Contains(out, "latency   median") {
			t.Errorf("agent pinned to CPU 0: exit %d\n%s%s", code, out, stderr)
		}
		code, out, stderr = runLatencyCmd(t, "bench", "zoo:lenet5", "--agent", pinned, "--versus", "zoo:mlp", "--runs", "3")
		if code != exitOK || !strings.Contains(out, "ratio") || !strings.Contains(out, "spread") {
			t.Errorf("pair on an agent pinned to CPU 0: exit %d\n%s%s", code, out, stderr)
		}
		code, _, stderr = runLatencyCmd(t, "bench", "zoo:lenet5", "--agent", pinned, "--threads", "2")
		if code == exitOK || !strings.Contains(stderr, "thread") {
			t.Errorf("two threads on an agent pinned to one CPU: exit %d, %s", code, stderr)
		}
	}

	url := startAgentCmd(t, "--token", "tok")
	code, out, stderr = runLatencyCmd(t, "bench", "zoo:lenet5", "--agent", url, "--token", "tok", "--runs", "3", "--warmup", "1")
	if code != exitOK || !strings.Contains(out, "agent "+url) || !strings.Contains(out, eval.ThisDevice().String()) {
		t.Errorf("remote bench: exit %d\n%s%s", code, out, stderr)
	}
	t.Setenv(agent.TokenEnv, "tok")
	if code, out, stderr = runLatencyCmd(t, "bench", "zoo:mlp", "--agent", url, "--runs", "3"); code != exitOK {
		t.Errorf("token from the environment: exit %d\n%s%s", code, out, stderr)
	}
	t.Setenv(agent.TokenEnv, "")
	code, _, stderr = runLatencyCmd(t, "bench", "zoo:lenet5", "--agent", url, "--token", "nope")
	if code != exitFailure || !strings.Contains(stderr, "401") {
		t.Errorf("wrong token: exit %d, %s", code, stderr)
	}

	for _, args := range [][]string{
		{"bench"},
		{"bench", "zoo:lenet5", "--runs", "0"},
		{"bench", "zoo:lenet5", "--agent", url, "--macs", "1"},
		{"bench", "zoo:lenet5", "--agent", "127.0.0.1:7070"},
		{"bench", "zoo:nosuchmodel"},
		{"bench", "zoo:lenet5", "--lut", filepath.Join(t.TempDir(), "missing.json")},
		{"bench", "zoo:lenet5", "--cpu", "-2"},
		{"bench", "zoo:lenet5", "--cpu", "0", "--threads", "2"},
		{"bench", "zoo:lenet5", "--cpu", "0", "--agent", url},
		{"bench", "zoo:lenet5", "--cpu", strconv.Itoa(runtime.NumCPU())},
		{"agent", "--cpu", strconv.Itoa(runtime.NumCPU())},
	} {
		if code, _, stderr := runLatencyCmd(t, args...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d (%s)", args, code, exitUsage, stderr)
		}
	}
}

func TestProfileCommand(t *testing.T) {
	t.Setenv(agent.TokenEnv, "")
	url := startAgentCmd(t)
	lut := filepath.Join(t.TempDir(), "lut.json")
	code, out, stderr := runLatencyCmd(t, "profile", "--agent", url, "--model", "zoo:lenet5", "--ratios", "0,0.5",
		"--out", lut, "--runs", "3", "--warmup", "1", "--budget", "50ms", "--calibrate", "1", "--lut-check", "2")
	if code != exitOK || !strings.Contains(out, "wrote "+lut) || !strings.Contains(out, "LUT error over 2 plans") ||
		!strings.Contains(stderr, "profile: ") {
		t.Fatalf("profile: exit %d\n%s%s", code, out, stderr)
	}
	table, err := eval.LoadLUT(lut)
	if err != nil {
		t.Fatal(err)
	}
	if table.Device != eval.ThisDevice() || table.Model != "lenet5" || len(table.Entries) < 10 {
		t.Errorf("table from %v for %q with %d entries", table.Device, table.Model, len(table.Entries))
	}
	code, out, stderr = runLatencyCmd(t, "bench", "zoo:lenet5", "--lut", lut)
	if code != exitOK || !strings.Contains(out, "proxy") {
		t.Errorf("bench --lut: exit %d\n%s%s", code, out, stderr)
	}
	// Checking an existing table measures only the plans.
	code, out, stderr = runLatencyCmd(t, "profile", "--agent", url, "--model", "zoo:lenet5", "--ratios", "0,0.5",
		"--lut", lut, "--lut-check", "1", "--runs", "3", "--warmup", "1")
	if code != exitOK || !strings.Contains(out, "LUT error over 1 plans") || strings.Contains(out, "wrote") {
		t.Errorf("profile --lut: exit %d\n%s%s", code, out, stderr)
	}
	// A ratio that was not profiled is an error naming the layer.
	code, _, stderr = runLatencyCmd(t, "profile", "--agent", url, "--model", "zoo:lenet5", "--ratios", "0.25",
		"--lut", lut, "--lut-check", "1", "--runs", "3")
	if code != exitFailure || !strings.Contains(stderr, "not in the latency lookup table") || !strings.Contains(stderr, "layer \"conv1\"") {
		t.Errorf("unprofiled width: exit %d, %s", code, stderr)
	}
	for _, args := range [][]string{
		{"profile"},
		{"profile", "--model", "zoo:lenet5", "--ratios", "0,1.5"},
		{"profile", "--model", "zoo:lenet5", "--lut", lut},
		{"profile", "--model", "zoo:lenet5", "extra"},
	} {
		if code, _, stderr := runLatencyCmd(t, args...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d (%s)", args, code, exitUsage, stderr)
		}
	}
}

// TestLUTAccuracyLong profiles vgg-small on a loopback agent and checks the table against
// direct measurements of 20 random per-group plans. It takes a few minutes:
//
//	AUTOPRUNE_LONG=1 go test ./cmd/autoprune/ -run LUTAccuracyLong -v -timeout 30m
func TestLUTAccuracyLong(t *testing.T) {
	if os.Getenv("AUTOPRUNE_LONG") != "1" {
		t.Skip("set AUTOPRUNE_LONG=1 to profile vgg-small and check the lookup table (minutes)")
	}
	t.Setenv(agent.TokenEnv, "")
	url := startAgentCmd(t)
	lut := filepath.Join(t.TempDir(), "vgg-lut.json")
	code, out, stderr := runLatencyCmd(t, "profile", "--agent", url, "--model", "zoo:vgg-small",
		"--out", lut, "--lut-check", "20", "--runs", "100", "--budget", "2s")
	t.Logf("stdout:\n%s\nstderr:\n%s", out, stderr)
	if code != exitOK {
		t.Fatalf("exit %d", code)
	}
	m := regexp.MustCompile(`median ([0-9.]+) %`).FindStringSubmatch(out)
	if m == nil {
		t.Fatal("no error summary")
	}
	if e, _ := strconv.ParseFloat(m[1], 64); e > 10 {
		t.Errorf("median absolute error %.1f %%, goal 10 %%", e)
	}
}

// ratioRE reads the median per-pair ratio that bench --versus prints.
var ratioRE = regexp.MustCompile(`(?m)^ratio     ([0-9.]+)x the reference's latency`)

func TestBenchVersusAgent(t *testing.T) {
	t.Setenv(agent.TokenEnv, "")
	half := filepath.Join(t.TempDir(), "vgg-half.safetensors")
	if code, out, stderr := runLatencyCmd(t, "prune", "zoo:vgg-small", "--uniform", "0.5", "--criterion", "l1", "--out", half); code != exitOK {
		t.Fatalf("prune: exit %d\n%s%s", code, out, stderr)
	}
	url := startAgentCmd(t, "--token", "tok")
	ratios := map[string]float64{}
	for _, tc := range []struct{ name, model string }{{"itself", "zoo:vgg-small"}, {"pruned", half}} {
		code, out, stderr := runLatencyCmd(t, "bench", tc.model, "--versus", "zoo:vgg-small", "--agent", url, "--token", "tok",
			"--runs", "30", "--warmup", "2")
		m := ratioRE.FindStringSubmatch(out)
		if code != exitOK || m == nil || !strings.Contains(out, "source    agent "+url+" (version 2)") ||
			!strings.Contains(out, "device    "+eval.ThisDevice().String()) || !strings.Contains(out, "versus    zoo:vgg-small") ||
			!regexp.MustCompile(`(?m)^spread    ±[0-9.]+ % \(95 % interval of the median ratio over \d+ pairs\)$`).MatchString(out) {
			t.Fatalf("bench %s --versus on the agent: exit %d\n%s%s", tc.name, code, out, stderr)
		}
		ratios[tc.name], _ = strconv.ParseFloat(m[1], 64)
	}
	// Loose bounds, and the order: the machine is shared.
	if r := ratios["itself"]; r < 0.8 || r > 1.25 {
		t.Errorf("vgg-small against itself: ratio %.3f, want about 1", r)
	}
	if r := ratios["pruned"]; r > 0.8 || r >= ratios["itself"] {
		t.Errorf("50 %% pruned vgg-small against dense: ratio %.3f (itself %.3f), want well below 1", r, ratios["itself"])
	}

	// An agent older than the pair endpoint is named as such, with what to do.
	old := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == eval.InfoPath {
			json.NewEncoder(w).Encode(eval.AgentInfo{Version: "1", Device: eval.ThisDevice(), Limits: eval.DefaultLimits})
			return
		}
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(eval.ErrorResponse{Error: fmt.Sprintf("no such endpoint %q (have POST /v1/measure and GET /v1/info)", r.URL.Path)})
	}))
	defer old.Close()
	code, _, stderr := runLatencyCmd(t, "bench", "zoo:lenet5", "--versus", "zoo:lenet5", "--agent", old.URL)
	if code != exitFailure || !strings.Contains(stderr, "404") || !strings.Contains(stderr, "update the agent binary") {
		t.Errorf("old agent: exit %d, %s", code, stderr)
	}
	for _, args := range [][]string{
		{"bench", "zoo:lenet5", "--versus", "zoo:lenet5", "--agent", url, "--lut", "x.json"},
		{"bench", "zoo:lenet5", "--versus", "zoo:nosuchmodel", "--agent", url},
		{"bench", "zoo:lenet5", "--versus", "zoo:lenet5", "--agent", url, "--cpu", "0"},
	} {
		if code, _, stderr := runLatencyCmd(t, args...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d (%s)", args, code, exitUsage, stderr)
		}
	}
}

// agent --command: the device times ONNX exports with the runner given, here a script
// that reports the reference twice as slow as the candidate.
func TestAgentWithCommand(t *testing.T) {
	t.Setenv(agent.TokenEnv, "")
	script := filepath.Join(t.TempDir(), "runner.sh")
	src := "#!/bin/sh\nfor i in 1 2 3 4 5; do echo \"0 0.002\"; echo \"1 0.001\"; done\n"
	if err := os.WriteFile(script, []byte(src), 0o755); err != nil {
		t.Fatal(err)
	}
	url := startAgentCmd(t, "--command", "sh "+script)
	code, out, stderr := runLatencyCmd(t, "bench", "zoo:lenet5", "--versus", "zoo:vgg-small", "--agent", url, "--runs", "5")
	if m := ratioRE.FindStringSubmatch(out); code != exitOK || m == nil || m[1] != "0.500" || !strings.Contains(out, "via runner.sh") {
		t.Errorf("bench through an agent with a command: exit %d\n%s%s", code, out, stderr)
	}
	if code, _, stderr := runLatencyCmd(t, "agent", "--command", "sh x", "--cpu", "0"); code != exitUsage {
		t.Errorf("--command with --cpu: exit %d (%s)", code, stderr)
	}
}
