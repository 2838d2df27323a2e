// Package search runs a pruning search: a goptuna study proposes a pruning ratio for every
// prunable group; each candidate is pruned for real, its batch norms recalibrated, briefly
// fine-tuned with knowledge distillation from the dense model, scored for validation
// accuracy and measured latency, and ranked by an objective. Studies live in a SQLite file
// or a PostgreSQL database, resume after a crash and can be shared by many workers.
package search

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/c-bata/goptuna"
	"github.com/c-bata/goptuna/cmaes"
	"github.com/c-bata/goptuna/medianstopping"
	"github.com/c-bata/goptuna/successivehalving"
	"github.com/c-bata/goptuna/tpe"

	"github.com/autoprune/autoprune/config"
	"github.com/autoprune/autoprune/data"
	"github.com/autoprune/autoprune/eval"
	"github.com/autoprune/autoprune/internal/fileio"
	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/nn/onnx"
	"github.com/autoprune/autoprune/nn/zoo"
	"github.com/autoprune/autoprune/objectives"
	"github.com/autoprune/autoprune/prune"
	"github.com/autoprune/autoprune/train"
)

// Trial attribute keys: everything raw is stored so reports can re-score without retraining.
const (
	attrPlan      = "plan"      // JSON prune.Plan
	attrMetrics   = "metrics"   // JSON eval.Metrics
	attrSteps     = "steps"     // fine-tuning steps done
	attrWall      = "wall_ms"   // trial wall time
	attrWorker    = "worker"    // who ran it
	attrError     = "error"     // why it failed
	attrHeartbeat = "heartbeat" // unix ms, refreshed while running (system attribute)
	attrRetryOf   = "retry_of"  // number of the stale trial this one retries
	attrArch      = "arch"      // nn.Model.Hash of the pruned architecture
	attrDupOf     = "same_as"   // number of the earlier trial with the same architecture

	studyAttrDense  = "dense"  // JSON eval.Metrics of the base model
	studyAttrGroups = "groups" // JSON []prune.Group searched
	studyAttrConfig = "config" // config file path
	// studyAttrConfigTOML is the effective config, every default filled in, as TOML: a
	// report shows what the study ran with, without the file.
	studyAttrConfigTOML = "config_toml"
	// studyAttrConstraint is the JSON constraint a winner must meet (latency target, size
	// budget), so that reports judge trials without the config.
	studyAttrConstraint = "constraint"
	// studyAttrObjective describes the config's [objective]: a study resumed with another
	// objective would rank scores that do not compare.
	studyAttrObjective = "objective"
)

// Options customise a search beyond its config; zero values take the config's choices.
type Options struct {
	Objective objectives.Objective // replaces [objective]
	Meter     eval.Meter           // replaces [latency]; relative latency is then candidate/dense medians
	// Logger receives the search's progress: a message per step, and structured events a
	// display or a program can follow (see EventTrial). Default: text lines on os.Stderr.
	Logger *slog.Logger
	// Criterion replaces prune.criterion: how channels are ranked within a group, such as
	// a prune.Taylor built on your data or a criterion of your own.
	Criterion prune.Criterion
	// Model replaces [model]: the dense model to prune, as it is in memory (nothing is
	// trained, loaded or saved for it). Every worker of a study must pass the same model.
	Model *nn.Model
	// Train and Test replace [data] (both are needed): the training data, of which
	// data.val_samples are held out by data.split_seed for validation, and the test set.
	// They are used as given: data.mean and data.std do not apply.
	Train, Test *data.Dataset
	// OnTrial, when set, is called with each trial this process finishes, as stored.
	OnTrial func(TrialResult)
	Worker  string        // label stored on trials; default host:pid
	Lease   time.Duration // a RUNNING trial without a heartbeat for this long is stale; default study.stale_after
}

// Search is an open study with its data, base model and measuring set-up.
type Search struct {
	cfg   *config.Config
	opts  Options
	log   *slog.Logger
	store *Storage
	study *goptuna.Study

	base      *nn.Model
	groups    []prune.Group
	space     map[string]interface{}
	crit      prune.Criterion
	trainSet  *data.Dataset // fine-tuning samples (held out from validation)
	baseTrain *data.Dataset // the whole training part, for the base model
	valSet    *data.Dataset
	testSet   *data.Dataset
	teacher   []float32 // base-model logits for trainSet, computed once
	obj       objectives.Objective
	meter     eval.Meter // nil: local interleaved measurement
	dense     eval.Metrics
	seed      int64

	latMu    sync.Mutex
	latCache map[string]latEntry
	// best is the best complete trial that meets the constraint, as last seen in the study
	// (every worker's trials), for the progress events.
	best *TrialResult

	denseTestOnce sync.Once
	denseTestAcc  float64
	denseTestErr  error
}

