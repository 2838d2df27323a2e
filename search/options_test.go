package search

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/autoprune/autoprune/config"
	"github.com/autoprune/autoprune/data"
	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/prune"
)

// countingCriterion is a user's criterion: L1, counting the groups it ranks.
type countingCriterion struct{ n *int }

func (c countingCriterion) Name() string { return "counting-l1" }
func (c countingCriterion) Score(m *nn.Model, g prune.Group) ([]float64, error) {
	*c.n++
	return prune.L1{}.Score(m, g)
}

// A search built in Go from an in-memory model, in-memory data, a criterion of its own and
// a per-trial callback: no model file is read or written, the criterion ranks the
// channels, the callback sees every trial as stored.
func TestLibraryOptions(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a study")
	}
	dir := t.TempDir()
	base, err := nn.Load(baseModel(t))
	if err != nil {
		t.Fatal(err)
	}
	full, test, err := data.LoadMNIST()
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Study.Name, cfg.Study.Storage, cfg.Study.Trials = "lib", filepath.Join(dir, "lib.db"), 3
	cfg.Model.File = filepath.Join(dir, "never-written.safetensors")
	cfg.Data.ValSamples, cfg.Finetune.Steps, cfg.Finetune.Rounds = 500, 10, 1
	cfg.Latency.Meter = "macs"
	cfg.Final.Out, cfg.Final.PlanOut = filepath.Join(dir, "lib-best.safetensors"), filepath.Join(dir, "lib-best.plan.toml")
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ranked := 0
	var seen []TrialResult
	opts := Options{
		Model: base, Train: full.Head(3000), Test: test.Head(1000),
		Criterion: countingCriterion{&ranked},
		OnTrial:   func(r TrialResult) { seen = append(seen, r) },
		Logger:    testLogger(t),
	}
	if _, err := Open(context.Background(), cfg, Options{Model: base, Train: full}); err == nil {
		t.Error("Options.Train without Options.Test was accepted")
	}
	s, err := Open(context.Background(), cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.trainSet.N+s.valSet.N != 3000 || s.testSet.N != 1000 {
		t.Errorf("the search uses %d+%d training and %d test samples, want the 3000 and 1000 given", s.trainSet.N, s.valSet.N, s.testSet.N)
	}
	if err := s.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 3 {
		t.Fatalf("OnTrial saw %d trials, want 3", len(seen))
	}
	for i, r := range seen {
		if r.Number != i || r.State != "complete" || r.Metric == nil || len(r.Plan) == 0 || r.Worker == "" {
			t.Errorf("OnTrial got %+v", r)
		}
	}
	if ranked == 0 {
		t.Error("the criterion given in Options ranked no group")
	}
	res, err := s.Finalize(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.TestAcc < 0.5 {
		t.Errorf("winner's test accuracy %.3f", res.TestAcc)
	}
	if _, err := os.Stat(cfg.Model.File); err == nil {
		t.Error("a base model given in memory was saved to model.file")
	}
}

// prune.criterion = "taylor" ranks channels by loss gradients on the training data.
func TestTaylorCriterionInASearch(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a study")
	}
	dir := t.TempDir()
	path := writeConfig(t, dir, "taylor", "taylor.db", 1, "")
	editConfig(t, path, "max_ratio = 0.8", "max_ratio = 0.8\ncriterion = \"taylor\"")
	s := openSearch(t, path)
	if _, ok := s.crit.(prune.Taylor); !ok {
		t.Fatalf("criterion %T, want prune.Taylor", s.crit)
	}
	if err := s.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if sum, err := s.Summary(); err != nil || sum.Counts["complete"] != 1 {
		t.Errorf("summary %+v, %v", sum, err)
	}
}

// The base model trains on the whole training part, whatever data.train_samples says: the
// file is cached, and a later config with another value must not reuse a weaker model.
func TestBaseTrainsOnTheWholeTrainingPart(t *testing.T) {
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Study.Storage = filepath.Join(dir, "s.db")
	cfg.Model.File = filepath.Join(dir, "base.safetensors")
	cfg.Final.Out, cfg.Final.PlanOut = filepath.Join(dir, "b.safetensors"), filepath.Join(dir, "b.plan.toml")
	cfg.Data.ValSamples, cfg.Data.TrainSamples = 5000, 2000
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s, err := prepare(cfg, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if s.trainSet.N != 2000 || s.baseTrain.N != 60000-5000 || s.valSet.N != 5000 {
		t.Errorf("fine-tuning on %d, base training on %d, validating on %d samples; want 2000, 55000, 5000",
			s.trainSet.N, s.baseTrain.N, s.valSet.N)
	}
}
