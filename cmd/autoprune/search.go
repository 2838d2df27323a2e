package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/autoprune/autoprune/config"
	"github.com/autoprune/autoprune/internal/fileio"
	"github.com/autoprune/autoprune/report"
	"github.com/autoprune/autoprune/search"
)

func init() {
	register(&command{name: "search", summary: "search per-group pruning ratios for a latency or size budget (resumable)", run: runSearch})
	register(&command{name: "report", summary: "summarise a study from its database: best trial, Pareto front", run: runReport})
}

func runSearch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("search", "search CONFIG.toml [flags]", `
Runs the pruning search a config describes. Each trial: the sampler (TPE, CMA-ES or random)
proposes a ratio per prunable group; the base model is pruned for real (channels removed),
its batch norms recalibrated, it is fine-tuned briefly with knowledge distillation from the
dense model, scored on validation accuracy and on latency measured on the target, and ranked
by the objective. Hopeless trials are stopped early; a plan that prunes to an architecture
already tried is scored from that trial.

Latency is measured interleaved with the dense model (A B A B ..., here or on the agent's
device), so drift cancels in the ratio; a round whose ratio is not known within
latency.max_spread (default ±3 %), or whose reference drifted, is measured again.

The latency target (objective.target) and the size budget (max_bytes with kind = "budget")
are constraints: the winner is chosen among the trials that meet them. At the end the best
few of those (final.candidates) are measured again in fresh rounds and each is given the
final fine-tune (final.steps; final.rerank_steps sets a cheaper re-ranking fine-tune), and so
is the best uniform plan that meets the target, the baseline. The best by validation score is
the winner, except that a searched plan ahead of the uniform one by less than
final.uniform_margin standard errors of the paired validation difference (default 1) is
noise, and the uniform plan is delivered instead (the result says so). The winner is
measured afresh against the dense model, compared with it on the test set, and saved with
its plan
(NAME-best.safetensors, NAME-best.plan.toml). When no trial meets the target the search
says so, names the fastest trial, and exits with status 1.

The study lives in the storage the config names (a SQLite file by default). Running the same
command again resumes it: trials left running by a killed process are detected and retried,
and the study ends with the requested number of trials. Several workers may run the same
config at once (same SQLite file on one machine, or a postgres:// or mysql:// storage
across machines).
Ctrl-C stops cleanly (exit 130); the study stays resumable.

Progress: on a terminal, a live bar (base training, trial i of N with the best feasible
trial so far, elapsed time and ETA, final fine-tunes) under the messages; elsewhere (CI, a
pipe, a log file) one log/slog line per message and event, with no control characters.
--quiet prints only warnings, errors and the result; --json prints every event and the
result as JSON lines on stdout (fields: the search package's Event constants).

Examples:
  autoprune search configs/mobile.toml
  autoprune search configs/mobile.toml --trials 40     # ask for more trials
  autoprune search configs/mobile.toml --json > events.jsonl
  autoprune report configs/mobile.db --study mobile`, stderr)
	trials := fs.Int("trials", 0, "override study.trials")
	worker := fs.String("worker", "", "label for this worker's trials (default host:pid)")
	noFinal := fs.Bool("no-final", false, "skip the final fine-tuning and export")
	out := outputFlags(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return usagef("search: want exactly one config file, got %d arguments", len(pos))
	}
	if *trials < 0 || (*trials == 0 && flagSet(fs, "trials")) {
		return usagef("search: --trials %d: want at least 1 (leave it out for study.trials)", *trials)
	}
	cfg, err := config.Load(pos[0])
	if err != nil {
		return asUsage(err)
	}
	if *trials > 0 {
		cfg.Study.Trials = *trials
	}
	start := time.Now()
	log := out.logger(stdout, stderr)
	opts := search.Options{Logger: log, Worker: *worker}
	if _, err := search.TrainBase(ctx, cfg, opts); err != nil {
		return classify(err)
	}
	s, err := search.Open(ctx, cfg, opts)
	if err != nil {
		return classify(err)
	}
	defer s.Close()
	log.Info(fmt.Sprintf("searching %d groups with %s, objective %s, %d trials, storage %s",
		len(s.Groups()), cfg.Study.Sampler, cfg.Objective.Kind, cfg.Study.Trials, cfg.Resolve(cfg.Study.Storage)))
	if err := s.Run(ctx); err != nil {
		if errors.Is(err, context.Canceled) {
			log.Warn("interrupted: the study is saved; run the same command to resume")
		}
		return err
	}
	if *noFinal {
		return nil
	}
	res, err := s.Finalize(ctx)
	if err != nil {
		return err
	}
	if *out.json {
		log.Info("result", resultAttrs(res, time.Since(start))...)
		return nil
	}
	if err := res.Write(stdout); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "total time %s\n", time.Since(start).Round(time.Second))
	return nil
}

