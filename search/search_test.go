package search

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"log/slog"
	"math"
	"math/rand"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/c-bata/goptuna"
	"github.com/glebarez/sqlite"
	"gorm.io/gorm"

	"github.com/autoprune/autoprune/config"
	"github.com/autoprune/autoprune/data"
	"github.com/autoprune/autoprune/eval"
	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/nn/onnx"
	"github.com/autoprune/autoprune/nn/zoo"
	"github.com/autoprune/autoprune/objectives"
	"github.com/autoprune/autoprune/prune"
	"github.com/autoprune/autoprune/train"
)

// Worker processes for the crash and multi-worker tests re-run this test binary with
// these variables set.
const (
	envWorkerConfig = "AUTOPRUNE_TEST_WORKER_CONFIG"
	envWorkerLease  = "AUTOPRUNE_TEST_WORKER_LEASE"
)

func TestMain(m *testing.M) {
	if path := os.Getenv(envWorkerConfig); path != "" {
		os.Exit(worker(path))
	}
	os.Exit(m.Run())
}

// worker runs one search process on a config, like "autoprune search --no-final".
func worker(path string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	lease, _ := time.ParseDuration(os.Getenv(envWorkerLease))
	s, err := Open(ctx, cfg, Options{Lease: lease})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer s.Close()
	if err := s.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		if errors.Is(err, context.Canceled) {
			return 130
		}
		return 1
	}
	return 0
}

var (
	baseOnce sync.Once
	baseFile string
	baseErr  error
)

// baseModel trains a small MLP once per test binary on the training part of MNIST and
// saves it, so tests share one base model.
func baseModel(t *testing.T) string {
	t.Helper()
	baseOnce.Do(func() {
		dir, err := os.MkdirTemp("", "autoprune-search-test")
		if err != nil {
			baseErr = err
			return
		}
		full, _, err := data.LoadMNIST()
		if err != nil {
			baseErr = err
			return
		}
		tr, _, _ := full.Split(5000.0/60000, 1)
		m, err := zoo.Build("mlp", nn.Shape{C: 1, H: 28, W: 28}, 10, 1)
		if err != nil {
			baseErr = err
			return
		}
		m, _, err = train.Train(context.Background(), m, tr, train.Config{Steps: 300, LR: 2e-3, Seed: 1})
		if err != nil {
			baseErr = err
			return
		}
		baseFile = filepath.Join(dir, "mlp.safetensors")
		baseErr = nn.Save(baseFile, m)
	})
	if baseErr != nil {
		t.Fatal(baseErr)
	}
	return baseFile
}