// Open prepares a search: loads the data, loads (or trains once and caches) the base
// model, computes the teacher logits, measures the dense model, and creates or resumes the
// study in its storage.
func Open(ctx context.Context, cfg *config.Config, opts Options) (*Search, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Search{cfg: cfg, opts: opts, log: opts.Logger, latCache: map[string]latEntry{}}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if s.opts.Lease <= 0 {
		s.opts.Lease = cfg.Study.StaleAfter.Duration
	}
	if s.opts.Worker == "" {
		host, _ := os.Hostname()
		s.opts.Worker = fmt.Sprintf("%s:%d", host, os.Getpid())
	}
	if err := s.checkOutputs(); err != nil {
		return nil, err
	}
	if err := s.checkInputs(); err != nil {
		return nil, err
	}
	if err := s.loadData(); err != nil {
		return nil, err
	}
	if err := s.loadBase(ctx); err != nil {
		return nil, err
	}
	if err := s.checkShapes(); err != nil {
		return nil, err
	}
	if err := s.buildSpace(); err != nil {
		return nil, err
	}
	if err := s.measureDense(ctx); err != nil {
		return nil, err
	}
	var err error
	if s.teacher, err = eval.Logits(ctx, s.base, s.trainSet, 2); err != nil {
		return nil, fmt.Errorf("teacher logits: %w", err)
	}
	if err := s.openStudy(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Close releases the storage.
func (s *Search) Close() error {
	if s.store != nil {
		return s.store.Close()
	}
	return nil
}

// Base returns the dense base model.
func (s *Search) Base() *nn.Model { return s.base }

// Groups returns the searched groups.
func (s *Search) Groups() []prune.Group { return s.groups }

// Dense returns the measurements of the dense base model.
func (s *Search) Dense() eval.Metrics { return s.dense }

func (s *Search) logf(format string, args ...any) {
	s.log.Info(fmt.Sprintf(format, args...))
}

func (s *Search) warnf(format string, args ...any) {
	s.log.Warn(fmt.Sprintf(format, args...))
}

func (s *Search) loadData() error {
	d := s.cfg.Data
	full, test := s.opts.Train, s.opts.Test
	if (full == nil) != (test == nil) {
		return errors.New("search: Options.Train and Options.Test go together: give both or neither")
	}
	if full == nil {
		var err error
		full, test, err = data.LoadWith(d.Dataset, s.cfg.Resolve(d.Dir), data.FolderOptions{Size: d.ImageSize, Channels: d.Channels})
		if err != nil {
			return fmt.Errorf("config %s: %w: [data]: %w", s.cfg.Path, config.ErrConfig, err)
		}
	}
	if len(d.Mean) > 0 && s.opts.Train == nil {
		mean, std := make([]float32, len(d.Mean)), make([]float32, len(d.Std))
		for i := range d.Mean {
			mean[i] = float32(d.Mean[i])
		}
		for i := range d.Std {
			std[i] = float32(d.Std[i])
		}
		for _, set := range []*data.Dataset{full, test} {
			if err := set.Normalize(mean, std); err != nil {
				return fmt.Errorf("config %s: %w: data.mean, data.std: %w", s.cfg.Path, config.ErrConfig, err)
			}
		}
	}
	if full.HeldOut > 0 {
		s.logf("validation: the %d held-out samples of %s (its val/ folder); data.val_samples does not apply", full.HeldOut, full.Name)
	} else if d.ValSamples*2 > full.N {
		return fmt.Errorf("config %s: %w: data.val_samples: %d is more than half of the %d training samples of %s",
			s.cfg.Path, config.ErrConfig, d.ValSamples, full.N, full.Name)
	}
	frac := float64(d.ValSamples) / float64(full.N)
	// The split does not follow the study seed: the base model is trained once, on the
	// training part, and every study that shares it must validate on samples it never saw.
	tr, val, err := full.Split(frac, d.SplitSeed)
	if err != nil {
		return fmt.Errorf("config %s: data.val_samples: %w", s.cfg.Path, err)
	}
	// The base model trains on the whole training part, whatever data.train_samples says:
	// it is cached, and a later config with another value must not reuse a weaker model.
	s.baseTrain = tr
	if d.TrainSamples > 0 {
		tr = tr.Head(d.TrainSamples)
	}
	if s.cfg.Finetune.ValSamples > 0 {
		val = val.Head(s.cfg.Finetune.ValSamples)
	}
	s.trainSet, s.valSet, s.testSet = tr, val, test
	return nil
}

// checkInputs reads, before any work, what the config names besides the data and the
// model: the objective, the latency table, the sensitivity report, the storage's kind.
func (s *Search) checkInputs() error {
	if err := s.buildObjective(); err != nil {
		return err
	}
	if st := s.cfg.Study.Storage; strings.Contains(st, "://") && !isServer(st) {
		return fmt.Errorf("config %s: %w: study.%w", s.cfg.Path, config.ErrConfig, unsupportedScheme(st))
	}
	if l := s.cfg.Latency; l.Meter == "lut" && s.opts.Meter == nil {
		if _, err := eval.LoadLUT(s.cfg.Resolve(l.LUT)); err != nil {
			return fmt.Errorf("config %s: %w: latency.lut: %w", s.cfg.Path, config.ErrConfig, err)
		}
	}
	if p := s.cfg.Prune.Sensitivity; p != "" {
		if _, err := loadSensitivity(s.cfg.Resolve(p)); err != nil {
			return fmt.Errorf("config %s: %w: prune.sensitivity: %w", s.cfg.Path, config.ErrConfig, err)
		}
	}
	return nil
}

// checkOutputs makes sure, before any work, that the files a search will write can be
// written: the winner, its plan, the base model when it is to be trained, a new SQLite
// study. A typo in a folder name must not cost an hour of search.
func (s *Search) checkOutputs() error {
	outs := [][2]string{{"final.out", s.cfg.Final.Out}, {"final.plan_out", s.cfg.Final.PlanOut}}
	if path := s.cfg.Resolve(s.cfg.Model.File); s.cfg.Model.File != "" && s.opts.Model == nil {
		if _, err := os.Stat(path); err != nil {
			outs = append(outs, [2]string{"model.file", s.cfg.Model.File})
		}
	}
	if st := s.cfg.Study.Storage; st != "" && !strings.Contains(st, "://") {
		if _, err := os.Stat(s.cfg.Resolve(st)); err != nil {
			outs = append(outs, [2]string{"study.storage", st})
		}
	}
	for _, o := range outs {
		dir := filepath.Dir(s.cfg.Resolve(o[1]))
		f, err := os.CreateTemp(dir, ".autoprune-write-check-*")
		if err != nil {
			return fmt.Errorf("config %s: %w: %s: cannot write in folder %s: %v", s.cfg.Path, config.ErrConfig, o[0], dir, fileio.StripPath(err))
		}
		f.Close()
		os.Remove(f.Name())
	}
	return nil
}

// checkShapes refuses, before any work, a base model whose input or output does not fit
// the data.
func (s *Search) checkShapes() error {
	in, d := s.base.Input, s.trainSet
	if in.C != d.C || in.H != d.H || in.W != d.W {
		return fmt.Errorf("config %s: %w: model.file %s (%s) expects %v inputs, but the data (%s) has %dx%dx%d images",
			s.cfg.Path, config.ErrConfig, s.cfg.Model.File, s.base.Name, in, d.Name, d.C, d.H, d.W)
	}
	shapes, err := s.base.Shapes()
	if err != nil {
		return fmt.Errorf("config %s: model.file %s: %w", s.cfg.Path, s.cfg.Model.File, err)
	}
	if out := shapes[len(shapes)-1].Size(); out < d.Classes {
		return fmt.Errorf("config %s: %w: model.file %s (%s) has %d outputs, but the data (%s) has %d classes",
			s.cfg.Path, config.ErrConfig, s.cfg.Model.File, s.base.Name, out, d.Name, d.Classes)
	}
	return nil
}

// loadBase loads the model file, or trains the zoo model once on the training part (the
// validation samples stay unseen) and saves it there for the next run.
func (s *Search) loadBase(ctx context.Context) error {
	if m := s.opts.Model; m != nil {
		if err := m.Validate(); err != nil {
			return fmt.Errorf("search: Options.Model: %w", err)
		}
		s.base = m.Clone()
		s.logf("base model %s given in memory", m.Name)
		return nil
	}
	path := s.cfg.Resolve(s.cfg.Model.File)
	if _, err := os.Stat(path); err == nil {
		m, err := onnx.LoadFile(path)
		if errors.Is(err, nn.ErrFormat) || errors.Is(err, nn.ErrInvalid) {
			return fmt.Errorf("config %s: %w: model.file: %w", s.cfg.Path, config.ErrConfig, err)
		}
		if err != nil {
			return err
		}
		s.base = m
		s.logf("base model %s loaded from %s", m.Name, path)
		return nil
	}
	if s.cfg.Model.Zoo == "" {
		return fmt.Errorf("config %s: model.file %s does not exist and model.zoo is not set", s.cfg.Path, path)
	}
	shape := nn.Shape{C: s.trainSet.C, H: s.trainSet.H, W: s.trainSet.W}
	m, err := zoo.Build(s.cfg.Model.Zoo, shape, s.trainSet.Classes, s.cfg.Data.SplitSeed)
	if err != nil {
		return fmt.Errorf("config %s: %w: model.zoo: %w", s.cfg.Path, config.ErrConfig, err)
	}
	s.logf("training base model %s on %d samples for %d epoch(s) (cached in %s)", m.Name, s.baseTrain.N, s.cfg.Model.TrainEpochs, path)
	start := time.Now()
	m, _, err = train.Train(ctx, m, s.baseTrain, train.Config{
		Epochs: s.cfg.Model.TrainEpochs, BatchSize: 64, Schedule: "cosine", Seed: s.cfg.Data.SplitSeed, LogEvery: 200,
		Progress: func(p train.Progress) {
			s.log.Info(fmt.Sprintf("  epoch %d/%d step %d/%d loss %.4f (%.0f img/s)", p.Epoch, p.Epochs, p.Step, p.Steps, p.Loss, p.ImagesPerSec),
				"event", EventTrain, "epoch", p.Epoch, "epochs", p.Epochs, "step", p.Step, "steps", p.Steps, "loss", p.Loss, "img_per_s", p.ImagesPerSec)
		},
	})
	if err != nil {
		return fmt.Errorf("training the base model: %w", err)
	}
	if err := onnx.SaveFile(path, m); err != nil {
		return err
	}
	s.logf("base model trained in %s, saved to %s", time.Since(start).Round(time.Second), path)
	s.base = m
	return nil
}

func (s *Search) buildSpace() error {
	gs, err := prune.Groups(s.base)
	if err != nil {
		return err
	}
	whole, err := prune.KeptWhole(s.base)
	if err != nil {
		return err
	}
	for _, w := range whole {
		s.logf("kept unpruned: %s", w)
	}
	p := s.cfg.Prune
	include := map[string]bool{}
	for _, n := range p.Include {
		include[n] = true
	}
	exclude := map[string]bool{}
	for _, n := range p.Exclude {
		exclude[n] = true
	}
	known := map[string]bool{}
	for _, g := range gs {
		known[g.Name] = true
	}
	for _, n := range append(append([]string(nil), p.Include...), p.Exclude...) {
		if !known[n] {
			return fmt.Errorf("config %s: %w: prune.include/exclude: unknown group %q (groups: %s)", s.cfg.Path, config.ErrConfig, n, groupNames(gs))
		}
	}
	bounds := map[string]float64{}
	if p.Sensitivity != "" {
		rep, err := loadSensitivity(s.cfg.Resolve(p.Sensitivity))
		if err != nil {
			return fmt.Errorf("config %s: %w: prune.sensitivity: %w", s.cfg.Path, config.ErrConfig, err)
		}
		bounds = rep.MaxRatios(p.MaxDrop)
	}
	s.space = map[string]interface{}{}
	for _, g := range gs {
		if (len(include) > 0 && !include[g.Name]) || exclude[g.Name] {
			continue
		}
		hi := p.MaxRatio
		if b, ok := bounds[g.Name]; ok {
			hi = math.Min(hi, b)
		}
		if hi <= p.MinRatio {
			continue // the sensitivity analysis says: leave it alone
		}
		if p.Step > 0 {
			hi = p.MinRatio + math.Floor((hi-p.MinRatio)/p.Step+1e-9)*p.Step
			if hi <= p.MinRatio {
				continue
			}
			s.space[g.Name] = goptuna.DiscreteUniformDistribution{Low: p.MinRatio, High: hi, Q: p.Step}
		} else {
			s.space[g.Name] = goptuna.UniformDistribution{Low: p.MinRatio, High: hi}
		}
		s.groups = append(s.groups, g)
	}
	if len(s.groups) == 0 {
		return fmt.Errorf("config %s: [prune]: no group left to search", s.cfg.Path)
	}
	crit, err := s.criterion()
	if err != nil {
		return err
	}
	s.crit = crit
	return nil
}

// taylorSamples is how many training samples the Taylor criterion's gradients average over.
const taylorSamples = 256

// criterion is Options.Criterion, or the config's: "taylor" ranks channels by the loss
// gradients on a seeded sample of the training data.
func (s *Search) criterion() (prune.Criterion, error) {
	if s.opts.Criterion != nil {
		return s.opts.Criterion, nil
	}
	name := s.cfg.Prune.Criterion
	if name != "taylor" {
		crit, err := prune.NewCriterion(name, s.cfg.Study.Seed)
		if err != nil {
			return nil, fmt.Errorf("config %s: prune.criterion: %w", s.cfg.Path, err)
		}
		return crit, nil
	}
	_, sample, err := s.trainSet.Split(min(float64(taylorSamples)/float64(s.trainSet.N), 0.5), s.cfg.Study.Seed+1)
	if err != nil {
		return nil, fmt.Errorf("prune.criterion taylor: %w", err)
	}
	_, grads, err := train.Gradients(s.base, sample.Images, sample.Labels, sample.N)
	if err != nil {
		return nil, fmt.Errorf("prune.criterion taylor: %w", err)
	}
	return prune.Taylor{Grads: grads}, nil
}

func loadSensitivity(path string) (*prune.SensitivityReport, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var rep prune.SensitivityReport
	if err := json.Unmarshal(b, &rep); err != nil {
		return nil, fmt.Errorf("%s: not a sensitivity report: %w", path, err)
	}
	return &rep, nil
}

func groupNames(gs []prune.Group) string {
	var out []byte
	for i, g := range gs {
		if i > 0 {
			out = append(out, ", "...)
		}
		out = append(out, g.Name...)
	}
	return string(out)
}

func (s *Search) buildObjective() error {
	if s.opts.Objective != nil {
		s.obj = s.opts.Objective
		return nil
	}
	o := s.cfg.Objective
	var p objectives.Params
	if o.Target != "" {
		t, err := objectives.ParseTarget(o.Target)
		if err != nil {
			return fmt.Errorf("config %s: %w: objective.target: %w", s.cfg.Path, config.ErrConfig, err)
		}
		p.Target = t
	}
	if o.Weight != nil {
		p.Weight, p.HasWeight = *o.Weight, true
	}
	p.Bytes, p.SizeWeight, p.HasSizeWeight = o.MaxBytes, o.SizeWeight, o.SizeWeight != 0
	obj, err := objectives.New(o.Kind, p)
	if err != nil {
		return fmt.Errorf("config %s: %w: objective: %w", s.cfg.Path, config.ErrConfig, err)
	}
	s.obj = obj
	return nil
}

// measureDense scores the base model: validation accuracy, latency, size.
func (s *Search) measureDense(ctx context.Context) error {
	meter, err := s.configuredMeter()
	if err != nil {
		return err
	}
	s.meter = meter
	score, err := eval.Accuracy(ctx, s.base, s.valSet, 500, 1)
	if err != nil {
		return err
	}
	m, err := s.sizeMetrics(s.base)
	if err != nil {
		return err
	}
	m.Accuracy, m.Loss, m.RelLatency = score.Accuracy, score.Loss, 1
	if m.Latency, err = s.measureDenseLatency(ctx); err != nil {
		return fmt.Errorf("measuring the dense model: %w", err)
	}
	s.dense = m
	s.logf("dense %s: validation accuracy %.2f %%, latency %s, %d params, %.2f M MACs",
		s.base.Name, 100*m.Accuracy, m.Latency, m.Params, float64(m.MACs)/1e6)
	return nil
}

// configuredMeter returns the meter for [latency], or nil for the local interleaved one.
func (s *Search) configuredMeter() (eval.Meter, error) {
	if s.opts.Meter != nil {
		return s.opts.Meter, nil
	}
	l := s.cfg.Latency
	switch l.Meter {
	case "local":
		return nil, nil
	case "agent":
		token := ""
		if l.TokenEnv != "" {
			token = os.Getenv(l.TokenEnv)
		}
		return &eval.RemoteMeter{URL: l.Agent, Token: token, Batch: l.Batch, Threads: l.Threads,
			Warmup: l.Warmup, Runs: l.Runs, Timeout: l.Timeout.Duration, Retries: 3}, nil
	case "lut":
		t, err := eval.LoadLUT(s.cfg.Resolve(l.LUT))
		if err != nil {
			return nil, fmt.Errorf("config %s: %w: latency.lut: %w", s.cfg.Path, config.ErrConfig, err)
		}
		if t.Batch != l.Batch || t.Threads != l.Threads {
			return nil, fmt.Errorf("config %s: latency.lut: the table was profiled at batch %d with %d thread(s), [latency] asks for batch %d with %d",
				s.cfg.Path, t.Batch, t.Threads, l.Batch, l.Threads)
		}
		return &eval.LUTMeter{Table: t}, nil
	case "command":
		return &eval.CommandMeter{Argv: l.Command, Dir: s.cfg.Dir(), Batch: l.Batch, Threads: l.Threads,
			Warmup: l.Warmup, Runs: l.Runs, Timeout: l.Timeout.Duration}, nil
	case "macs":
		// A proxy, labelled as such: calibrated once against a local measurement of the
		// dense model so its numbers are in the right unit.
		mm, err := eval.CalibrateMACs(context.Background(), &eval.LocalMeter{Batch: l.Batch, Threads: l.Threads, Runs: l.Runs, Warmup: l.Warmup}, s.base)
		if err != nil {
			return nil, err
		}
		return &mm, nil
	}
	return nil, fmt.Errorf("config %s: latency.meter %q is not supported", s.cfg.Path, l.Meter)
}

func (s *Search) sizeMetrics(m *nn.Model) (eval.Metrics, error) {
	params, macs, err := m.Totals()
	if err != nil {
		return eval.Metrics{}, err
	}
	var cw countingWriter
	if err := nn.Encode(&cw, m); err != nil {
		return eval.Metrics{}, err
	}
	return eval.Metrics{Params: params, MACs: macs, Bytes: cw.n}, nil
}

type countingWriter struct{ n int64 }

func (w *countingWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

// processSeed derives this process's sampler seed: the configured seed for the process
// that creates the study (so one worker reproduces a study), mixed with the number of
// trials already stored and the worker label otherwise (so a resumed or second worker does
// not repeat the first points).
func processSeed(seed int64, existing int, creator bool, worker string) int64 {
	if creator && existing == 0 {
		return seed
	}
	h := fnv.New64a()
	fmt.Fprintf(h, "%d/%d/%s/%d", seed, existing, worker, time.Now().UnixNano())
	return int64(h.Sum64() & math.MaxInt64)
}

func (s *Search) openStudy(ctx context.Context) error {
	store, err := OpenStorage(s.cfg.Resolve(s.cfg.Study.Storage))
	if err != nil {
		return err
	}
	s.store = store
	name := s.cfg.Study.Name
	_, lookErr := store.st.GetStudyIDFromName(name)
	creator := lookErr != nil
	existing := 0
	if !creator {
		id, _ := store.st.GetStudyIDFromName(name)
		if ts, err := store.st.GetAllTrials(id); err == nil {
			existing = len(ts)
		}
	}
	s.seed = processSeed(s.cfg.Study.Seed, existing, creator, s.opts.Worker)
	opts := []goptuna.StudyOption{
		goptuna.StudyOptionStorage(store.st),
		goptuna.StudyOptionDirection(goptuna.StudyDirectionMaximize),
		goptuna.StudyOptionLogger(nil),
		goptuna.StudyOptionLoadIfExists(true),
	}
	switch s.cfg.Study.Sampler {
	case "tpe":
		if !globalSeedWorks() {
			s.warnf("rand.Seed has no effect in this program (add \"godebug randseednop=0\" to its go.mod): TPE will not repeat a study exactly")
		}
		opts = append(opts, goptuna.StudyOptionSampler(reseeded{Sampler: tpe.NewSampler(
			tpe.SamplerOptionSeed(s.seed), tpe.SamplerOptionNumberOfStartupTrials(6)), seed: s.seed}))
	case "random":
		opts = append(opts, goptuna.StudyOptionSampler(goptuna.NewRandomSampler(goptuna.RandomSamplerOptionSeed(s.seed))))
	case "cmaes", "cmaes-ipop":
		copts := []cmaes.SamplerOption{cmaes.SamplerOptionSeed(s.seed), cmaes.SamplerOptionNStartupTrials(0)}
		x0, _, err := s.nearTarget(ctx)
		if err != nil {
			return fmt.Errorf("choosing where CMA-ES starts: %w", err)
		}
		if x0 != nil {
			// CMA-ES starts on the target's latency contour instead of the middle of the
			// space, sparing the generations it would spend walking there.
			copts = append(copts, cmaes.SamplerOptionInitialMean(x0))
		}
		if s.cfg.Study.Sampler == "cmaes-ipop" {
			copts = append(copts, cmaes.SamplerOptionIPop(2))
		}
		opts = append(opts,
			goptuna.StudyOptionRelativeSampler(cmaes.NewSampler(copts...)),
			goptuna.StudyOptionSampler(goptuna.NewRandomSampler(goptuna.RandomSamplerOptionSeed(s.seed))),
			goptuna.StudyOptionDefineSearchSpace(s.space))
	}
	switch s.cfg.Stopper.Kind {
	case "median":
		p := medianstopping.NewMedianPruner()
		p.NStartUpTrials = s.cfg.Stopper.Startup
		p.NWarmUpSteps = s.cfg.Stopper.MinRounds
		opts = append(opts, goptuna.StudyOptionPruner(p))
	case "successive-halving":
		p, err := successivehalving.NewPruner(successivehalving.OptionMinResource(max(1, s.cfg.Stopper.MinRounds)), successivehalving.OptionReductionFactor(3))
		if err != nil {
			return err
		}
		opts = append(opts, goptuna.StudyOptionPruner(p))
	}
	// Another worker may be creating the study right now: goptuna creates it and then sets
	// its direction, and the creator then measures the dense model and the uniform plans
	// before it records the groups. Wait for a study in the making to be complete.
	var study *goptuna.Study
	for wait := time.Duration(0); ; wait += 500 * time.Millisecond {
		study, err = goptuna.CreateStudy(name, opts...)
		if err != nil {
			return fmt.Errorf("study %s in %s: %w", name, redact(store.URL), err)
		}
		if creator && study.Direction() == goptuna.StudyDirectionMaximize {
			break
		}
		// Two workers that both found no study may both have asked goptuna to create it:
		// the second loads it before the first has set its direction. Wait for the study
		// in the making, as a worker that found it does.
		creator = false
		attrs, err := study.GetUserAttrs()
		if err != nil {
			return fmt.Errorf("study %s in %s: %w", name, redact(store.URL), err)
		}
		trials, err := study.GetTrials()
		if err != nil {
			return fmt.Errorf("study %s in %s: %w", name, redact(store.URL), err)
		}
		if attrs[studyAttrGroups] != "" || len(trials) > 0 || wait >= 10*time.Minute {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	if study.Direction() != goptuna.StudyDirectionMaximize {
		return fmt.Errorf("study %s in %s exists and minimises: not an autoprune study", name, redact(store.URL))
	}
	s.study = study
	if creator {
		if err := s.initStudy(ctx); err != nil {
			return err
		}
	} else if err := s.checkStudy(ctx); err != nil {
		return err
	}
	return nil
}

// initStudy records the dense measurements and the searched groups, and enqueues the
// uniform warm-start plans so the search can never report worse than uniform pruning, and
// the best plans of the screening.
func (s *Search) initStudy(ctx context.Context) error {
	// Measured before the study is marked as made: a creator killed while screening leaves
	// a study without groups and trials, which the next run makes again.
	near, _, err := s.nearTarget(ctx)
	if err != nil {
		return fmt.Errorf("measuring uniform plans: %w", err)
	}
	best, err := s.screen(ctx, near)
	if err != nil {
		return err
	}
	dense, _ := json.Marshal(s.dense)
	groups, _ := json.Marshal(s.groups)
	// The groups go last: they mark the study as made (other workers wait for them, and a
	// study without them and without trials is made again).
	attrs := [][2]string{{studyAttrDense, string(dense)}, {studyAttrConfig, s.cfg.Path}}
	var text strings.Builder
	if err := toml.NewEncoder(&text).Encode(s.cfg); err == nil {
		attrs = append(attrs, [2]string{studyAttrConfigTOML, text.String()})
	}
	if c := s.constraint(); c.any() {
		b, _ := json.Marshal(c)
		attrs = append(attrs, [2]string{studyAttrConstraint, string(b)})
	}
	if key := s.objectiveKey(); key != "" {
		attrs = append(attrs, [2]string{studyAttrObjective, key})
	}
	attrs = append(attrs, [2]string{studyAttrGroups, string(groups)})
	for _, a := range attrs {
		if err := s.study.SetUserAttr(a[0], a[1]); err != nil {
			return &storageError{fmt.Errorf("study %s: recording %s: %w", s.cfg.Study.Name, a[0], err)}
		}
	}
	seen := map[string]bool{}
	enqueue := func(params map[string]float64, what string) error {
		key := fmt.Sprint(params)
		if seen[key] {
			return nil
		}
		seen[key] = true
		if err := s.study.EnqueueTrial(params); err != nil {
			return fmt.Errorf("enqueueing the %s plan: %w", what, err)
		}
		return nil
	}
	// Plans fitted to the target make every uniform plan the same one, the least pruned
	// that meets it (enqueued below): the warm-start ratios would only repeat it.
	fitted := *s.cfg.Prune.FitTarget && s.constraint().Target != ""
	for _, r := range s.cfg.Study.Warmstart {
		if fitted {
			break
		}
		params := map[string]float64{}
		for name, d := range s.space {
			params[name] = clampToSpace(d, r)
		}
		if err := enqueue(params, fmt.Sprintf("uniform %.2f", r)); err != nil {
			return err
		}
	}
	// Every sampler also starts from the least pruned uniform plan that meets the target.
	if near != nil {
		params := map[string]float64{}
		for name, d := range s.space {
			params[name] = clampToSpace(d, near[name])
		}
		if err := enqueue(params, "uniform plan closest to the target"); err != nil {
			return err
		}
	}
	for _, p := range best {
		if err := enqueue(p.params, "screened"); err != nil {
			return err
		}
	}
	return nil
}

// checkStudy makes sure a resumed study searches the same groups, and finishes making a
// study whose creator stopped before recording them.
func (s *Search) checkStudy(ctx context.Context) error {
	attrs, err := s.study.GetUserAttrs()
	if err != nil {
		return err
	}
	if attrs[studyAttrGroups] == "" {
		trials, err := s.study.GetTrials()
		if err != nil {
			return err
		}
		if len(trials) == 0 {
			s.logf("study %s was left half made (no groups, no trial): making it again", s.cfg.Study.Name)
			return s.initStudy(ctx)
		}
	}
	var stored []prune.Group
	if err := json.Unmarshal([]byte(attrs[studyAttrGroups]), &stored); err != nil {
		return fmt.Errorf("study %s exists but was not made by autoprune (no groups recorded)", s.cfg.Study.Name)
	}
	if groupNames(stored) != groupNames(s.groups) {
		return fmt.Errorf("study %s searches groups [%s] but this config gives [%s]: use another study name or storage",
			s.cfg.Study.Name, groupNames(stored), groupNames(s.groups))
	}
	if was, now := attrs[studyAttrObjective], s.objectiveKey(); was != "" && now != "" && was != now {
		return fmt.Errorf("config %s: %w: [objective]: study %s was scored with %s, this config gives %s: its scores would not compare (use another study name, or the objective it was made with)",
			s.cfg.Path, config.ErrConfig, s.cfg.Study.Name, was, now)
	}
	return nil
}

// objectiveKey describes the config's objective, "" for one given in Options.
func (s *Search) objectiveKey() string {
	if s.opts.Objective != nil {
		return ""
	}
	o := s.cfg.Objective
	key := fmt.Sprintf("objective %s, target %q", o.Kind, o.Target)
	if o.Weight != nil {
		key += fmt.Sprintf(", weight %g", *o.Weight)
	}
	if o.MaxBytes != 0 || o.SizeWeight != 0 {
		key += fmt.Sprintf(", max_bytes %d, size_weight %g", o.MaxBytes, o.SizeWeight)
	}
	return key
}

func clampToSpace(d interface{}, r float64) float64 {
	switch d := d.(type) {
	case goptuna.DiscreteUniformDistribution:
		v := d.Low + math.Floor((r-d.Low)/d.Q+1e-9)*d.Q
		return math.Max(d.Low, math.Min(d.High, v))
	case goptuna.UniformDistribution:
		return math.Max(d.Low, math.Min(d.High, r))
	}
	return r
}

// tally is the progress of the study, counted from storage.
type tally struct {
	Complete, Pruned, Failed, Running, Waiting int
}

// Done is the number of finished evaluations: complete plus early-stopped trials.
func (p tally) Done() int { return p.Complete + p.Pruned }

func (s *Search) progress() (tally, []goptuna.FrozenTrial, error) {
	ts, err := s.study.GetTrials()
	if err != nil {
		return tally{}, nil, err
	}
	var p tally
	for _, t := range ts {
		switch t.State {
		case goptuna.TrialStateComplete:
			p.Complete++
		case goptuna.TrialStatePruned:
			p.Pruned++
		case goptuna.TrialStateFail:
			p.Failed++
		case goptuna.TrialStateRunning:
			p.Running++
		case goptuna.TrialStateWaiting:
			p.Waiting++
		}
	}
	return p, ts, nil
}

// noteBest records the best complete trial of ts that meets the constraint.
func (s *Search) noteBest(ts []goptuna.FrozenTrial) {
	c := s.constraint()
	for _, ft := range ts {
		if ft.State != goptuna.TrialStateComplete || (s.best != nil && ft.Value <= s.best.Value) {
			continue
		}
		if t := decodeTrial(ft); t.Metric != nil && c.Miss(*t.Metric, 0) == "" {
			s.best = &t
		}
	}
}

// reapStale marks RUNNING trials whose heartbeat is older than the lease as failed and
// enqueues their plans again, so a killed worker loses no point of the search.
func (s *Search) reapStale(ts []goptuna.FrozenTrial) (int, error) {
	n := 0
	for _, t := range ts {
		if t.State != goptuna.TrialStateRunning {
			continue
		}
		last := t.DatetimeStart
		if hb, err := strconv.ParseInt(t.SystemAttrs[attrHeartbeat], 10, 64); err == nil {
			last = time.UnixMilli(hb)
		}
		if time.Since(last) < s.opts.Lease {
			continue
		}
		err := s.store.st.SetTrialState(t.ID, goptuna.TrialStateFail)
		if errors.Is(err, goptuna.ErrTrialCannotBeUpdated) {
			continue // another worker got there first
		}
		if err != nil {
			return n, err
		}
		if err := s.store.st.SetTrialUserAttr(t.ID, attrError, fmt.Sprintf("stale: no heartbeat since %s (worker %s vanished)", last.Format(time.RFC3339), t.UserAttrs[attrWorker])); err != nil {
			s.warnf("stale trial %d failed, but its reason was not stored: %v", t.Number, err)
		}
		if len(t.InternalParams) > 0 {
			if err := s.study.EnqueueTrial(t.InternalParams); err != nil {
				return n, err
			}
		}
		n++
		s.logf("trial %d was left running by a stopped worker: marked failed, plan enqueued again", t.Number)
	}
	return n, nil
}

// Run evaluates trials until the study holds the configured number of finished trials
// (counting every worker's), the time limit passes, or ctx is cancelled. A failing trial is
// recorded with its reason and the study goes on; storage errors and cancellation stop it.
func (s *Search) Run(ctx context.Context) error {
	start := time.Now()
	limit := s.cfg.Study.TimeLimit.Duration
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		p, ts, err := s.progress()
		if err != nil {
			return fmt.Errorf("reading the study: %w", err)
		}
		if reaped, err := s.reapStale(ts); err != nil {
			return err
		} else if reaped > 0 {
			continue
		}
		s.noteBest(ts)
		if p.Done() >= s.cfg.Study.Trials {
			s.log.Info(fmt.Sprintf("study %s: %d trials finished (%d complete, %d stopped early, %d failed)", s.cfg.Study.Name, p.Done(), p.Complete, p.Pruned, p.Failed),
				"event", EventStudy, "done", p.Done(), "complete", p.Complete, "pruned", p.Pruned, "failed", p.Failed)
			return nil
		}
		if p.Done()+p.Running >= s.cfg.Study.Trials && p.Waiting == 0 {
			// Other workers are finishing the last trials.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(2 * time.Second):
			}
			continue
		}
		if p.Failed > 2*s.cfg.Study.Trials+10 {
			return fmt.Errorf("study %s: %d trials failed; see \"autoprune report\" for the reasons", s.cfg.Study.Name, p.Failed)
		}
		if limit > 0 && time.Since(start) > limit {
			s.logf("time limit %s reached with %d of %d trials finished", limit, p.Done(), s.cfg.Study.Trials)
			return nil
		}
		if err := s.runOne(ctx, p); err != nil {
			return err
		}
	}
}

// runOne creates (or pops a waiting) trial and evaluates it.
func (s *Search) runOne(ctx context.Context, p tally) error {
	id, err := s.popWaiting()
	if err != nil {
		return err
	}
	if id < 0 {
		if id, err = s.store.st.CreateNewTrial(s.study.ID); err != nil {
			return fmt.Errorf("creating a trial: %w", err)
		}
	}
	trial := goptuna.Trial{Study: s.study, ID: id}
	if err := s.store.st.SetTrialUserAttr(id, attrWorker, s.opts.Worker); err != nil {
		return fmt.Errorf("storing trial %d: %w", id, err)
	}
	stopBeat := s.heartbeat(id)
	defer stopBeat()
	if err := trial.CallRelativeSampler(); err != nil {
		return fmt.Errorf("sampler: %w", err)
	}
	number, _ := trial.Number()
	started := time.Now()
	value, m, steps, terr := s.evaluate(ctx, trial)
	stopBeat()

	if ctx.Err() != nil {
		// Interrupted: mark failed and enqueue the plan again, so a rerun finishes it.
		err := errors.Join(s.store.st.SetTrialUserAttr(id, attrError, "interrupted"), s.store.st.SetTrialState(id, goptuna.TrialStateFail))
		ft, gerr := s.store.st.GetTrial(id)
		err = errors.Join(err, gerr)
		if gerr == nil && len(ft.InternalParams) > 0 {
			err = errors.Join(err, s.study.EnqueueTrial(ft.InternalParams))
		}
		if err != nil {
			s.warnf("trial %d was interrupted and could not be put back (%v): the next run retries it once its heartbeat is stale", number, err)
		}
		return ctx.Err()
	}
	var se *storageError
	if errors.As(terr, &se) {
		return fmt.Errorf("storing trial %d: %w", number, se.err)
	}
	attrs := [][2]string{{attrWall, strconv.FormatInt(time.Since(started).Milliseconds(), 10)}, {attrSteps, strconv.Itoa(steps)}}
	if m != nil {
		b, _ := json.Marshal(m)
		attrs = append(attrs, [2]string{attrMetrics, string(b)})
	}
	if terr != nil && !errors.Is(terr, goptuna.ErrTrialPruned) {
		attrs = append(attrs, [2]string{attrError, terr.Error()})
	}
	for _, a := range attrs {
		if err := s.store.st.SetTrialUserAttr(id, a[0], a[1]); err != nil {
			return fmt.Errorf("storing trial %d: %w", number, err)
		}
	}
	state := goptuna.TrialStateComplete
	switch {
	case errors.Is(terr, goptuna.ErrTrialPruned):
		state = goptuna.TrialStatePruned
		if ft, err := s.store.st.GetTrial(id); err == nil {
			if last, ok := ft.GetLatestStep(); ok {
				value = ft.IntermediateValues[last]
			}
		}
	case terr != nil:
		state = goptuna.TrialStateFail
	}
	if state != goptuna.TrialStateFail {
		if err := s.store.st.SetTrialValue(id, value); err != nil {
			return s.lostTrial(number, err)
		}
	}
	if err := s.store.st.SetTrialState(id, state); err != nil {
		return s.lostTrial(number, err)
	}
	done := p.Done()
	if state != goptuna.TrialStateFail {
		done++
	}
	s.logTrial(number, state, value, m, terr, done, time.Since(started))
	if s.opts.OnTrial != nil {
		ft, err := s.store.st.GetTrial(id)
		if err != nil {
			return fmt.Errorf("reading trial %d back: %w", number, err)
		}
		r := decodeTrial(ft)
		if r.Metric != nil {
			r.Miss = s.constraint().Miss(*r.Metric, 0)
		}
		s.opts.OnTrial(r)
	}
	return nil
}

func (s *Search) lostTrial(number int, err error) error {
	if errors.Is(err, goptuna.ErrTrialCannotBeUpdated) {
		s.logf("trial %d was declared stale by another worker while it ran; its result is dropped", number)
		return nil
	}
	return fmt.Errorf("storing trial %d: %w", number, err)
}

func (s *Search) logTrial(number int, state goptuna.TrialState, value float64, m *eval.Metrics, err error, done int, wall time.Duration) {
	attrs := []any{"event", EventTrial, "trial", number, "done", done, "total", s.cfg.Study.Trials, "wall_s", wall.Seconds()}
	var msg string
	switch {
	case state == goptuna.TrialStateFail:
		msg = fmt.Sprintf("[%d/%d] trial %d failed after %s: %v", done, s.cfg.Study.Trials, number, wall.Round(time.Millisecond), err)
		attrs = append(attrs, "state", "fail", "error", fmt.Sprint(err))
	case m != nil:
		tag, st := "", "complete"
		if state == goptuna.TrialStatePruned {
			tag, st = " (stopped early)", "pruned"
		}
		msg = fmt.Sprintf("[%d/%d] trial %d%s: score %.4f  acc %.2f %%  latency %.3f ms (%.2fx dense)  MACs %.0f %%  %s",
			done, s.cfg.Study.Trials, number, tag, value, 100*m.Accuracy, float64(m.Latency.Median)/1e6,
			m.RelLatency, 100*float64(m.MACs)/float64(max(s.dense.MACs, 1)), wall.Round(time.Millisecond))
		attrs = append(attrs, "state", st, "score", value, "acc", m.Accuracy, "rel_latency", m.RelLatency,
			"latency_ms", float64(m.Latency.Median)/1e6)
		if state == goptuna.TrialStateComplete && s.constraint().Miss(*m, 0) == "" && (s.best == nil || value > s.best.Value) {
			s.best = &TrialResult{Number: number, State: st, Value: value, Metric: m}
		}
	default:
		return
	}
	if b := s.best; b != nil {
		attrs = append(attrs, "best_trial", b.Number, "best_score", b.Value, "best_acc", b.Metric.Accuracy, "best_rel_latency", b.Metric.RelLatency)
	}
	s.log.Info(msg, attrs...)
}

// storageError is a failed write to the study's storage during a trial: it stops the
// study rather than being recorded as the trial's failure, since a trial whose plan or
// metrics are not stored cannot be reported, resumed or chosen.
type storageError struct{ err error }

func (e *storageError) Error() string { return "storage: " + e.err.Error() }
func (e *storageError) Unwrap() error { return e.err }

// popWaiting claims an enqueued trial, or returns -1.
func (s *Search) popWaiting() (int, error) {
	ts, err := s.study.GetTrials()
	if err != nil {
		return -1, err
	}
	for _, t := range ts {
		if t.State != goptuna.TrialStateWaiting {
			continue
		}
		err := s.store.st.SetTrialState(t.ID, goptuna.TrialStateRunning)
		if errors.Is(err, goptuna.ErrTrialCannotBeUpdated) {
			continue
		}
		if err != nil {
			return -1, err
		}
		return t.ID, nil
	}
	return -1, nil
}

// heartbeat refreshes the trial's heartbeat until the returned function is called.
func (s *Search) heartbeat(id int) func() {
	warned := false
	beat := func() {
		if err := s.store.st.SetTrialSystemAttr(id, attrHeartbeat, strconv.FormatInt(time.Now().UnixMilli(), 10)); err != nil && !warned {
			warned = true // once per trial: a storage that fails keeps failing
			s.warnf("heartbeat of a running trial not stored (%v): if this lasts, other workers will take the trial for stale", err)
		}
	}
	beat()
	done := make(chan struct{})
	var once sync.Once
	every := s.opts.Lease / 8
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				beat()
			}
		}
	}()
	return func() { once.Do(func() { close(done) }) }
}

