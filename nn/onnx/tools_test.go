package onnx

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/prune"
)

// The reference tools run where they are installed (.ci/run installs them): ONNX Runtime
// from npm (onnxruntime-node, found through NODE_PATH) and the ONNX checker from Debian's
// python3-onnx. On a machine without them these tests skip and say how to get them.

func needORT(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node is not installed: ONNX Runtime checks skipped")
	}
	if out, err := exec.Command("node", "-e", "require('onnxruntime-node')").CombinedOutput(); err != nil {
		t.Skipf("onnxruntime-node not found (ONNXRUNTIME_NODE_INSTALL=skip npm install onnxruntime-node@1.30.0, then set NODE_PATH to its node_modules): %s", firstLine(out))
	}
}

// python is Debian's interpreter, which has python3-onnx and python3-torch.
const python = "/usr/bin/python3"

func needChecker(t *testing.T) {
	t.Helper()
	if out, err := exec.Command(python, "-c", "import onnx").CombinedOutput(); err != nil {
		t.Skipf("the ONNX checker is not installed (apt-get install python3-onnx): %s", firstLine(out))
	}
}

func firstLine(b []byte) string {
	for i, c := range b {
		if c == '\n' {
			return string(b[:i])
		}
	}
	return string(b)
}

// ortRun runs the model file on x (batch n) with ONNX Runtime and returns its output.
func ortRun(t *testing.T, path string, x []float32, n int, s nn.Shape) ([]int, []float32) {
	t.Helper()
	in := filepath.Join(t.TempDir(), "x.f32")
	raw := make([]byte, 4*len(x))
	for i, v := range x {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	if err := os.WriteFile(in, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", "testdata/ort_run.js", path, in,
		strconv.Itoa(n), strconv.Itoa(s.C), strconv.Itoa(s.H), strconv.Itoa(s.W))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ONNX Runtime on %s: %v", path, err)
	}
	var res struct {
		Dims []int
		Data []float32
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("ONNX Runtime output: %v", err)
	}
	return res.Dims, res.Data
}

// Every zoo model, dense, pruned and masked, exported to ONNX passes the ONNX checker and
// runs in ONNX Runtime with the engine's outputs, at a batch other than the one exported.
func TestExportRunsInOnnxRuntime(t *testing.T) {
	needORT(t)
	needChecker(t)
	dir := t.TempDir()
	for name, model := range testModels(t) {
		for kind, m := range variants(t, model) {
			t.Run(name+"/"+kind, func(t *testing.T) {
				path := filepath.Join(dir, name+"-"+kind+".onnx")
				if err := Save(path, m); err != nil {
					t.Fatal(err)
				}
				if out, err := exec.Command(python, "-c", "import onnx, sys; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True)", path).CombinedOutput(); err != nil {
					t.Fatalf("onnx.checker: %v\n%s", err, out)
				}
				const batch = 3
				x := input(m.Input, batch, 4)
				want := forward(t, m, x, batch)
				dims, got := ortRun(t, path, x, batch, m.Input)
				if dims[0] != batch {
					t.Errorf("ONNX Runtime output dims %v, want batch %d first", dims, batch)
				}
				if d := maxDiff(want, got); d > 1e-4 {
					t.Errorf("ONNX Runtime and the engine differ by %g", d)
				}
			})
		}
	}
}

// torchCase is one network exported by PyTorch (testdata/make_torch.py): its input and
// PyTorch's outputs for it.
type torchCase struct {
	Input  []float32 `json:"input"`
	Shape  []int     `json:"shape"`
	Logits []float32 `json:"logits"`
}

// Networks exported by torch.onnx.export import and reproduce PyTorch's logits. The files
// are made once by testdata/make_torch.py, so this test needs neither PyTorch nor ONNX Runtime.
func TestImportPyTorch(t *testing.T) {
	files, err := filepath.Glob("testdata/torch/*.onnx")
	if err != nil || len(files) == 0 {
		t.Fatalf("no PyTorch exports in testdata/torch (run testdata/make_torch.py): %v", err)
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			m, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := os.ReadFile(path[:len(path)-len(".onnx")] + ".json")
			if err != nil {
				t.Fatal(err)
			}
			var c torchCase
			if err := json.Unmarshal(raw, &c); err != nil {
				t.Fatal(err)
			}
			if want := (nn.Shape{C: c.Shape[1], H: c.Shape[2], W: c.Shape[3]}); m.Input != want {
				t.Fatalf("input %v, want %v", m.Input, want)
			}
			got := forward(t, m, c.Input, c.Shape[0])
			if d := maxDiff(got, c.Logits); d > 1e-4 {
				t.Errorf("logits differ from PyTorch's by %g", d)
			}
			// It prunes like a zoo model: its channel groups are found (through its
			// residual additions and concatenations too), and half of every group removed
			// leaves a smaller model that runs.
			gs, err := prune.Groups(m)
			if err != nil || len(gs) == 0 {
				t.Fatalf("groups: %v (%d)", err, len(gs))
			}
			if whole, err := prune.KeptWhole(m); err != nil || len(whole) > 0 {
				t.Errorf("channels kept whole: %q, %v", whole, err)
			}
			p, err := prune.Structured(m, prune.Uniform(gs, 0.5), prune.L1{})
			if err != nil {
				t.Fatal(err)
			}
			_, before, _ := m.Totals()
			_, after, _ := p.Totals()
			if after >= before {
				t.Errorf("pruned MACs %d, dense %d", after, before)
			}
			if y := forward(t, p, c.Input, c.Shape[0]); len(y) != len(got) {
				t.Errorf("pruned output has %d values, dense %d", len(y), len(got))
			}
		})
	}
}