// writeConfig writes a small, fast study config and returns its path.
func writeConfig(t *testing.T, dir, name, storage string, trials int, extra string) string {
	t.Helper()
	src := fmt.Sprintf(`
[study]
name = %q
storage = %q
sampler = "tpe"
trials = %d
seed = 7

[model]
file = %q

[data]
dataset = "mnist"
val_samples = 1000
train_samples = 4000

[prune]
max_ratio = 0.8
step = 0.1
fit_target = false

[finetune]
steps = 12
batch = 32
rounds = 2
val_samples = 500

[latency]
runs = 5
warmup = 1

[stopper]
kind = "none"
%s
`, name, storage, trials, baseModel(t), extra)
	path := filepath.Join(dir, name+".toml")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// editConfig replaces the first old with new in the config file at path.
func editConfig(t *testing.T, path, old, new string) {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(src), old) {
		t.Fatalf("%s has no %q", path, old)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(src), old, new, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// openSearch opens the study of the config at path, training its base model first when
// it has none, as "autoprune search" does.
func openSearch(t *testing.T, path string) *Search {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := TrainBase(context.Background(), cfg, Options{Logger: testLogger(t)}); err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), cfg, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

type testWriter struct{ t *testing.T }

// testLogger sends a search's progress to the test log.
func testLogger(t *testing.T) *slog.Logger { return slog.New(slog.NewTextHandler(testWriter{t}, nil)) }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// checkStudy asserts the invariants every finished study must hold: the wanted number of
// finished trials, unique trial numbers, nothing left running or waiting.
func checkStudy(t *testing.T, store *Storage, name string, want int) *Summary {
	t.Helper()
	sum, err := Summarize(store, name)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, tr := range sum.Trials {
		if seen[tr.Number] {
			t.Errorf("trial number %d appears twice", tr.Number)
		}
		seen[tr.Number] = true
	}
	for i := 0; i < len(sum.Trials); i++ {
		if !seen[i] {
			t.Errorf("trial number %d is missing", i)
		}
	}
	done := sum.Counts["complete"] + sum.Counts["pruned"]
	if done < want || done > want+1 {
		t.Errorf("%d finished trials, want %d (counts %v)", done, want, sum.Counts)
	}
	if sum.Counts["running"] != 0 || sum.Counts["waiting"] != 0 {
		t.Errorf("trials left unfinished: %v", sum.Counts)
	}
	return sum
}

func TestSearchEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("trains and fine-tunes models")
	}
	dir := t.TempDir()
	path := writeConfig(t, dir, "e2e", "e2e.db", 5, "")
	s := openSearch(t, path)
	if len(s.Groups()) != 2 {
		t.Fatalf("groups %v", s.Groups())
	}
	if err := s.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	sum := checkStudy(t, s.store, "e2e", 5)
	// The warm-start plans come first: uniform 0.25 (snapped to the 0.1 grid) and 0.5.
	for i, want := range []float64{0.2, 0.5} {
		for g, r := range sum.Trials[i].Plan {
			if r != want {
				t.Errorf("trial %d: group %s ratio %v, want uniform %v", i, g, r, want)
			}
		}
	}
	for _, tr := range sum.Trials {
		m := tr.Metric
		if tr.State != "complete" || m == nil {
			t.Fatalf("trial %d: %s %s", tr.Number, tr.State, tr.Error)
		}
		if m.Accuracy < 0.5 || m.RelLatency <= 0 || m.MACs >= s.Dense().MACs || m.Bytes <= 0 || tr.Steps != 12 {
			t.Errorf("trial %d: implausible metrics %+v (steps %d)", tr.Number, m, tr.Steps)
		}
	}
	if sum.Best == nil {
		t.Fatal("no best trial")
	}
	// Resuming with more trials completes the total; the first ones are not repeated.
	cfg, _ := config.Load(path)
	cfg.Study.Trials = 7
	s2, err := Open(context.Background(), cfg, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if err := s2.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkStudy(t, s2.store, "e2e", 7)
	// Final fine-tuning and export, of the best trial and the rest of the Pareto front.
	cfg.Final.Steps = 30
	cfg.Final.Pareto = true
	res, err := s2.Finalize(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.TestAcc < 0.5 || res.Metrics.MACs >= res.Dense.MACs {
		t.Errorf("final: %+v", res)
	}
	saved, err := nn.Load(res.ModelPath)
	if err != nil {
		t.Errorf("saved model: %v", err)
	}
	if exported, err := onnx.Load(res.ONNXPath); err != nil || saved == nil || exported.Hash() != saved.Hash() {
		t.Errorf("winner as ONNX (%s): %v", res.ONNXPath, err)
	}
	if b, err := os.ReadFile(res.PlanPath); err != nil || !strings.Contains(string(b), "[ratios]") {
		t.Errorf("saved plan: %v %q", err, b)
	}
	if fi, err := os.Stat(res.PlanPath); err != nil {
		t.Error(err)
	} else if fi.Mode().Perm() != 0o644 {
		t.Errorf("plan file mode %v, want 0644 like the model", fi.Mode().Perm())
	}
	front := 0
	for _, tr := range summaryOf(t, s2).Trials {
		if tr.Pareto && tr.Number != res.Trial {
			front++
		}
	}
	if len(res.Front) != front {
		t.Errorf("%d Pareto models exported, the front has %d trials besides the winner", len(res.Front), front)
	}
	for _, f := range res.Front {
		if _, err := nn.Load(f.ModelPath); err != nil {
			t.Errorf("Pareto model: %v", err)
		}
	}
}

func TestSameSeedSameTrials(t *testing.T) {
	if testing.Short() {
		t.Skip("trains and fine-tunes models")
	}
	// The MACs meter makes the objective exact (a measured latency carries timing noise,
	// which TPE would follow once its startup trials are done), and 9 trials take TPE past
	// its 6 random startup trials, so the model-based proposals are compared too.
	var plans [2][]string
	var accs, values [2][]float64
	for i := range plans {
		dir := t.TempDir()
		path := writeConfig(t, dir, "det", "det.db", 9, "")
		editConfig(t, path, "[latency]\n", "[latency]\nmeter = \"macs\"\n")
		s := openSearch(t, path)
		if err := s.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		sum := checkStudy(t, s.store, "det", 9)
		for _, tr := range sum.Trials {
			plans[i] = append(plans[i], fmt.Sprint(tr.Plan))
			accs[i] = append(accs[i], tr.Metric.Accuracy)
			values[i] = append(values[i], tr.Value)
		}
	}
	// The proxy is calibrated on a measurement of the dense model, so its latencies (and the
	// scores of trials over the target) differ in the fifth digit between runs; the plans and
	// accuracies must not.
	close := len(values[0]) == len(values[1])
	for i := 0; close && i < len(values[0]); i++ {
		close = math.Abs(values[0][i]-values[1][i]) <= 1e-3*math.Abs(values[0][i])
	}
	if fmt.Sprint(plans[0]) != fmt.Sprint(plans[1]) || fmt.Sprint(accs[0]) != fmt.Sprint(accs[1]) || !close {
		t.Errorf("same seed, different studies:\n%v %v %v\n%v %v %v", plans[0], accs[0], values[0], plans[1], accs[1], values[1])
	}
}

// startWorker runs a search process on a config.
func startWorker(t *testing.T, path string, lease time.Duration) (*exec.Cmd, *strings.Builder) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envWorkerConfig+"="+path, envWorkerLease+"="+lease.String())
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, &out
}