// Plan reads a trial's plan from its parameters.
func (s *Search) plan(trial goptuna.Trial) (prune.Plan, error) {
	p := prune.Plan{}
	names := make([]string, 0, len(s.space))
	for n := range s.space {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		var v float64
		var err error
		switch d := s.space[n].(type) {
		case goptuna.DiscreteUniformDistribution:
			v, err = trial.SuggestDiscreteFloat(n, d.Low, d.High, d.Q)
		case goptuna.UniformDistribution:
			v, err = trial.SuggestFloat(n, d.Low, d.High)
		}
		if err != nil {
			return nil, fmt.Errorf("suggesting %s: %w", n, err)
		}
		p[n] = math.Round(v*1e6) / 1e6
	}
	return p, nil
}

// evaluate runs one trial: prune, recalibrate, measure latency, fine-tune in rounds
// reporting the objective to the stopper, and score.
func (s *Search) evaluate(ctx context.Context, trial goptuna.Trial) (float64, *eval.Metrics, int, error) {
	plan, err := s.plan(trial)
	if err != nil {
		return 0, nil, 0, err
	}
	if plan, err = s.fitted(ctx, plan); err != nil {
		return 0, nil, 0, fmt.Errorf("fitting the plan to the latency target: %w", err)
	}
	pb, _ := json.Marshal(plan)
	if err := s.store.st.SetTrialUserAttr(trial.ID, attrPlan, string(pb)); err != nil {
		return 0, nil, 0, &storageError{err}
	}
	number, _ := trial.Number()
	cand, err := prune.Structured(s.base, plan, s.crit)
	if err != nil {
		return 0, nil, 0, err
	}
	arch := cand.Hash()
	if v, m, ok, err := s.scoreDuplicate(trial, arch); ok {
		return v, m, 0, err
	}
	if err := s.store.st.SetTrialUserAttr(trial.ID, attrArch, arch); err != nil {
		return 0, nil, 0, &storageError{err}
	}
	m, err := s.sizeMetrics(cand)
	if err != nil {
		return 0, nil, 0, err
	}
	e, err := s.measure(ctx, cand, false)
	if err != nil {
		return 0, &m, 0, fmt.Errorf("latency: %w", err)
	}
	m.Latency, m.RelLatency, m.RelSpread = e.lat, e.rel, e.spread
	f := s.cfg.Finetune
	seed := s.cfg.Study.Seed*1000003 + int64(number)
	tuned, steps, err := s.finetune(ctx, fmt.Sprintf("trial %d", number), cand, f.Steps, f.Rounds, seed, func(round int, tm *nn.Model) error {
		score, err := eval.Accuracy(ctx, tm, s.valSet, 500, 1)
		if err != nil {
			return err
		}
		m.Accuracy, m.Loss = score.Accuracy, score.Loss
		s.log.Debug(fmt.Sprintf("  trial %d round %d/%d: accuracy %.2f %%", number, round, f.Rounds, 100*m.Accuracy),
			"event", EventRound, "trial", number, "round", round, "rounds", f.Rounds, "acc", m.Accuracy)
		v, err := s.obj.Score(m)
		if err != nil {
			return err
		}
		if round < f.Rounds && s.study.Pruner != nil {
			return trial.ShouldPrune(round, v)
		}
		return nil
	})
	if err != nil {
		return 0, &m, steps, err
	}
	_ = tuned
	v, err := s.obj.Score(m)
	if err != nil {
		return 0, &m, steps, err
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, &m, steps, fmt.Errorf("objective %s gave %v", s.obj.Name(), v)
	}
	return v, &m, steps, nil
}

