package search

// Opening a search: the data, the base model, the searched space, the objective, the
// meter and the dense measurements, each checked before the long work starts.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/c-bata/goptuna"

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
			return s.cfg.KeyError("data", err)
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
				return s.cfg.KeyError("data.mean", err)
			}
		}
	}
	if full.HeldOut > 0 {
		s.logf("validation: the %d held-out samples of %s (its val/ folder); data.val_samples does not apply", full.HeldOut, full.Name)
	} else if d.ValSamples*2 > full.N {
		return s.cfg.KeyError("data.val_samples", fmt.Errorf("%d is more than half of the %d training samples of %s",
			d.ValSamples, full.N, full.Name))
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
		return s.cfg.KeyError("study.storage", unsupportedScheme(st))
	}
	if l := s.cfg.Latency; l.Meter == "lut" && s.opts.Meter == nil {
		t, err := eval.LoadLUT(s.cfg.Resolve(l.LUT))
		if err != nil {
			return s.cfg.KeyError("latency.lut", err)
		}
		if err := lutFits(t, l.Batch, l.Threads); err != nil {
			return s.cfg.KeyError("latency.lut", err)
		}
	}
	if p := s.cfg.Prune.Sensitivity; p != "" {
		if _, err := loadSensitivity(s.cfg.Resolve(p)); err != nil {
			return s.cfg.KeyError("prune.sensitivity", err)
		}
	}
	return nil
}

// lutFits refuses a latency table profiled at another batch size or thread count than
// [latency] asks for.
func lutFits(t *eval.LUT, batch, threads int) error {
	if t.Batch != batch || t.Threads != threads {
		return fmt.Errorf("the table was profiled at batch %d with %d thread(s), [latency] asks for batch %d with %d",
			t.Batch, t.Threads, batch, threads)
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
		if err := fileio.CheckWritable(dir); err != nil {
			return s.cfg.KeyError(o[0], fmt.Errorf("cannot write in folder %s: %v", dir, err))
		}
	}
	return nil
}

// checkShapes refuses, before any work, a base model whose input or output does not fit
// the data.
func (s *Search) checkShapes() error {
	in, d := s.base.Input, s.trainSet
	if in.C != d.C || in.H != d.H || in.W != d.W {
		return s.cfg.KeyError("model.file", fmt.Errorf("%s (%s) expects %v inputs, but the data (%s) has %dx%dx%d images",
			s.cfg.Model.File, s.base.Name, in, d.Name, d.C, d.H, d.W))
	}
	shapes, err := s.base.Shapes()
	if err != nil {
		return fmt.Errorf("config %s: model.file %s: %w", s.cfg.Path, s.cfg.Model.File, err)
	}
	if out := shapes[len(shapes)-1].Size(); out < d.Classes {
		return s.cfg.KeyError("model.file", fmt.Errorf("%s (%s) has %d outputs, but the data (%s) has %d classes",
			s.cfg.Model.File, s.base.Name, out, d.Name, d.Classes))
	}
	return nil
}

// loadBase takes Options.Model or loads model.file.
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
			return s.cfg.KeyError("model.file", err)
		}
		if err != nil {
			return err
		}
		s.base = m
		s.logf("base model %s loaded from %s", m.Name, path)
		return nil
	}
	if s.cfg.Model.Zoo == "" {
		return s.cfg.KeyError("model.file", fmt.Errorf("%s does not exist and model.zoo is not set to train it", path))
	}
	return fmt.Errorf("config %s: model.file %s does not exist yet: search.TrainBase trains model.zoo %s into it (\"autoprune search\" does)", s.cfg.Path, path, s.cfg.Model.Zoo)
}

// trainBase trains the zoo model once on the training part and saves it as model.file.
func (s *Search) trainBase(ctx context.Context) error {
	path := s.cfg.Resolve(s.cfg.Model.File)
	if s.cfg.Model.Zoo == "" {
		return s.cfg.KeyError("model.file", fmt.Errorf("%s does not exist and model.zoo is not set to train it", path))
	}
	shape := nn.Shape{C: s.trainSet.C, H: s.trainSet.H, W: s.trainSet.W}
	m, err := zoo.Build(s.cfg.Model.Zoo, shape, s.trainSet.Classes, s.cfg.Data.SplitSeed)
	if err != nil {
		return s.cfg.KeyError("model.zoo", err)
	}
	// The groups do not depend on the weights: a misspelt group is refused before training.
	gs, err := prune.Groups(m)
	if err != nil {
		return err
	}
	if err := s.checkGroupNames(gs); err != nil {
		return err
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
	return nil
}

// checkGroupNames refuses a prune.include or prune.exclude entry that names no group of gs.
func (s *Search) checkGroupNames(gs []prune.Group) error {
	known := map[string]bool{}
	for _, g := range gs {
		known[g.Name] = true
	}
	for _, list := range []struct {
		key   string
		names []string
	}{{"prune.include", s.cfg.Prune.Include}, {"prune.exclude", s.cfg.Prune.Exclude}} {
		for _, n := range list.names {
			if !known[n] {
				return s.cfg.KeyError(list.key, fmt.Errorf("unknown group %q (groups: %s)", n, groupNames(gs)))
			}
		}
	}
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
	if err := s.checkGroupNames(gs); err != nil {
		return err
	}
	bounds := map[string]float64{}
	if p.Sensitivity != "" {
		rep, err := loadSensitivity(s.cfg.Resolve(p.Sensitivity))
		if err != nil {
			return s.cfg.KeyError("prune.sensitivity", err)
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
			return nil, s.cfg.KeyError("prune.criterion", err)
		}
		return crit, nil
	}
	crit, err := train.TaylorCriterion(s.base, s.trainSet, s.cfg.Study.Seed)
	if err != nil {
		return nil, s.cfg.KeyError("prune.criterion", err)
	}
	return crit, nil
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
			return s.cfg.KeyError("objective.target", err)
		}
		p.Target = t
	}
	if o.Weight != nil {
		p.Weight, p.HasWeight = *o.Weight, true
	}
	p.Bytes, p.SizeWeight, p.HasSizeWeight = o.MaxBytes, o.SizeWeight, o.SizeWeight != 0
	obj, err := objectives.New(o.Kind, p)
	if err != nil {
		return s.cfg.KeyError("objective.kind", err)
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
			return nil, s.cfg.KeyError("latency.lut", err)
		}
		if err := lutFits(t, l.Batch, l.Threads); err != nil {
			return nil, s.cfg.KeyError("latency.lut", err)
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
	return nil, s.cfg.KeyError("latency.meter", fmt.Errorf("%q is not supported (config.Meters lists %s)", l.Meter, strings.Join(config.Meters, ", ")))
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