// resultAttrs are the winner's figures as the attributes of a "result" event.
func resultAttrs(r *search.Result, total time.Duration) []any {
	m := r.Metrics
	return []any{"event", "result", "trial", r.Trial, "plan", r.Plan, "test_acc", r.TestAcc, "dense_test_acc", r.DenseTest,
		"val_acc", m.Accuracy, "rel_latency", m.RelLatency, "rel_spread", m.RelSpread, "latency_ms", float64(m.Latency.Median) / 1e6,
		"dense_latency_ms", float64(r.Dense.Latency.Median) / 1e6, "macs", m.MACs, "params", m.Params, "bytes", m.Bytes,
		"constraint", r.Constraint.String(), "miss", r.Miss, "model", r.ModelPath, "plan_file", r.PlanPath, "onnx", r.ONNXPath,
		"total_s", total.Seconds()}
}

// classify turns config and input problems into usage errors (exit 2).
func classify(err error) error {
	if errors.Is(err, config.ErrConfig) {
		return asUsage(err)
	}
	return err
}

func runReport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("report", "report STUDY-DB [--study NAME] [--json] [--plots DIR] [--html FILE] [--serve ADDR]", `
Reads a study from its database alone (no model, no data needed): counts of trials, the
dense model, the best trials and the accuracy-vs-latency Pareto front of complete trials
(speed-up and accuracy change against the dense model, trials over the target marked), the
best trial's plan and the reasons of failed trials. STUDY-DB is the SQLite file or a
postgres:// or mysql:// URL. It only reads: a SQLite file is opened read-only (also in a
read-only folder, or while a search writes it), and nothing is created in a file or
database that holds no study.

--plots DIR writes PNG and SVG plots: tradeoff (validation accuracy against measured
latency for every trial, complete, stopped early and failed drawn differently, with the
Pareto front, the dense model and the target), history (score per trial and the best
feasible so far) and plan (channels kept per group by the best trial beside the dense
model's). --html FILE writes one self-contained page with the plots, the tables, the
winning plan, the config and the device. --serve ADDR serves that page, read afresh from
the database at every request and reloading itself every 10 s, to watch a running study.

Examples:
  autoprune report configs/mobile.db
  autoprune report configs/mobile.db --json > study.json
  autoprune report configs/mobile.db --plots plots/ --html report.html
  autoprune report configs/mobile.db --serve 127.0.0.1:8080`, stderr)
	name := fs.String("study", "", "study name (default: the only study in the database)")
	asJSON := fs.Bool("json", false, "print every trial with its raw metrics as JSON")
	plots := fs.String("plots", "", "write the study's plots (PNG and SVG) into this folder")
	page := fs.String("html", "", "write a self-contained HTML report to this file")
	serve := fs.String("serve", "", "serve the HTML report at this address (such as 127.0.0.1:8080) until Ctrl-C")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return usagef("report: want exactly one study database, got %d arguments", len(pos))
	}
	if *plots != "" {
		if err := writableDir("report --plots", *plots); err != nil {
			return err
		}
	}
	store, err := search.OpenExisting(pos[0])
	if err != nil {
		return asUsage(err)
	}
	defer store.Close()
	if *name == "" {
		names, err := store.StudyNames()
		if err != nil {
			return err
		}
		switch len(names) {
		case 0:
			return usagef("report: %s holds no study", pos[0])
		case 1:
			*name = names[0]
		default:
			return usagef("report: %s holds several studies %v: choose one with --study", pos[0], names)
		}
	}
	sum, err := search.Summarize(store, *name)
	if err != nil {
		return asUsage(err)
	}
	source := store.Source()
	if *plots != "" {
		files, err := report.WritePlots(sum, *plots)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "plots written: %s\n", strings.Join(files, ", "))
	}
	if *page != "" {
		if err := fileio.WriteAtomic(*page, func(w io.Writer) error {
			return report.HTML(w, sum, report.Page{Source: source})
		}); err != nil {
			return usagef("report --html %s: %v", *page, err)
		}
		fmt.Fprintf(stderr, "report written: %s\n", *page)
	}
	if *serve != "" {
		return serveReport(ctx, *serve, store, *name, source, stderr)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(sum)
	}
	if *plots != "" || *page != "" {
		return nil
	}
	return sum.Write(stdout)
}

// serveReport serves the study's HTML page at addr until ctx ends.
func serveReport(ctx context.Context, addr string, store *search.Storage, name, source string, stderr io.Writer) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return usagef("report --serve %s: %v", addr, err)
	}
	srv := &http.Server{Handler: reportHandler(store, name, source), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	fmt.Fprintf(stderr, "serving study %s at http://%s/ (read-only; Ctrl-C stops)\n", name, ln.Addr())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return ctx.Err()
}

// reportHandler serves the study's page at "/", read afresh from the store at every
// request and reloading itself every 10 s.
func reportHandler(store *search.Storage, name, source string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		sum, err := search.Summarize(store, name)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		var b bytes.Buffer
		if err := report.HTML(&b, sum, report.Page{Source: source, Refresh: 10 * time.Second}); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(b.Bytes())
	})
	return mux
}