// scoreDuplicate scores a trial whose pruned architecture an earlier finished trial already
// had (plans that differ by less than a channel in every group prune to the same model):
// it takes that trial's metrics and score, or its early stop, instead of fine-tuning the
// same model again. ok is false when the architecture is new.
func (s *Search) scoreDuplicate(trial goptuna.Trial, arch string) (float64, *eval.Metrics, bool, error) {
	ts, err := s.study.GetTrials()
	if err != nil {
		return 0, nil, false, nil
	}
	for _, t := range ts {
		if t.ID == trial.ID || t.UserAttrs[attrArch] != arch {
			continue
		}
		var m eval.Metrics
		if json.Unmarshal([]byte(t.UserAttrs[attrMetrics]), &m) != nil {
			continue
		}
		switch t.State {
		case goptuna.TrialStateComplete:
		case goptuna.TrialStatePruned:
			step, ok := t.GetLatestStep()
			if !ok {
				continue
			}
			if err := s.store.st.SetTrialIntermediateValue(trial.ID, step, t.IntermediateValues[step]); err != nil {
				return 0, nil, false, nil
			}
		default:
			continue
		}
		for _, a := range [][2]string{{attrArch, arch}, {attrDupOf, strconv.Itoa(t.Number)}} {
			if err := s.store.st.SetTrialUserAttr(trial.ID, a[0], a[1]); err != nil {
				return 0, nil, true, &storageError{err}
			}
		}
		number, _ := trial.Number()
		s.logf("  trial %d prunes to the same architecture as trial %d: scored from it", number, t.Number)
		if t.State == goptuna.TrialStatePruned {
			return 0, &m, true, goptuna.ErrTrialPruned
		}
		return t.Value, &m, true, nil
	}
	return 0, nil, false, nil
}

