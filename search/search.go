// Package search runs a pruning search: a goptuna study proposes a pruning ratio for every
// prunable group; each candidate is pruned for real, its batch norms recalibrated, briefly
// fine-tuned with knowledge distillation from the dense model, scored for validation
// accuracy and measured latency, and ranked by an objective. Studies live in a SQLite file
// or a PostgreSQL or MySQL database, resume after a crash and can be shared by many workers.
//
// A program that runs TPE studies needs the line "godebug randseednop=0" in its go.mod for
// a study to repeat exactly from its seed: goptuna's TPE sampler also draws from math/rand's
// global source and seeds it with rand.Seed, which does nothing since Go 1.24 unless that
// setting is given (the search warns when it is missing).
package search

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/c-bata/goptuna"

	"github.com/autoprune/autoprune/config"
	"github.com/autoprune/autoprune/data"
	"github.com/autoprune/autoprune/eval"
	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/objectives"
	"github.com/autoprune/autoprune/prune"
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
	// studyAttrMaking is the heartbeat (unix ms) of the worker making a new study, refreshed
	// until the groups are recorded: a waiting worker can tell a creator at work from one
	// that died.
	studyAttrMaking = "making"
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

// Open prepares a search: loads the data and the base model (model.file, or
// Options.Model), computes the teacher logits, measures the dense model, and creates or
// resumes the study in its storage. It trains nothing: TrainBase makes a missing base model.
func Open(ctx context.Context, cfg *config.Config, opts Options) (*Search, error) {
	if ctx == nil {
		return nil, errNilContext
	}
	s, err := prepare(cfg, opts)
	if err != nil {
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
	if s.teacher, err = eval.Logits(ctx, s.base, s.trainSet, 2); err != nil {
		return nil, fmt.Errorf("teacher logits: %w", err)
	}
	if err := s.openStudy(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// prepare makes a Search of cfg and opts with its data loaded, once every input and output
// the config names is checked.
func prepare(cfg *config.Config, opts Options) (*Search, error) {
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
	return s, nil
}

var errNilContext = errors.New("search: nil context (use context.Background())")

// TrainBase makes the base model of a search when model.file does not exist yet: it trains
// model.zoo for model.train_epochs on the training part of the data (the validation
// samples stay unseen, so every study that shares the file validates fairly) and saves it
// there. It reports whether it trained; with Options.Model or an existing file it does
// nothing. "autoprune search" calls it before Open.
func TrainBase(ctx context.Context, cfg *config.Config, opts Options) (bool, error) {
	if ctx == nil {
		return false, errNilContext
	}
	if opts.Model != nil {
		return false, nil
	}
	if cfg != nil && cfg.Model.File != "" {
		if _, err := os.Stat(cfg.Resolve(cfg.Model.File)); err == nil {
			return false, nil
		}
	}
	s, err := prepare(cfg, opts)
	if err != nil {
		return false, err
	}
	if err := s.trainBase(ctx); err != nil {
		return false, err
	}
	return true, nil
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
