package search_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"

	"github.com/autoprune/autoprune/config"
	"github.com/autoprune/autoprune/eval"
	"github.com/autoprune/autoprune/objectives"
	"github.com/autoprune/autoprune/search"
)

// A search from Go: a config built from the defaults (or read with config.Load), a custom
// objective, then the trials and the winner. The program's go.mod needs the line
// "godebug randseednop=0" for TPE studies to repeat exactly from their seed (goptuna's TPE
// also draws from math/rand's global source).
func ExampleOpen() {
	cfg := config.Default() // LeNet-5 on the MNIST digits that ship with autoprune
	cfg.Study.Name, cfg.Study.Storage = "lib", "lib.db"
	cfg.Study.Trials = 12
	cfg.Objective.Target = "0.5x" // at most half the dense model's measured latency
	if err := cfg.Validate(); err != nil {
		log.Fatal(err) // names the key, as for a file
	}
	obj := objectives.Func(func(m eval.Metrics) (float64, error) {
		return m.Accuracy - 0.1*m.RelLatency, nil // the winner still has to meet the target
	})
	ctx := context.Background()
	opts := search.Options{
		Objective: obj,
		Logger:    slog.New(slog.NewJSONHandler(os.Stderr, nil)), // progress as JSON events: see search.EventTrial
	}
	if _, err := search.TrainBase(ctx, cfg, opts); err != nil { // once: cached in model.file
		log.Fatal(err)
	}
	s, err := search.Open(ctx, cfg, opts)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	if err := s.Run(ctx); err != nil {
		log.Fatal(err)
	}
	best, err := s.Finalize(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("trial %d: %.2f %% test accuracy at %.2fx the dense latency, saved as %s\n",
		best.Trial, 100*best.TestAcc, best.Metrics.RelLatency, best.ModelPath)
}