// finetune recalibrates batch norms, then fine-tunes with distillation from the base model
// (labels only when finetune.distill_weight is 0) for steps optimizer steps split in
// rounds, calling onRound with the current model after each round (an error from onRound,
// such as a stop, ends the fine-tuning).
func (s *Search) finetune(ctx context.Context, what string, m *nn.Model, steps, rounds int, seed int64, onRound func(round int, m *nn.Model) error) (*nn.Model, int, error) {
	f := s.cfg.Finetune
	var err error
	if f.BNBatches > 0 {
		if m, err = train.RecalibrateBN(ctx, m, s.trainSet, f.BNBatches, f.Batch, seed); err != nil {
			return nil, 0, fmt.Errorf("batch-norm recalibration: %w", err)
		}
	}
	if steps == 0 {
		return m, 0, onRound(rounds, m)
	}
	cfg := train.Config{
		Steps: steps, BatchSize: f.Batch, LR: f.LR, Schedule: "cosine", Seed: seed,
		Temperature: f.Temperature, DistillWeight: *f.DistillWeight,
	}
	tr, err := train.NewTrainer(m, f.Batch, cfg)
	if err != nil {
		return nil, 0, err
	}
	defer tr.Close()
	classes := len(s.teacher) / s.trainSet.N
	teach := make([]float32, f.Batch*classes)
	b := data.NewBatcher(s.trainSet, f.Batch, true, seed, true)
	done, epoch := 0, int64(0)
	every := max(1, steps/50) // progress events per fine-tune
	for r := 1; r <= rounds; r++ {
		until := steps * r / rounds
		for done < until {
			if err := ctx.Err(); err != nil {
				return nil, done, err
			}
			batch, ok := b.Next()
			if !ok {
				epoch++
				b.Reset(seed + epoch)
				continue
			}
			var loss float64
			if *f.DistillWeight == 0 {
				loss, err = tr.Step(batch.Images, batch.Labels)
			} else {
				for j, i := range batch.Index {
					copy(teach[j*classes:(j+1)*classes], s.teacher[i*classes:(i+1)*classes])
				}
				loss, err = tr.StepDistill(batch.Images, batch.Labels, teach)
			}
			if err != nil {
				return nil, done, err
			}
			if math.IsNaN(loss) || math.IsInf(loss, 0) {
				return nil, done, fmt.Errorf("fine-tuning diverged at step %d (loss %v)", done+1, loss)
			}
			if (done+1)%every == 0 || done+1 == steps {
				s.log.Debug(fmt.Sprintf("  %s: fine-tune step %d/%d loss %.4f", what, done+1, steps, loss),
					"event", EventFinetune, "what", what, "step", done+1, "steps", steps, "loss", loss)
			}
			done++
		}
		cur := tr.Model()
		if err := onRound(r, cur); err != nil {
			return cur, done, err
		}
		m = cur
	}
	return m, done, nil
}