// waitRunning polls the study until a trial is running with its plan stored.
func waitRunning(t *testing.T, dbPath, name string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if store, err := OpenExisting(dbPath); err == nil {
			id, err := store.st.GetStudyIDFromName(name)
			if err == nil {
				ts, _ := store.st.GetAllTrials(id)
				for _, tr := range ts {
					if tr.State == goptuna.TrialStateRunning && tr.UserAttrs[attrPlan] != "" && tr.Number >= 1 {
						store.Close()
						return
					}
				}
			}
			store.Close()
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no trial started running within %s", timeout)
}

func TestKillAndResume(t *testing.T) {
	if testing.Short() {
		t.Skip("runs search processes")
	}
	dir := t.TempDir()
	path := writeConfig(t, dir, "crash", "crash.db", 5, "")
	db := filepath.Join(dir, "crash.db")
	cmd, out := startWorker(t, path, 3*time.Second)
	waitRunning(t, db, "crash", 2*time.Minute)
	if err := cmd.Process.Kill(); err != nil { // kill -9 in the middle of a trial
		t.Fatal(err)
	}
	cmd.Wait()
	t.Logf("killed worker said:\n%s", out)
	cmd, out = startWorker(t, path, 3*time.Second)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("resumed worker: %v\n%s", err, out)
	}
	store, err := OpenExisting(db)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	sum := checkStudy(t, store, "crash", 5)
	if sum.Counts["fail"] != 1 {
		t.Errorf("want exactly the killed trial failed, counts %v", sum.Counts)
	}
	var killed *TrialResult
	for i := range sum.Trials {
		if sum.Trials[i].State == "fail" {
			killed = &sum.Trials[i]
		}
	}
	if killed == nil || !strings.Contains(killed.Error, "stale") {
		t.Fatalf("killed trial not marked stale: %+v", killed)
	}
	retried := false
	for _, tr := range sum.Trials {
		if tr.Number > killed.Number && tr.State == "complete" && fmt.Sprint(tr.Plan) == fmt.Sprint(killed.Plan) {
			retried = true
		}
	}
	if !retried {
		t.Errorf("the killed trial's plan %v was not tried again", killed.Plan)
	}
	checkIntegrity(t, db)
}

// checkIntegrity runs SQLite's own consistency check on the study file.
func checkIntegrity(t *testing.T, path string) {
	t.Helper()
	store, err := OpenExisting(path)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	var res string
	if err := store.db.Raw("PRAGMA integrity_check").Scan(&res).Error; err != nil || res != "ok" {
		t.Errorf("integrity check: %q %v", res, err)
	}
}

func TestInterruptIsResumable(t *testing.T) {
	if testing.Short() {
		t.Skip("runs search processes")
	}
	dir := t.TempDir()
	path := writeConfig(t, dir, "intr", "intr.db", 4, "")
	db := filepath.Join(dir, "intr.db")
	cmd, out := startWorker(t, path, 3*time.Second)
	waitRunning(t, db, "intr", 2*time.Minute)
	cmd.Process.Signal(os.Interrupt)
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("interrupted worker: %v, want exit code 130\n%s", err, out)
	}
	cmd, out = startWorker(t, path, 3*time.Second)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("resumed worker: %v\n%s", err, out)
	}
	store, err := OpenExisting(db)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	checkStudy(t, store, "intr", 4)
}

func runWorkers(t *testing.T, path string, n int) {
	t.Helper()
	var cmds []*exec.Cmd
	var outs []*strings.Builder
	for i := 0; i < n; i++ {
		c, o := startWorker(t, path, 30*time.Second)
		cmds, outs = append(cmds, c), append(outs, o)
	}
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Errorf("worker %d: %v\n%s", i, err, outs[i])
		}
	}
}

