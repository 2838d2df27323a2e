package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/autoprune/autoprune/search"
)

// The command line as a user meets it: exit codes and messages for good and bad input.
func TestCommandLine(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	write := func(name, content string) string {
		if err := os.WriteFile(p(name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p(name)
	}
	write("garbage.safetensors", "this is not a model")
	write("garbage.onnx", "this is not a model either")
	write("bad-plan.toml", "colour = 1\n[ratios]\nconv1 = 0.5\n[extra]\nx = 1\n")
	write("unknown-group.toml", "[ratios]\nconv9 = 0.5\n")
	write("good-plan.toml", "criterion = \"l2\"\n[ratios]\nconv1 = 0.5\nfc1 = 0.25\n")
	// Tiny NumPy data sets: three 28x28 images (fewer than a batch), and three 14x14 ones.
	for name, hw := range map[string]int{"tiny28": 28, "tiny14": 14} {
		os.MkdirAll(p(name), 0o755)
		for _, split := range []string{"train", "test"} {
			write(filepath.Join(name, split+"_images.npy"), npy("|u1", fmt.Sprintf("3, %d, %d", hw, hw), make([]byte, 3*hw*hw)))
			write(filepath.Join(name, split+"_labels.npy"), npy("|u1", "3,", []byte{0, 1, 2}))
		}
	}
	write("bad.toml", "[study]\ntrials = 3\nsamplr = \"tpe\"\n")
	lenet := p("lenet-half.safetensors")
	tests := []struct {
		name string
		args []string
		code int
		want string // substring of stdout+stderr
	}{
		{"help", []string{"help"}, exitOK, "Commands:"},
		{"no command", nil, exitUsage, "Usage:"},
		{"unknown command", []string{"serch"}, exitUsage, `unknown command "serch"`},
		{"command help", []string{"prune", "--help"}, exitOK, "Structured pruning removes whole channels"},
		{"bad flag", []string{"train", "--epoch", "3"}, exitUsage, "flag provided but not defined: -epoch"},
		{"inspect zoo", []string{"inspect", "zoo:resnet-small"}, exitOK, "layer3.add"},
		{"inspect missing", []string{"inspect", p("nope.safetensors")}, exitUsage, "nope.safetensors: no such file"},
		{"inspect garbage", []string{"inspect", p("garbage.safetensors")}, exitUsage, "not a valid autoprune model file"},
		{"prune groups", []string{"prune", "zoo:resnet-small", "--groups"}, exitOK, "stem,layer1.conv2"},
		{"prune uniform", []string{"prune", "zoo:lenet5", "--uniform", "0.5", "--out", lenet}, exitOK, "params"},
		{"inspect compare", []string{"inspect", lenet, "--compare", "zoo:lenet5"}, exitOK, "(before)"},
		{"prune plan", []string{"prune", "zoo:lenet5", "--plan", p("good-plan.toml"), "--out", p("plan.safetensors")}, exitOK, "saved"},
		{"search a plan", []string{"search", p("good-plan.toml")}, exitUsage, "this is a pruning plan"},
		{"prune bad plan", []string{"prune", "zoo:lenet5", "--plan", p("bad-plan.toml"), "--out", p("x.safetensors")}, exitUsage, "unknown key(s) colour, extra"},
		{"prune unknown group", []string{"prune", "zoo:lenet5", "--plan", p("unknown-group.toml"), "--out", p("x.safetensors")}, exitUsage, `unknown group "conv9"`},
		{"prune ratio", []string{"prune", "zoo:lenet5", "--uniform", "1.5", "--out", p("x.safetensors")}, exitUsage, "want a ratio in [0, 1)"},
		{"prune negative ratio", []string{"prune", "zoo:lenet5", "--uniform=-0.2", "--out", p("x.safetensors")}, exitUsage, "--uniform -0.2: want a ratio in [0, 1)"},
		{"prune NaN ratio", []string{"prune", "zoo:lenet5", "--uniform", "NaN", "--out", p("x.safetensors")}, exitUsage, "--uniform NaN: want a ratio in [0, 1)"},
		{"prune two modes", []string{"prune", "zoo:lenet5", "--uniform", "0.5", "--sparsity", "0.5", "--out", p("x.safetensors")}, exitUsage, "exactly one of"},
		{"prune taylor", []string{"prune", "zoo:vgg-small", "--uniform", "0.5", "--criterion", "taylor", "--out", p("taylor.safetensors")}, exitOK, "saved"},
		{"prune criterion", []string{"prune", "zoo:lenet5", "--uniform", "0.5", "--criterion", "magic", "--out", p("x.safetensors")}, exitUsage, `unknown criterion "magic"`},
		{"prune sparsity", []string{"prune", "zoo:mlp", "--sparsity", "0.9", "--out", p("sparse.safetensors")}, exitOK, "sparsity 90.00 %"},
		{"prune taylor on 3 samples", []string{"prune", "zoo:mlp", "--uniform", "0.5", "--criterion", "taylor", "--dataset", "npy", "--data-dir", p("tiny28"), "--out", p("taylor.safetensors")}, exitOK, "saved"},
		{"train epochs", []string{"train", "--epochs", "-1"}, exitUsage, "--epochs must be positive"},
		{"train model", []string{"train", "--model", "alexnet"}, exitUsage, `unknown model "alexnet"`},
		{"train dataset", []string{"train", "--dataset", "cifar"}, exitUsage, "cifar"},
		{"train prune", []string{"train", "--prune", "random"}, exitUsage, "--prune \"random\""},
		{"train steps", []string{"train", "--model", "mlp", "--steps", "20", "--out", p("mlp.safetensors")}, exitOK, "accuracy"},
		{"train teacher", []string{"train", "--init", p("mlp.safetensors"), "--steps", "10", "--teacher", p("mlp.safetensors"), "--out", p("mlp2.safetensors")}, exitOK, "distilling from"},
		{"train temperature", []string{"train", "--model", "mlp", "--teacher", p("mlp.safetensors"), "--temperature", "0.5"}, exitUsage, "--temperature 0.5: want 1..100"},
		{"train fewer samples than a batch", []string{"train", "--model", "mlp", "--dataset", "npy", "--data-dir", p("tiny28")}, exitUsage, "has 3 samples, fewer than one batch of 64"},
		{"train data shape", []string{"train", "--init", lenet, "--dataset", "npy", "--data-dir", p("tiny14"), "--batch", "2"}, exitUsage, "expects 1x28x28 inputs, the data (npy/train) has 1x14x14 images"},
		{"train out unwritable", []string{"train", "--model", "mlp", "--out", p("no-such-folder/m.safetensors")}, exitUsage, "train: --out"},
		{"train teacher missing", []string{"train", "--model", "mlp", "--steps", "5", "--teacher", p("nope.safetensors")}, exitUsage, "nope.safetensors"},
		{"eval", []string{"eval", p("mlp.safetensors"), "--runs", "5"}, exitOK, "latency   median"},
		{"bench versus", []string{"bench", lenet, "--versus", "zoo:lenet5", "--runs", "5"}, exitOK, "ratio"},
		{"bench command lut", []string{"bench", lenet, "--command", "node runner.js", "--lut", "x.json"}, exitUsage, "at most one of --agent, --command"},
		{"bench versus agent", []string{"bench", lenet, "--versus", "zoo:lenet5", "--macs", "1"}, exitUsage, "at most one of"},
		{"sensitivity", []string{"sensitivity", "zoo:lenet5", "--ratios", "0.5", "--val-samples", "500", "--json", p("s.json")}, exitOK, "max ratio"},
		{"sensitivity plots", []string{"sensitivity", "zoo:lenet5", "--ratios", "0.5", "--val-samples", "500", "--plots", p("splots")}, exitOK, "sensitivity.svg"},
		{"sensitivity plots unwritable", []string{"sensitivity", "zoo:lenet5", "--plots", p("garbage.onnx/x")}, exitUsage, "sensitivity: --plots"},
		{"sensitivity json unwritable", []string{"sensitivity", "zoo:lenet5", "--json", p("no-such-folder/s.json")}, exitUsage, "sensitivity: --json"},
		{"sensitivity ratios", []string{"sensitivity", "zoo:lenet5", "--ratios", "0.5,2"}, exitUsage, `"2" is not a ratio`},
		{"search missing", []string{"search", p("none.toml")}, exitUsage, "no such file"},
		{"search zero trials", []string{"search", p("bad.toml"), "--trials", "0"}, exitUsage, "--trials 0: want at least 1"},
		{"compare json unwritable", []string{"compare", "../../configs/mobile.toml", "--json", p("no-such-folder/c.json")}, exitUsage, "compare: --json"},
		{"compare zero trials", []string{"compare", "../../configs/mobile.toml", "--trials", "0"}, exitUsage, "--trials 0: want at least 1"},
		{"search bad config", []string{"search", p("bad.toml")}, exitUsage, "bad.toml:3: invalid config: unknown key study.samplr"},
		{"export", []string{"export", lenet, "--onnx", p("lenet-half.onnx")}, exitOK, "ONNX opset 13"},
		{"inspect onnx", []string{"inspect", p("lenet-half.onnx"), "--compare", lenet}, exitOK, "(before)"},
		{"prune onnx", []string{"prune", "../../nn/onnx/testdata/torch/resnet-opset17.onnx", "--uniform", "0.5", "--out", p("resnet-half.onnx")}, exitOK, "saved"},
		{"eval onnx", []string{"eval", p("resnet-half.onnx"), "--runs", "5"}, exitOK, "latency   median"},
		{"export no out", []string{"export", lenet}, exitUsage, "--onnx OUT.onnx is required"},
		{"export garbage", []string{"export", p("garbage.onnx"), "--onnx", p("x.onnx")}, exitUsage, "not an ONNX model"},
		{"report missing", []string{"report", p("none.db")}, exitUsage, "no such file"},
		{"report not sqlite", []string{"report", p("garbage.safetensors")}, exitUsage, "not a SQLite database"},
		{"report plots unwritable", []string{"report", p("none.db"), "--plots", p("garbage.onnx/x")}, exitUsage, "report --plots"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := runLatencyCmd(t, tc.args...)
			if code != tc.code || !strings.Contains(out+errs, tc.want) {
				t.Errorf("autoprune %s: exit %d, want %d; want output containing %q\nstdout:\n%s\nstderr:\n%s",
					strings.Join(tc.args, " "), code, tc.code, tc.want, out, errs)
			}
			if strings.Contains(errs, "goroutine ") || strings.Contains(errs, "panic:") {
				t.Errorf("stack trace in output:\n%s", errs)
			}
		})
	}
}

// A small search and its report, and a comparison, end to end through the command line.
func TestSearchReportCompare(t *testing.T) {
	if testing.Short() {
		t.Skip("trains a model and runs studies")
	}
	dir := t.TempDir()
	model := filepath.Join(dir, "mlp.safetensors")
	if code, out, errs := runLatencyCmd(t, "train", "--model", "mlp", "--steps", "150", "--out", model); code != 0 {
		t.Fatalf("train: %d\n%s%s", code, out, errs)
	}
	cfg := filepath.Join(dir, "tiny.toml")
	src := fmt.Sprintf(`
[study]
name = "tiny"
trials = 3
[model]
file = %q
[data]
val_samples = 500
train_samples = 2000
[finetune]
steps = 10
batch = 32
rounds = 1
[latency]
runs = 5
[stopper]
kind = "none"
[final]
steps = 20
`, model)
	if err := os.WriteFile(cfg, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runLatencyCmd(t, "search", cfg)
	if code != 0 || !strings.Contains(out, "pruned (trial") || !strings.Contains(errs, "[3/3]") {
		t.Fatalf("search: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	// Not a terminal: one structured line per message, no control characters.
	if strings.ContainsAny(errs, "\x1b\r") {
		t.Errorf("search output to a non-terminal holds control characters:\n%q", errs)
	}
	for _, l := range strings.Split(strings.TrimSpace(errs), "\n") {
		if !strings.HasPrefix(l, "time=") || !strings.Contains(l, " msg=") {
			t.Errorf("not a log/slog line: %q", l)
		}
	}
	// --json: every line on stdout is a JSON event; the trials and the result are among them.
	code, out, errs = runLatencyCmd(t, "search", cfg, "--trials", "4", "--json")
	if code != 0 || errs != "" {
		t.Fatalf("search --json: exit %d\nstderr:\n%s", code, errs)
	}
	events := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var e struct {
			Msg   string  `json:"msg"`
			Event string  `json:"event"`
			Done  int     `json:"done"`
			Test  float64 `json:"test_acc"`
		}
		if err := json.Unmarshal([]byte(l), &e); err != nil || e.Msg == "" {
			t.Fatalf("search --json: line %q: %v", l, err)
		}
		events[e.Event]++
		if e.Event == "trial" && e.Done != 4 {
			t.Errorf("the resumed study's trial event says done=%d, want 4", e.Done)
		}
		if e.Event == "result" && !(e.Test > 0.5) {
			t.Errorf("result event without the test accuracy: %s", l)
		}
	}
	if events["trial"] != 1 || events["result"] != 1 || events["round"] != 1 || events["finetune"] == 0 {
		t.Errorf("search --json events %v, want one trial, one round, fine-tune steps and one result", events)
	}
	for _, f := range []string{"tiny.db", "tiny-best.safetensors", "tiny-best.plan.toml"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("search left no %s: %v", f, err)
		}
	}
	code, out, errs = runLatencyCmd(t, "report", filepath.Join(dir, "tiny.db"))
	if code != 0 || !strings.Contains(out, "4 complete") || !strings.Contains(out, "(best)") {
		t.Errorf("report: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs = runLatencyCmd(t, "report", filepath.Join(dir, "tiny.db"), "--json")
	if code != 0 || !strings.Contains(out, `"rel_latency"`) {
		t.Errorf("report --json: exit %d\n%s%s", code, out, errs)
	}
	plots, page := filepath.Join(dir, "plots"), filepath.Join(dir, "report.html")
	code, out, errs = runLatencyCmd(t, "report", filepath.Join(dir, "tiny.db"), "--plots", plots, "--html", page)
	if code != 0 || !strings.Contains(errs, "tradeoff.svg") {
		t.Errorf("report --plots --html: exit %d\n%s%s", code, out, errs)
	}
	for _, f := range []string{"tradeoff.png", "tradeoff.svg", "history.png", "history.svg", "plan.png", "plan.svg"} {
		if _, err := os.Stat(filepath.Join(plots, f)); err != nil {
			t.Errorf("report --plots wrote no %s: %v", f, err)
		}
	}
	if b, err := os.ReadFile(page); err != nil || strings.Count(string(b), "<svg") != 3 || !strings.Contains(string(b), "[study]") {
		t.Errorf("report --html: %v, page of %d bytes without the plots or the config", err, len(b))
	}
	// The live view serves the same page, read afresh, and writes nothing.
	before, err := os.ReadFile(filepath.Join(dir, "tiny.db"))
	if err != nil {
		t.Fatal(err)
	}
	store, err := search.OpenExisting(filepath.Join(dir, "tiny.db"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(reportHandler(store, "tiny", "tiny.db"))
	for range 2 {
		resp, err := http.Get(srv.URL + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || strings.Count(string(b), "<svg") != 3 || !strings.Contains(string(b), `http-equiv="refresh"`) {
			t.Errorf("live view: status %d, page of %d bytes without its plots or refresh", resp.StatusCode, len(b))
		}
	}
	if resp, err := http.Get(srv.URL + "/other"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("live view serves /other: %v %v", resp, err)
	}
	srv.Close()
	store.Close()
	if after, err := os.ReadFile(filepath.Join(dir, "tiny.db")); err != nil || !bytes.Equal(before, after) {
		t.Errorf("serving the report changed the study file (%v)", err)
	}
	// The plan it saved is a valid plan file for "prune".
	code, _, errs = runLatencyCmd(t, "prune", model, "--plan", filepath.Join(dir, "tiny-best.plan.toml"), "--out", filepath.Join(dir, "again.safetensors"))
	if code != 0 {
		t.Errorf("prune with the exported plan: exit %d\n%s", code, errs)
	}
	cmpJSON := filepath.Join(dir, "cmp.json")
	code, out, errs = runLatencyCmd(t, "compare", cfg, "--samplers", "random", "--seeds", "1,2", "--uniform", "0.3,0.6", "--trials", "2", "--json", cmpJSON, "--plots", plots)
	if code != 0 || !strings.Contains(out, "uniform") || strings.Count(out, "random") < 3 {
		t.Errorf("compare: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	if _, err := os.Stat(filepath.Join(plots, "compare.svg")); err != nil {
		t.Errorf("compare --plots: %v", err)
	}
	if !strings.Contains(out, "dense model: test acc") || !strings.Contains(out, "can gain at most") {
		t.Errorf("compare: no line on the dense model and the headroom over uniform pruning\n%s", out)
	}
	var cmp struct {
		DenseTest *float64 `json:"dense_test_acc"`
		Rows      []struct {
			Method  string   `json:"method"`
			Winner  int      `json:"winner_trial"`
			TestAcc *float64 `json:"test_acc"`
			Joint   *float64 `json:"rel_latency_joint"`
		} `json:"rows"`
		Uniform []struct {
			Seed    int64   `json:"seed"`
			Rel     float64 `json:"rel_latency"`
			Joint   float64 `json:"rel_latency_joint"`
			TestAcc float64 `json:"test_acc"`
			Fitted  bool    `json:"fitted_to_target"`
		} `json:"uniform"`
	}
	if b, err := os.ReadFile(cmpJSON); err != nil {
		t.Error(err)
	} else if err := json.Unmarshal(b, &cmp); err != nil {
		t.Errorf("compare --json: %v\n%s", err, b)
	} else if len(cmp.Rows) != 2 || cmp.Rows[0].Method != "random" || len(cmp.Uniform) != 6 ||
		(cmp.Rows[0].Winner >= 0) != (cmp.Rows[0].TestAcc != nil) || cmp.Uniform[1].Rel >= cmp.Uniform[0].Rel ||
		cmp.Uniform[1].Fitted || !cmp.Uniform[2].Fitted || cmp.Uniform[0].Seed != 1 || cmp.Uniform[3].Seed != 2 ||
		cmp.DenseTest == nil || *cmp.DenseTest <= 0.5 {
		t.Errorf("compare --json: %d rows, %d uniform points (want three per seed)\n%s", len(cmp.Rows), len(cmp.Uniform), b)
	} else {
		// The winners and the curve measured again side by side.
		for i, r := range cmp.Rows {
			if (r.Winner >= 0) != (r.Joint != nil && *r.Joint > 0) {
				t.Errorf("compare --json: row %d, winner %d, latency measured beside the curve %v", i, r.Winner, r.Joint)
			}
		}
		for i, u := range cmp.Uniform {
			if !(u.Joint > 0) {
				t.Errorf("compare --json: uniform point %d not measured again beside the winners", i)
			}
		}
		if !strings.Contains(out, "again, beside the curve") || !strings.Contains(errs, "measured again side by side") {
			t.Errorf("compare: the joint measurement is neither shown nor logged\n%s\n%s", out, errs)
		}
	}
}

// npy encodes a version 1.0 NumPy file of the given type and shape ("3, 28, 28").
func npy(descr, shape string, data []byte) string {
	h := fmt.Sprintf("{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, shape)
	h += strings.Repeat(" ", 63-(10+len(h))%64) + "\n"
	return "\x93NUMPY\x01\x00" + string([]byte{byte(len(h)), byte(len(h) >> 8)}) + h + string(data)
}
