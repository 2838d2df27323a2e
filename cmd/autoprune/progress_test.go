package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/autoprune/autoprune/search"
)

// On a terminal, messages are printed as lines and events move one bar.
func TestBarHandler(t *testing.T) {
	var b bytes.Buffer
	log := slog.New(&barHandler{state: &barState{w: &b}})
	log.Info("base model loaded")
	log.Info("epoch line", "event", search.EventTrain, "epoch", 1, "epochs", 2, "step", 50, "steps", 100, "loss", 0.5)
	log.Debug("not shown", "event", search.EventRound, "trial", 0, "round", 1, "rounds", 3, "acc", 0.8)
	log.Info("[1/4] trial 0: score 0.9", "event", search.EventTrial, "trial", 0, "done", 1, "total", 4,
		"best_trial", 0, "best_acc", 0.9, "best_rel_latency", 0.48)
	log.Debug("a debug message")
	log.Warn("heartbeat not stored")
	out := b.String()
	for _, want := range []string{"base model loaded\n", "training the base model, epoch 1/2", "[1/4] trial 0: score 0.9\n",
		"best trial 0: 90.00 % at 0.480x", "(1/4)", "warn: heartbeat not stored\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%q", want, out)
		}
	}
	for _, bad := range []string{"epoch line", "not shown", "a debug message"} {
		if strings.Contains(out, bad) {
			t.Errorf("output holds %q, which a bar shows or hides:\n%q", bad, out)
		}
	}
}
