package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/autoprune/autoprune/search"
)

// output is how a long command reports its progress: --quiet, --json, or the default,
// which is live bars on a terminal and one structured line per event elsewhere.
type output struct {
	quiet, json *bool
}

func outputFlags(fs *flag.FlagSet) output {
	return output{
		quiet: fs.Bool("quiet", false, "print only warnings, errors and the result"),
		json:  fs.Bool("json", false, "print progress events and the result as JSON lines on stdout (see search.EventTrial)"),
	}
}

// logger builds the logger of a command's progress. On a terminal (stderr), messages
// scroll above live progress bars; elsewhere (CI, a pipe, a log file) each message and
// event is one log/slog text line, with no control characters.
func (o output) logger(stdout, stderr io.Writer) *slog.Logger {
	switch {
	case *o.json:
		return slog.New(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: slog.LevelDebug}))
	case *o.quiet:
		return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	case isTerminal(stderr):
		return slog.New(&barHandler{state: &barState{w: stderr}})
	}
	return slog.New(slog.NewTextHandler(stderr, nil))
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// barHandler shows a search's events as one live progress bar (the base model's training,
// the study's trials, a final fine-tune) and prints its messages above the bar.
type barHandler struct {
	state *barState
	attrs []slog.Attr
}

type barState struct {
	mu   sync.Mutex
	w    io.Writer
	bar  *progressbar.ProgressBar
	kind string // what the bar counts: "train", "study" or a fine-tune's name
	// best describes the best feasible trial so far, for the study bar.
	best string
}

func (h *barHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelDebug }

func (h *barHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &barHandler{state: h.state, attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}

func (h *barHandler) WithGroup(string) slog.Handler { return h }

func (h *barHandler) Handle(_ context.Context, r slog.Record) error {
	a := map[string]slog.Value{}
	for _, at := range h.attrs {
		a[at.Key] = at.Value
	}
	r.Attrs(func(at slog.Attr) bool {
		a[at.Key] = at.Value
		return true
	})
	num := func(k string) int64 {
		switch v := a[k]; v.Kind() {
		case slog.KindInt64:
			return v.Int64()
		case slog.KindFloat64:
			return int64(v.Float64())
		}
		return 0
	}
	flt := func(k string) float64 {
		if v := a[k]; v.Kind() == slog.KindFloat64 {
			return v.Float64()
		}
		return 0
	}
	s := h.state
	s.mu.Lock()
	defer s.mu.Unlock()
	switch a["event"].String() {
	case search.EventTrain:
		steps := num("steps")
		s.show("train", num("epochs")*steps, (num("epoch")-1)*steps+num("step"),
			fmt.Sprintf("training the base model, epoch %d/%d, loss %.3f", num("epoch"), num("epochs"), flt("loss")))
		return nil
	case search.EventFinetune:
		what := a["what"].String()
		if strings.HasPrefix(what, "trial ") && s.kind == "study" {
			s.bar.Describe(fmt.Sprintf("%s: fine-tune %d/%d%s", what, num("step"), num("steps"), s.best))
			return nil
		}
		s.show("finetune "+what, num("steps"), num("step"), fmt.Sprintf("%s: fine-tune, loss %.3f", what, flt("loss")))
		return nil
	case search.EventRound:
		if s.kind == "study" {
			s.bar.Describe(fmt.Sprintf("trial %d: round %d/%d, %.2f %%%s", num("trial"), num("round"), num("rounds"), 100*flt("acc"), s.best))
		}
		return nil
	case search.EventTrial:
		if _, ok := a["best_trial"]; ok {
			s.best = fmt.Sprintf(" | best trial %d: %.2f %% at %.3fx", num("best_trial"), 100*flt("best_acc"), flt("best_rel_latency"))
		}
		s.print(r)
		s.show("study", num("total"), num("done"), "trials"+s.best)
		return nil
	}
	if r.Level < slog.LevelInfo {
		return nil
	}
	s.print(r)
	return nil
}

// print writes a message on its own line above the bar.
func (s *barState) print(r slog.Record) {
	if s.bar != nil {
		s.bar.Clear()
	}
	prefix := ""
	if r.Level >= slog.LevelWarn {
		prefix = strings.ToLower(r.Level.String()) + ": "
	}
	fmt.Fprintf(s.w, "%s%s\n", prefix, r.Message)
	if s.bar != nil {
		s.bar.RenderBlank()
	}
}

// show sets the bar of kind to n of max, making it when the kind changes.
func (s *barState) show(kind string, max, n int64, desc string) {
	if max <= 0 {
		return
	}
	if s.bar == nil || s.kind != kind || s.bar.GetMax64() != max {
		if s.bar != nil {
			s.bar.Clear()
			s.bar.Exit()
		}
		s.bar = progressbar.NewOptions64(max, progressbar.OptionSetWriter(s.w), progressbar.OptionShowCount(),
			progressbar.OptionSetElapsedTime(true), progressbar.OptionSetPredictTime(true), progressbar.OptionFullWidth(),
			progressbar.OptionClearOnFinish(), progressbar.OptionSetDescription(desc))
		s.kind = kind
	}
	s.bar.Describe(desc)
	s.bar.Set64(n)
}
