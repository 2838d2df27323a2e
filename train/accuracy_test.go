package train

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/autoprune/autoprune/data"
	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/nn/zoo"
)

// accuracyTarget is a documented training recipe and the test accuracy it must reach.
type accuracyTarget struct {
	model, dataset string
	cfg            Config
	min            float64 // minimum accuracy on the full test set
}

// accuracyTargets are the reference results of the project's benchmark docs.
var accuracyTargets = []accuracyTarget{
	{"lenet5", "mnist", Config{Epochs: 3, BatchSize: 64, LR: 2e-3, Schedule: "cosine", Seed: 1}, 0.987},
	{"mlp", "mnist", Config{Epochs: 3, BatchSize: 64, LR: 1e-3, Schedule: "cosine", Seed: 1}, 0.975},
	{"vgg-small", "fashion-mnist", Config{Epochs: 5, BatchSize: 64, LR: 1e-3, Schedule: "cosine", Seed: 1}, 0.920},
}

// TestAccuracyTargets trains the reference recipes from scratch and checks their test
// accuracy. It takes minutes to hours and only runs when AUTOPRUNE_LONG is set:
//
//	AUTOPRUNE_LONG=1 go test ./train/ -run TestAccuracyTargets -v -timeout 3h
//	AUTOPRUNE_LONG=1 go test ./train/ -run TestAccuracyTargets/lenet5 -v -timeout 1h
func TestAccuracyTargets(t *testing.T) {
	if os.Getenv("AUTOPRUNE_LONG") == "" {
		t.Skip("set AUTOPRUNE_LONG=1 to train the reference recipes (minutes to hours)")
	}
	for _, tg := range accuracyTargets {
		t.Run(tg.model, func(t *testing.T) {
			trainSet, testSet, err := data.Load(tg.dataset, "")
			if err != nil {
				t.Fatal(err)
			}
			m, err := zoo.Build(tg.model, nn.Shape{C: trainSet.C, H: trainSet.H, W: trainSet.W}, trainSet.Classes, tg.cfg.Seed)
			if err != nil {
				t.Fatal(err)
			}
			cfg := tg.cfg
			cfg.LogEvery = 200
			cfg.Progress = func(p Progress) {
				t.Logf("epoch %d/%d step %d/%d loss %.4f %.0f img/s %s", p.Epoch, p.Epochs, p.Step, p.Steps,
					p.Loss, p.ImagesPerSec, p.Elapsed.Round(time.Second))
			}
			out, res, err := Train(context.Background(), m, trainSet, cfg)
			if err != nil {
				t.Fatal(err)
			}
			acc := accuracy(t, out, testSet)
			t.Logf("RESULT %s on %s: test accuracy %.2f %% (target %.1f %%), %d epochs, %d steps, %s, %.0f img/s, final loss %.4f",
				tg.model, tg.dataset, 100*acc, 100*tg.min, cfg.Epochs, res.Steps, res.Elapsed.Round(time.Second),
				res.ImagesPerSec, res.FinalLoss)
			if acc < tg.min {
				t.Errorf("test accuracy %.4f below the target %.3f", acc, tg.min)
			}
		})
	}
}