func TestTwoWorkersSQLite(t *testing.T) {
	if testing.Short() {
		t.Skip("runs search processes")
	}
	dir := t.TempDir()
	// Enough trials that the second worker, which waits for the first to make the study,
	// still finds some to run on a busy machine.
	path := writeConfig(t, dir, "pair", "pair.db", 20, "")
	runWorkers(t, path, 2)
	store, err := OpenExisting(filepath.Join(dir, "pair.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	sum := checkStudy(t, store, "pair", 20)
	workers := map[string]bool{}
	for _, tr := range sum.Trials {
		workers[tr.Worker] = true
	}
	if len(workers) != 2 {
		t.Errorf("trials ran on %d workers, want 2", len(workers))
	}
	checkIntegrity(t, filepath.Join(dir, "pair.db"))
}

// TestTwoWorkersServer runs two worker processes on one study held by each database server
// the machine offers; a server that is not reachable is skipped with a message.
func TestTwoWorkersServer(t *testing.T) {
	if testing.Short() {
		t.Skip("runs search processes")
	}
	for _, tc := range []struct{ name, url string }{
		{"postgres", "postgres://127.0.0.1:5432/test?sslmode=disable"},
		{"mysql", "mysql://root@127.0.0.1:3306/test"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store, err := OpenStorage(tc.url)
			if err != nil {
				t.Skipf("%s is not reachable at %s (%v): skipping the multi-worker test on it", tc.name, tc.url, err)
			}
			name := fmt.Sprintf("%s-%d", tc.name, time.Now().UnixNano())
			defer func() {
				if id, err := store.st.GetStudyIDFromName(name); err == nil {
					store.st.DeleteStudy(id)
				}
				store.Close()
			}()
			// As many trials as on SQLite, for the same reason: the second worker waits for
			// the first to make the study, and must still find trials to run.
			path := writeConfig(t, t.TempDir(), name, tc.url, 20, "")
			runWorkers(t, path, 2)
			sum := checkStudy(t, store, name, 20)
			workers := map[string]bool{}
			for _, tr := range sum.Trials {
				workers[tr.Worker] = true
			}
			if len(workers) != 2 {
				t.Errorf("trials ran on %d workers, want 2", len(workers))
			}
		})
	}
}

func TestMySQLDSN(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"mysql://root@127.0.0.1:3306/test", "root@tcp(127.0.0.1:3306)/test?parseTime=true", ""},
		{"mysql://u:p%40ss@db.example/studies?tls=true", "u:p@ss@tcp(db.example:3306)/studies?parseTime=true&tls=true", ""},
		{"mysql://h:3307/", "", "want mysql://"},
		{"mysql://h/a/b", "", "want mysql://"},
	} {
		got, err := mysqlDSN(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want one containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: got %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func summaryOf(t *testing.T, s *Search) *Summary {
	t.Helper()
	sum, err := s.Summary()
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

// Studies that differ only in their seed share the validation split: the base model was
// trained on the training part of it, so validating on another split would score it on
// samples it has seen.
func TestSplitIgnoresStudySeed(t *testing.T) {
	if testing.Short() {
		t.Skip("loads data and measures the base model")
	}
	dir := t.TempDir()
	var vals [][]float32
	for _, seed := range []int{7, 8} {
		path := writeConfig(t, dir, fmt.Sprintf("seed%d", seed), fmt.Sprintf("seed%d.db", seed), 1, "")
		editConfig(t, path, "seed = 7", fmt.Sprintf("seed = %d", seed))
		s := openSearch(t, path)
		vals = append(vals, s.valSet.Images)
	}
	if len(vals[0]) != len(vals[1]) {
		t.Fatalf("validation sets of %d and %d values", len(vals[0]), len(vals[1]))
	}
	for i := range vals[0] {
		if vals[0][i] != vals[1][i] {
			t.Fatalf("seeds 7 and 8 validate on different samples (first difference at value %d)", i)
		}
	}
}

// CMA-ES starts from the uniform plan whose measured latency is closest to the target.
func TestStartNearTarget(t *testing.T) {
	if testing.Short() {
		t.Skip("loads data and measures models")
	}
	dir := t.TempDir()
	path := writeConfig(t, dir, "cma", "cma.db", 1, "[objective]\nkind = \"mnas-hard\"\ntarget = \"0.6x\"\n")
	editConfig(t, path, `sampler = "tpe"`, `sampler = "cmaes"`)
	s := openSearch(t, path)
	x0, _, err := s.nearTarget(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(x0) != len(s.space) {
		t.Fatalf("start point %v, want one ratio for each of %d groups", x0, len(s.space))
	}
	var r float64
	for _, v := range x0 {
		r = v
	}
	for name, v := range x0 {
		if v != r {
			t.Errorf("start point %v is not uniform (%s)", x0, name)
		}
	}
	// It is the least pruned uniform plan of the grid that meets the target, as measured
	// (from the same cache).
	rel := func(r float64) float64 {
		plan := prune.Plan{}
		for name := range s.space {
			plan[name] = r
		}
		m, err := prune.Structured(s.base, plan, s.crit)
		if err != nil {
			t.Fatal(err)
		}
		_, rel, err := s.latency(context.Background(), m)
		if err != nil {
			t.Fatal(err)
		}
		return rel
	}
	if got := rel(r); got > 0.6 {
		t.Errorf("start %.1f measures %.3fx, over the target 0.6x", r, got)
	}
	for k := 0; float64(k)/10 < r-1e-9; k++ {
		if o := float64(k) / 10; rel(o) <= 0.6 {
			t.Errorf("start %.1f, but the less pruned %.1f already meets the target (%.3fx)", r, o, rel(o))
		}
	}
	if r <= 0 || r > 0.8 {
		t.Errorf("start ratio %v outside (0, 0.8]", r)
	}
}

// finetune.distill_weight = 0 fine-tunes on the labels alone, and differs from distillation.
func TestLabelsOnlyFinetune(t *testing.T) {
	if testing.Short() {
		t.Skip("fine-tunes models")
	}
	acc := map[string]float64{}
	for _, w := range []string{"0", "0.7"} {
		dir := t.TempDir()
		path := writeConfig(t, dir, "labels", "labels.db", 1, "")
		editConfig(t, path, "rounds = 2", "rounds = 2\ndistill_weight = "+w)
		editConfig(t, path, "[latency]\n", "[latency]\nmeter = \"macs\"\n")
		s := openSearch(t, path)
		if err := s.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		sum, err := s.Summary()
		if err != nil {
			t.Fatal(err)
		}
		m := sum.Trials[0].Metric
		if m == nil || m.Accuracy < 0.5 {
			t.Fatalf("distill_weight %s: trial %+v", w, sum.Trials[0])
		}
		acc[w] = m.Accuracy
	}
	if acc["0"] == acc["0.7"] {
		t.Errorf("labels-only and distillation fine-tunes gave the same accuracy %v: the weight is ignored", acc["0"])
	}
}

// writeRGBFolder writes an image folder of 10 classes of 3x32x32 PNG images: each class
// a colour and a bar at its own place, with seeded noise.
func writeRGBFolder(t *testing.T, dir string, train, test int) {
	t.Helper()
	r := rand.New(rand.NewSource(1))
	for k := 0; k < 10; k++ {
		for i := 0; i < train+test; i++ {
			img := image.NewRGBA(image.Rect(0, 0, 32, 32))
			for y := 0; y < 32; y++ {
				for x := 0; x < 32; x++ {
					v := func(base int) uint8 { return uint8(max(0, min(255, base+r.Intn(60)-30))) }
					c := color.RGBA{v(25 * k), v(255 - 25*k), v(128), 255}
					if x/3 == k {
						c = color.RGBA{v(240), v(240), v(240), 255}
					}
					img.Set(x, y, c)
				}
			}
			split := "train"
			if i >= train {
				split = "test"
			}
			path := filepath.Join(dir, split, fmt.Sprintf("class%02d", k), fmt.Sprintf("%03d.png", i))
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			f, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := png.Encode(f, img); err != nil {
				t.Fatal(err)
			}
			f.Close()
		}
	}
}

// A user's own RGB images at 3x32x32 with 10 classes: the zoo model takes the data's
// shape, trains, and the search prunes and delivers it.
func TestSearchImageFolderRGB(t *testing.T) {
	if testing.Short() {
		t.Skip("trains and fine-tunes models")
	}
	dir := t.TempDir()
	writeRGBFolder(t, filepath.Join(dir, "shapes"), 30, 8)
	src := `
[study]
name = "rgb"
trials = 3
seed = 3
[model]
zoo = "lenet5"
train_epochs = 10
[data]
dataset = "folder"
dir = "shapes"
val_samples = 100
mean = [0.5]
std = [0.25]
[finetune]
steps = 10
batch = 16
rounds = 1
[latency]
runs = 5
warmup = 1
[objective]
kind = "mnas-hard"
target = "0.7x"
[stopper]
kind = "none"
[final]
steps = 60
candidates = 2
`
	path := filepath.Join(dir, "rgb.toml")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	// Open alone trains nothing: it names TrainBase.
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(context.Background(), cfg, Options{Meter: &fakeDevice{}, Logger: testLogger(t)}); err == nil || !strings.Contains(err.Error(), "TrainBase") {
		t.Errorf("Open without a base model: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "lenet5-shapes.safetensors")); err == nil {
		t.Error("Open trained a base model")
	}
	s := openWith(t, path, Options{Meter: &fakeDevice{}})
	if in := s.Base().Input; in != (nn.Shape{C: 3, H: 32, W: 32}) {
		t.Fatalf("base model input %v, want 3x32x32", in)
	}
	if _, err := os.Stat(filepath.Join(dir, "lenet5-shapes.safetensors")); err != nil {
		t.Errorf("cached base model: %v", err)
	}
	if err := s.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	res, err := s.Finalize(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.TestAcc < 0.5 || res.Metrics.MACs >= res.Dense.MACs || res.Miss != "" {
		t.Errorf("winner: test accuracy %.2f, MACs %d (dense %d), %q", res.TestAcc, res.Metrics.MACs, res.Dense.MACs, res.Miss)
	}
	back, err := onnx.Load(res.ONNXPath)
	if err != nil || back.Input != s.Base().Input {
		t.Errorf("winner as ONNX: %v", err)
	}
	// A model file whose input does not fit the data is refused before any work.
	editConfig(t, path, `zoo = "lenet5"`, fmt.Sprintf("file = %q", baseModel(t)))
	cfg, err = config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(context.Background(), cfg, Options{Logger: testLogger(t)})
	if !errors.Is(err, config.ErrConfig) || !strings.Contains(err.Error(), "expects 1x28x28 inputs, but the data (shapes/train:train) has 3x32x32 images") {
		t.Errorf("model and data that do not fit: %v", err)
	}
}

// A latency runner in the command protocol (eval.CommandMeter) that reports each ONNX
// file's size in nanoseconds: a real process, reading the exported models.
const sizeRunner = `models=""; runs=1
while [ $# -gt 1 ]; do case "$1" in --models) models="$2";; --runs) runs="$2";; esac; shift 2; done
i=0
for f in $(echo "$models" | tr , ' '); do
  s=$(wc -c < "$f"); r=0
  while [ $r -lt $runs ]; do echo "$i 0.$(printf %09d $s)"; r=$((r+1)); done
  i=$((i+1))
done`

// meter = "command": the search exports every candidate and the dense model to ONNX and
// scores the latency the runner reports.
func TestSearchCommandMeter(t *testing.T) {
	if testing.Short() {
		t.Skip("fine-tunes models")
	}
	dir := t.TempDir()
	path := writeConfig(t, dir, "cmd", "cmd.db", 3, "[objective]\nkind = \"mnas-hard\"\ntarget = \"0.6x\"\n[final]\nsteps = 5\n")
	editConfig(t, path, "[latency]\n", fmt.Sprintf("[latency]\nmeter = \"command\"\ncommand = [\"sh\", \"-c\", %q, \"runner\"]\n", sizeRunner))
	s := openSearch(t, path)
	if err := s.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	sum := summaryOf(t, s)
	for _, tr := range sum.Trials {
		if tr.Metric == nil || !strings.Contains(tr.Metric.Latency.Device.CPU, "via runner") {
			t.Fatalf("trial %d: %+v", tr.Number, tr.Metric)
		}
		cand, err := prune.Structured(s.base, tr.Plan, s.crit)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := onnx.Marshal(cand)
		d, _ := onnx.Marshal(s.base)
		if want := float64(len(b)) / float64(len(d)); math.Abs(tr.Metric.RelLatency-want) > 1e-9 {
			t.Errorf("trial %d: latency ratio %v, the runner's sizes give %v", tr.Number, tr.Metric.RelLatency, want)
		}
	}
}

// Reading a study changes nothing: not a foreign SQLite file, not an empty file, not a
// study (no -wal or -shm file is left behind either).
func TestOpenExistingReadsOnly(t *testing.T) {
	dir := t.TempDir()
	fingerprint := func() map[string]string {
		out := map[string]string{}
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
			out[e.Name()] = fmt.Sprintf("%x", sha256.Sum256(b))
		}
		return out
	}
	// A foreign SQLite database (rollback journal, as most are), and an empty file.
	foreign := filepath.Join(dir, "foreign.db")
	fdb, err := gorm.Open(sqlite.Open(foreign), &gorm.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := fdb.Exec("CREATE TABLE notes (x TEXT)").Error; err != nil {
		t.Fatal(err)
	}
	if sqlDB, err := fdb.DB(); err == nil {
		sqlDB.Close()
	}
	if err := os.WriteFile(filepath.Join(dir, "empty.db"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// A real study.
	study := filepath.Join(dir, "study.db")
	st, err := OpenStorage(study)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.st.CreateNewStudy("s"); err != nil {
		t.Fatal(err)
	}
	st.Close()
	before := fingerprint()
	for name, want := range map[string]string{"foreign.db": "holds no study", "empty.db": "the file is empty"} {
		if s, err := OpenExisting(filepath.Join(dir, name)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error containing %q", name, err, want)
			if s != nil {
				s.Close()
			}
		}
	}
	s, err := OpenExisting(study)
	if err != nil {
		t.Fatal(err)
	}
	if names, err := s.StudyNames(); err != nil || len(names) != 1 {
		t.Errorf("studies %v, %v", names, err)
	}
	s.Close()
	// A study in WAL mode gets SQLite's shared-memory files for the reader; a foreign
	// database keeps its journal mode.
	after := fingerprint()
	if _, ok := after["foreign.db-wal"]; ok {
		t.Error("the foreign database was switched to WAL mode")
	}
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s changed by reading it", k)
		}
	}
}

// The groups of a model with 100 prunable groups, a trial's long metrics: attribute values
// far over the varchar(2048) of goptuna's tables on PostgreSQL and MySQL are stored and
// read back whole, on every kind of storage.
func TestLongAttributes(t *testing.T) {
	var groups []prune.Group
	for i := 0; i < 100; i++ {
		groups = append(groups, prune.Group{Name: fmt.Sprintf("stage%d.block%d.conv2·ß", i/10, i), Size: 64 + i,
			Producers: []string{fmt.Sprintf("stage%d.block%d.conv2", i/10, i), fmt.Sprintf("stage%d.block%d.bn2", i/10, i)}})
	}
	long, err := json.Marshal(groups)
	if err != nil {
		t.Fatal(err)
	}
	if len(long) < 5000 {
		t.Fatalf("the value is only %d bytes", len(long))
	}
	for _, tc := range []struct{ name, url string }{
		{"sqlite", filepath.Join(t.TempDir(), "long.db")},
		{"postgres", "postgres://127.0.0.1:5432/test?sslmode=disable"},
		{"mysql", "mysql://root@127.0.0.1:3306/test"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store, err := OpenStorage(tc.url)
			if err != nil {
				t.Skipf("%s is not reachable at %s (%v)", tc.name, tc.url, err)
			}
			defer store.Close()
			name := fmt.Sprintf("long-%d", time.Now().UnixNano())
			id, err := store.st.CreateNewStudy(name)
			if err != nil {
				t.Fatal(err)
			}
			defer store.st.DeleteStudy(id)
			if err := store.st.SetStudyUserAttr(id, studyAttrGroups, string(long)); err != nil {
				t.Fatal(err)
			}
			if err := store.st.SetStudyUserAttr(id, "short", "x"); err != nil {
				t.Fatal(err)
			}
			trial, err := store.st.CreateNewTrial(id)
			if err != nil {
				t.Fatal(err)
			}
			if err := store.st.SetTrialUserAttr(trial, attrMetrics, string(long)); err != nil {
				t.Fatal(err)
			}
			attrs, err := store.st.GetStudyUserAttrs(id)
			if err != nil || attrs[studyAttrGroups] != string(long) || attrs["short"] != "x" || len(attrs) != 2 {
				t.Errorf("study attributes read back: %d keys, groups of %d bytes (want %d), %v", len(attrs), len(attrs[studyAttrGroups]), len(long), err)
			}
			all, err := store.st.GetAllTrials(id)
			if err != nil || len(all) != 1 || all[0].UserAttrs[attrMetrics] != string(long) || len(all[0].UserAttrs) != 1 {
				t.Errorf("trial attributes read back wrong: %v", err)
			}
			one, err := store.st.GetTrial(trial)
			if err != nil || one.UserAttrs[attrMetrics] != string(long) {
				t.Errorf("GetTrial: %v", err)
			}
		})
	}
}

// Outputs that cannot be written are refused before any work, naming the key.
func TestOutputsCheckedFirst(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "afile")
	if err := os.WriteFile(blocker, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for key, line := range map[string]string{
		"final.out":     "[final]\nout = \"afile/sub/best.safetensors\"\n",
		"study.storage": "", // set below
	} {
		path := writeConfig(t, dir, "out", "out.db", 2, line)
		if key == "study.storage" {
			editConfig(t, path, `storage = "out.db"`, `storage = "afile/sub/s.db"`)
		}
		cfg, err := config.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err = Open(context.Background(), cfg, Options{Logger: testLogger(t)})
		if !errors.Is(err, config.ErrConfig) || !strings.Contains(err.Error(), key+": cannot write in folder") {
			t.Errorf("%s: %v", key, err)
		}
		if time.Since(start) > 2*time.Second {
			t.Errorf("%s: refused only after %s", key, time.Since(start))
		}
	}
}

// What a config names is read before the data and the model: a mistake there is a config
// error, found at once.
func TestConfigMistakesFoundFirst(t *testing.T) {
	dir := t.TempDir()
	// want is the error's text after "config PATH:LINE: invalid config: ", and at the line
	// that sets the key named in it.
	for _, tc := range []struct{ name, extra, storage, want, at string }{
		{"objective kind", "[objective]\nkind = \"fastest\"\n", "", "objective.kind: ", `kind = "fastest"`},
		{"storage scheme", "", "foo://x/y", "study.storage: storage foo://x/y: unsupported scheme", `storage = "foo://x/y"`},
		{"lut file", "", "", "latency.lut: ", `lut = "missing-lut.json"`},
		{"lut batch", "", "", "latency.lut: the table was profiled at batch 4 with 1 thread(s)", `lut = "batch4-lut.json"`},
		{"sensitivity file", "", "", "prune.sensitivity: ", `sensitivity = "missing.json"`},
		{"include group", "", "", `prune.include: unknown group "conv9"`, `include = ["conv9"]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, dir, "m", "m.db", 2, tc.extra)
			switch tc.name {
			case "storage scheme":
				editConfig(t, path, `storage = "m.db"`, `storage = "foo://x/y"`)
			case "lut file":
				editConfig(t, path, "[latency]\n", "[latency]\nmeter = \"lut\"\nlut = \"missing-lut.json\"\n")
			case "lut batch":
				if err := eval.NewLUT(eval.Device{OS: "linux"}, 4, 1).Save(filepath.Join(dir, "batch4-lut.json")); err != nil {
					t.Fatal(err)
				}
				editConfig(t, path, "[latency]\n", "[latency]\nmeter = \"lut\"\nlut = \"batch4-lut.json\"\n")
			case "sensitivity file":
				editConfig(t, path, "[prune]\n", "[prune]\nsensitivity = \"missing.json\"\n")
			case "include group":
				editConfig(t, path, "[prune]\n", "[prune]\ninclude = [\"conv9\"]\n")
			}
			want := fmt.Sprintf("config %s:%d: invalid config: %s", path, lineWith(t, path, tc.at), tc.want)
			cfg, err := config.Load(path)
			if err != nil {
				if tc.name == "objective kind" && strings.Contains(err.Error(), "objective.kind") {
					return // refused when the file is read: earlier still
				}
				t.Fatal(err)
			}
			start := time.Now()
			_, err = Open(context.Background(), cfg, Options{Logger: testLogger(t)})
			if !errors.Is(err, config.ErrConfig) || !strings.HasPrefix(err.Error(), want) {
				t.Errorf("error\n %v\nwant a config error starting\n %s", err, want)
			}
			// The groups need the model (and so the data); everything else is read first.
			if d := time.Since(start); d > 2*time.Second && tc.name != "include group" {
				t.Errorf("found after %s", d)
			}
		})
	}
	// A misspelt group is refused before the base model is trained, not after.
	t.Run("include group, base model to train", func(t *testing.T) {
		path := writeConfig(t, dir, "b", "b.db", 2, "")
		editConfig(t, path, "[model]\n", "[model]\nzoo = \"lenet5\"\n")
		editConfig(t, path, fmt.Sprintf("file = %q", baseModel(t)), `file = "untrained.safetensors"`)
		editConfig(t, path, "[prune]\n", "[prune]\nexclude = [\"conv1\", \"conv9\"]\n")
		cfg, err := config.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		trained, err := TrainBase(context.Background(), cfg, Options{Logger: testLogger(t)})
		want := fmt.Sprintf("config %s:%d: invalid config: prune.exclude: unknown group \"conv9\"", path, lineWith(t, path, "exclude = "))
		if trained || !errors.Is(err, config.ErrConfig) || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("TrainBase: %v, %v; want a config error starting %s", trained, err, want)
		}
		if _, err := os.Stat(filepath.Join(dir, "untrained.safetensors")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the base model was written: %v", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("found after %s", d)
		}
	})
}

// lineWith returns the number of the first line of the file that contains s.
func lineWith(t *testing.T, path, s string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) {
			return i + 1
		}
	}
	t.Fatalf("%s has no line with %q", path, s)
	return 0
}

// A study resumed with another objective is refused: its stored scores would not compare.
func TestResumeWithAnotherObjective(t *testing.T) {
	if testing.Short() {
		t.Skip("fine-tunes models")
	}
	dir := t.TempDir()
	path := writeConfig(t, dir, "obj", "obj.db", 2, "[objective]\nkind = \"mnas-hard\"\ntarget = \"0.6x\"\n")
	s := openWith(t, path, Options{Meter: &fakeDevice{}})
	if err := s.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.Close()
	editConfig(t, path, `target = "0.6x"`, `target = "0.9x"`)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(context.Background(), cfg, Options{Meter: &fakeDevice{}, Logger: testLogger(t)})
	if !errors.Is(err, config.ErrConfig) || !strings.Contains(err.Error(), `study obj was scored with objective mnas-hard, target "0.6x", this config gives objective mnas-hard, target "0.9x"`) {
		t.Errorf("resumed with another target: %v", err)
	}
	// An objective given in Go is stored by its name too, and told from the config's.
	editConfig(t, path, `target = "0.9x"`, `target = "0.6x"`)
	if cfg, err = config.Load(path); err != nil {
		t.Fatal(err)
	}
	custom := objectives.Func(func(m eval.Metrics) (float64, error) { return m.Accuracy, nil })
	_, err = Open(context.Background(), cfg, Options{Meter: &fakeDevice{}, Objective: custom, Logger: testLogger(t)})
	if !errors.Is(err, config.ErrConfig) || !strings.Contains(err.Error(), `this config gives objective custom (given in Go)`) {
		t.Errorf("resumed with an objective given in Go: %v", err)
	}
}

// Nil arguments are errors, not panics.
func TestNilArguments(t *testing.T) {
	cfg := config.Default()
	if _, err := Open(nil, cfg, Options{}); err == nil || !strings.Contains(err.Error(), "nil context") {
		t.Errorf("Open(nil ctx): %v", err)
	}
	if _, err := TrainBase(nil, cfg, Options{}); err == nil || !strings.Contains(err.Error(), "nil context") {
		t.Errorf("TrainBase(nil ctx): %v", err)
	}
	if _, err := Open(context.Background(), nil, Options{}); !errors.Is(err, config.ErrConfig) {
		t.Errorf("Open(nil config): %v", err)
	}
}

// Every name the config accepts for study.sampler and stopper.kind makes a study (one list
// per concept, in config; the search builds each), and a name outside them is refused
// rather than run as some default.
func TestEveryConfiguredNameBuilds(t *testing.T) {
	if testing.Short() {
		t.Skip("opens studies")
	}
	dir := t.TempDir()
	for i, sampler := range config.Samplers {
		stopper := config.Stoppers[i%len(config.Stoppers)]
		name := fmt.Sprintf("n%d", i)
		path := writeConfig(t, dir, name, name+".db", 2, "")
		editConfig(t, path, `sampler = "tpe"`, fmt.Sprintf("sampler = %q", sampler))
		editConfig(t, path, `kind = "none"`, fmt.Sprintf("kind = %q", stopper))
		s := openWith(t, path, Options{Meter: &fakeDevice{}})
		if s.study == nil {
			t.Errorf("sampler %s, stopper %s: no study", sampler, stopper)
		}
	}
	path := writeConfig(t, dir, "bogus", "bogus.db", 2, "")
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Study.Sampler = "bayes" // changed in Go, past the file's validation
	if _, err := Open(context.Background(), cfg, Options{Meter: &fakeDevice{}, Logger: testLogger(t)}); err == nil || !strings.Contains(err.Error(), `study.sampler: "bayes" is not one of`) {
		t.Errorf("sampler bayes: %v", err)
	}
}

// A study its maker left half made (no groups, no trials) is made again by the next
// worker: at once when the maker's heartbeat is stale, not after a long wait.
func TestHalfMadeStudyMadeAgain(t *testing.T) {
	if testing.Short() {
		t.Skip("opens a study")
	}
	dir := t.TempDir()
	path := writeConfig(t, dir, "half", "half.db", 2, "")
	store, err := OpenStorage(filepath.Join(dir, "half.db"))
	if err != nil {
		t.Fatal(err)
	}
	study, err := goptuna.CreateStudy("half", goptuna.StudyOptionStorage(store.st),
		goptuna.StudyOptionDirection(goptuna.StudyDirectionMaximize), goptuna.StudyOptionLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := study.SetUserAttr(studyAttrMaking, strconv.FormatInt(time.Now().Add(-time.Hour).UnixMilli(), 10)); err != nil {
		t.Fatal(err)
	}
	store.Close()
	start := time.Now()
	s := openWith(t, path, Options{Meter: &fakeDevice{}})
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("made again after %s", d)
	}
	attrs, err := s.study.GetUserAttrs()
	if err != nil || attrs[studyAttrGroups] == "" {
		t.Errorf("the study has no groups after Open: %v", err)
	}
	if err := s.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// A storage that fails in the middle of a study stops the search with the storage's
// error: no trial is scored, or delivered, without its record.
func TestStorageFailureStopsTheSearch(t *testing.T) {
	if testing.Short() {
		t.Skip("fine-tunes models")
	}
	dir := t.TempDir()
	path := writeConfig(t, dir, "fail", "fail.db", 6, "")
	var s *Search
	finished := 0
	s = openWith(t, path, Options{Meter: &fakeDevice{}, OnTrial: func(TrialResult) {
		finished++
		if finished == 1 {
			db, err := s.store.db.DB()
			if err != nil {
				t.Error(err)
				return
			}
			db.Close() // every later read and write fails
		}
	}})
	err := s.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "database is closed") {
		t.Fatalf("Run on a failing storage: %v, want the storage's error", err)
	}
	if finished != 1 {
		t.Errorf("%d trials finished after the storage failed", finished-1)
	}
}
