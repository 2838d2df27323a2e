// Package config reads a study file: one TOML file that describes a whole pruning search
// (the base model, the data, the search space, fine-tuning, how latency is measured, the
// objective, early stopping and the final outputs). Decoding is strict: unknown keys, wrong
// types and out-of-range values are errors that name the file, the line and the key.
package config

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/autoprune/autoprune/data"
	"github.com/autoprune/autoprune/objectives"
	"github.com/autoprune/autoprune/prune"
)

// ErrConfig is wrapped by every error about a config file's content.
var ErrConfig = errors.New("invalid config")

// Duration is a time.Duration written as a string such as "9m" or "500ms".
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("want a duration such as \"10m\" or \"500ms\", got %q", b)
	}
	d.Duration = v
	return nil
}

// MarshalText formats the duration.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Config is a whole study.
type Config struct {
	Study     Study     `toml:"study"`
	Model     Model     `toml:"model"`
	Data      Data      `toml:"data"`
	Prune     Prune     `toml:"prune"`
	Finetune  Finetune  `toml:"finetune"`
	Latency   Latency   `toml:"latency"`
	Objective Objective `toml:"objective"`
	Stopper   Stopper   `toml:"stopper"`
	Final     Final     `toml:"final"`

	// Path is the file the config was read from; relative paths in it are relative to its
	// folder.
	Path string `toml:"-"`
	// lines gives, for every key and section the file sets, the line that sets it.
	lines map[string]int
}

// KeyError returns an input error (wrapping ErrConfig and err) about a key of the config,
// such as "latency.lut", for mistakes found after parsing: "config PATH:LINE: invalid
// config: KEY: ERR", with the line that sets the key, or its section's line when the key
// is left to its default, or no line for a config built in Go.
func (c *Config) KeyError(key string, err error) error {
	line := c.lines[key]
	if line == 0 {
		if i := strings.IndexByte(key, '.'); i > 0 {
			line = c.lines[key[:i]]
		}
	}
	if line == 0 {
		return fmt.Errorf("config %s: %w: %s: %w", c.Path, ErrConfig, key, err)
	}
	return fmt.Errorf("config %s:%d: %w: %s: %w", c.Path, line, ErrConfig, key, err)
}

// Study names the study and says where it is stored and how the search runs.
type Study struct {
	Name      string    `toml:"name"`       // default: the config file name without extension
	Storage   string    `toml:"storage"`    // SQLite file path (default NAME.db beside the config), postgres://... or mysql://...
	Sampler   string    `toml:"sampler"`    // tpe (default), cmaes, cmaes-ipop, random
	Trials    int       `toml:"trials"`     // completed trials wanted in total (default 30)
	TimeLimit Duration  `toml:"time_limit"` // stop starting new trials after this long (0: none)
	Seed      int64     `toml:"seed"`       // sampler and fine-tuning seed (default 1)
	Warmstart []float64 `toml:"warmstart"`  // uniform ratios enqueued first (default [0.25, 0.5]; not with plans fitted to a target, which would all be the same)
	// StaleAfter is how long a RUNNING trial may go without a heartbeat before another run
	// or worker takes it for abandoned (its process killed) and retries it (default 2m;
	// longer for a device that can stall for minutes).
	StaleAfter Duration `toml:"stale_after"`
	// Screen is how many random plans, fitted to the latency target, are scored before the
	// trials without any fine-tuning (batch norms recalibrated, validation accuracy). The
	// best ScreenKeep of them are the study's first trials. Only with plans fitted to a
	// target. Default 0 (none): on Fashion-MNIST it cost 3 to 4 minutes a study and did not
	// raise the winners' accuracy (docs/BENCHMARKS.md).
	Screen     int `toml:"screen"`
	ScreenKeep int `toml:"screen_keep"` // default 3
}

// Model is the base (dense) model.
type Model struct {
	Zoo         string `toml:"zoo"`          // zoo model to train when File does not exist
	File        string `toml:"file"`         // model file; trained from Zoo and cached here when missing
	TrainEpochs int    `toml:"train_epochs"` // epochs for that training (default 2)
}

// Data is the dataset and how it is split.
type Data struct {
	Dataset string `toml:"dataset"` // mnist (default), fashion-mnist, folder (images) or npy (NumPy arrays)
	Dir     string `toml:"dir"`     // folder of the files (default: built in / Debian's; required for folder and npy)
	// ImageSize resizes the images of a folder to ImageSize x ImageSize (default: the
	// first image's size); Channels reads them as 1 (gray) or 3 (RGB) channels (default:
	// from the first image).
	ImageSize int `toml:"image_size"`
	Channels  int `toml:"channels"`
	// Mean and Std normalise every channel, (x - mean) / std, after pixels are scaled to
	// [0,1]: one value for all channels or one per channel (default: no normalisation).
	Mean         []float64 `toml:"mean"`
	Std          []float64 `toml:"std"`
	ValSamples   int       `toml:"val_samples"`   // held out of the training set for validation (default 5000)
	SplitSeed    int64     `toml:"split_seed"`    // seed of the train/validation split and the base model (default 1)
	TrainSamples int       `toml:"train_samples"` // training samples used for fine-tuning (0: all the rest)
}

// Prune is the search space.
type Prune struct {
	Criterion   string   `toml:"criterion"`    // l1 (default), l2, bn, random, taylor (loss gradients on training samples)
	Include     []string `toml:"include"`      // groups to search (default: all)
	Exclude     []string `toml:"exclude"`      // groups never pruned
	MinRatio    float64  `toml:"min_ratio"`    // default 0
	MaxRatio    float64  `toml:"max_ratio"`    // default 0.8
	Step        float64  `toml:"step"`         // ratio grid step (default 0.05; 0 for continuous)
	Sensitivity string   `toml:"sensitivity"`  // JSON from "autoprune sensitivity": bounds the ratios per group
	MaxDrop     float64  `toml:"max_drop"`     // accuracy drop allowed per group with Sensitivity (default 0.02)
	MinChannels int      `toml:"min_channels"` // channels every group keeps at least (default 1)
	RoundTo     int      `toml:"round_to"`     // kept channels rounded up to a multiple of this, such as 4 or 8 (default 1: no rounding)
	// FitTarget shifts every proposed plan by one ratio so that it just meets the latency
	// target (default true when there is one): the sampler decides how pruning is spread
	// over the groups, and no trial spends less or more than the latency budget.
	FitTarget *bool `toml:"fit_target"`
}

// Finetune is the quick fine-tuning of each candidate.
type Finetune struct {
	Steps         int      `toml:"steps"`          // optimizer steps per trial (default 200)
	Batch         int      `toml:"batch"`          // default 64
	LR            float64  `toml:"lr"`             // default 1e-3 (adam)
	Temperature   float64  `toml:"temperature"`    // distillation temperature (default 1: higher ones cost pruned students accuracy)
	DistillWeight *float64 `toml:"distill_weight"` // weight of the distillation loss in [0, 1] (default 0.7; 0 for labels only)
	BNBatches     int      `toml:"bn_batches"`     // batch-norm recalibration batches before fine-tuning (default 20)
	Rounds        int      `toml:"rounds"`         // accuracy reports to the stopper per trial (default 4)
	ValSamples    int      `toml:"val_samples"`    // validation samples scored per round (default: all)
}

// Latency says how latency is measured.
type Latency struct {
	Meter    string   `toml:"meter"`     // local (default), agent, lut, macs, command
	Batch    int      `toml:"batch"`     // default 1
	Threads  int      `toml:"threads"`   // default 1
	Runs     int      `toml:"runs"`      // timed runs per measurement (default 50)
	Warmup   int      `toml:"warmup"`    // untimed runs (default 5)
	Agent    string   `toml:"agent"`     // URL of "autoprune agent" for meter = agent
	TokenEnv string   `toml:"token_env"` // environment variable holding the agent token
	Timeout  Duration `toml:"timeout"`   // per request to the agent (default 2m)
	LUT      string   `toml:"lut"`       // lookup table from "autoprune profile" for meter = lut
	CPU      *int     `toml:"cpu"`       // meter = local: pin the measuring thread to this CPU (0-based)
	// Command is the latency runner of meter = "command", run without a shell in the
	// config's folder: it times ONNX exports of the models in the runtime you deploy with
	// (see eval.CommandMeter), such as ["node", "../runners/onnxruntime.js"].
	Command []string `toml:"command"`
	// MaxSpread is how precisely a latency ratio must be known before it is scored: the
	// relative half-width of its 95 % interval (default 0.03, ±3 %). A wider one, or one
	// whose dense reference drifted, is measured again, up to MaxRounds rounds in all.
	MaxSpread float64 `toml:"max_spread"`
	MaxRounds int     `toml:"max_rounds"` // measurement rounds per candidate at most (default 4)
}

// Objective is what the search maximises.
type Objective struct {
	Kind       string   `toml:"kind"`        // mnas-hard (default), mnas-soft, budget, weighted, or a registered name
	Target     string   `toml:"target"`      // latency target: "0.5x" of the dense model (default) or "2ms"
	Weight     *float64 `toml:"weight"`      // MnasNet exponent (negative) or the latency weight of weighted
	MaxBytes   int64    `toml:"max_bytes"`   // size budget (budget) or size reference (weighted)
	SizeWeight float64  `toml:"size_weight"` // weighted only
}

// Stopper ends hopeless trials early.
type Stopper struct {
	Kind      string `toml:"kind"`       // none, median (default), successive-halving
	Startup   int    `toml:"startup"`    // trials before stopping starts (median; default 5)
	MinRounds int    `toml:"min_rounds"` // rounds before a trial may be stopped (default 1)
}

// Final is what happens with the best candidate.
type Final struct {
	Steps   int    `toml:"steps"`    // longer fine-tune of the winner (default 1000; aggressive targets gain from more: docs/BENCHMARKS.md)
	Out     string `toml:"out"`      // pruned model file (default NAME-best.safetensors)
	PlanOut string `toml:"plan_out"` // its plan (default NAME-best.plan.toml)
	Pareto  bool   `toml:"pareto"`   // also fine-tune and save the Pareto front (default false)
	// ONNX also writes each saved model as ONNX beside it, NAME-best.onnx (default true).
	ONNX *bool `toml:"onnx"`
	// Candidates is how many of the best trials that meet the target are measured again in
	// fresh rounds, and re-ranked by a longer fine-tune, before the winner is chosen
	// (default 3; 1 takes the best trial as stored).
	Candidates int `toml:"candidates"`
	// RerankSteps is the fine-tune that re-ranks the candidates. The default, final.steps,
	// gives every candidate the winner's final fine-tune (same steps, same seed), so the
	// ranking judges exactly what is delivered and the winner's model is kept, not tuned
	// again; fewer steps rank more cheaply, then the winner is tuned again; 0 re-ranks by
	// the trials' own scores with the re-measured latency.
	RerankSteps *int `toml:"rerank_steps"`
	// UniformMargin guards the delivery against choosing by noise: the best uniform trial
	// that meets the target (the warm start fitted to it) is always among the re-ranked
	// candidates, and a searched plan is delivered instead of it only when its validation
	// accuracy after the re-ranking fine-tune is higher by at least this many standard
	// errors of the paired difference (default 1; 0 delivers whichever is more accurate).
	UniformMargin float64 `toml:"uniform_margin"`
}

// Default returns the config an empty file gives: every default filled in, a study named
// "study" stored in study.db, relative paths resolved against the working directory. A
// program builds its config from it and changes what it needs, then calls Validate.
func Default() *Config {
	c := &Config{}
	c.defaults()
	return c
}

// Validate checks a config built or changed in Go as Parse checks a file: every value in
// its range, every name known. It fills in nothing: start from Default. The error wraps
// ErrConfig and names the key.
func (c *Config) Validate() error {
	if c == nil {
		return fmt.Errorf("config: %w: nil config (start from config.Default())", ErrConfig)
	}
	for key, unset := range map[string]bool{
		"finetune.distill_weight": c.Finetune.DistillWeight == nil, "prune.fit_target": c.Prune.FitTarget == nil,
		"final.rerank_steps": c.Final.RerankSteps == nil, "final.onnx": c.Final.ONNX == nil,
	} {
		if unset {
			return fmt.Errorf("config: %w: %s is not set (start from config.Default())", ErrConfig, key)
		}
	}
	if err := c.validate(); err != nil {
		return fmt.Errorf("config %s: %w: %v", orDefault(c.Path, "(built in Go)"), ErrConfig, err)
	}
	return nil
}

// Load reads, defaults and validates a config file.
func Load(path string) (*Config, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("config %s: no such file", path)
		}
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	c, err := Parse(string(src), path)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Parse decodes a config from TOML text; path is used in messages and for relative paths.
func Parse(src, path string) (*Config, error) {
	if isPlan(src) {
		return nil, fmt.Errorf("config %s: %w: this is a pruning plan (a [ratios] table of group = ratio), not a study config: apply it with \"autoprune prune MODEL --plan %s --out OUT\"", path, ErrConfig, path)
	}
	c := &Config{Path: path}
	md, err := toml.Decode(src, c)
	if err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			msg := perr.Message
			if perr.LastKey != "" {
				msg = fmt.Sprintf("key %s: %s", perr.LastKey, msg)
			}
			return nil, fmt.Errorf("config %s:%d: %w: %s", path, perr.Position.Line, ErrConfig, msg)
		}
		if m := decodeLine.FindStringSubmatch(err.Error()); m != nil {
			return nil, fmt.Errorf("config %s:%s: %w: key %s: %s", path, m[1], ErrConfig, m[2], m[3])
		}
		return nil, fmt.Errorf("config %s: %w: %v", path, ErrConfig, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		k := und[0]
		if len(k) == 1 && md.Type(k...) == "Hash" {
			return nil, fmt.Errorf("config %s:%d: %w: unknown section [%s]%s", path, lineOf(src, k), ErrConfig, k, suggest(k))
		}
		return nil, fmt.Errorf("config %s:%d: %w: unknown key %s%s", path, lineOf(src, k), ErrConfig, k, suggest(k))
	}
	c.lines = map[string]int{}
	for _, k := range md.Keys() {
		switch {
		case len(k) == 1 && md.Type(k...) == "Hash":
			c.lines[k[0]] = sectionLine(src, k[0])
		case len(k) <= 2:
			c.lines[strings.Join(k, ".")] = lineOf(src, k)
		}
	}
	zeros := c.explicitZeros(md)
	c.defaults()
	for _, z := range zeros {
		z()
	}
	if !md.IsDefined("final", "rerank_steps") {
		n := c.Final.Steps // the re-ranking is the final fine-tune, zero steps included
		c.Final.RerankSteps = &n
	}
	if err := c.validate(); err != nil {
		var fe *fieldError
		if errors.As(err, &fe) {
			return nil, fmt.Errorf("config %s:%d: %w: %s: %s", path, lineOf(src, strings.Split(fe.key, ".")), ErrConfig, fe.key, fe.msg)
		}
		return nil, fmt.Errorf("config %s: %w: %v", path, ErrConfig, err)
	}
	return c, nil
}

// explicitZeros returns, for every number the file sets to zero, a function that puts the
// zero back after defaults() filled it: a value the user wrote is honoured (prune.step = 0
// is a continuous space, final.steps = 0 skips the final fine-tune) or refused by validate
// (study.trials = 0), never silently replaced by the default.
func (c *Config) explicitZeros(md toml.MetaData) []func() {
	ints := map[string]*int{
		"study.trials": &c.Study.Trials, "study.screen": &c.Study.Screen, "study.screen_keep": &c.Study.ScreenKeep,
		"model.train_epochs": &c.Model.TrainEpochs,
		"data.val_samples":   &c.Data.ValSamples, "finetune.steps": &c.Finetune.Steps,
		"finetune.batch": &c.Finetune.Batch, "finetune.bn_batches": &c.Finetune.BNBatches,
		"finetune.rounds": &c.Finetune.Rounds, "latency.batch": &c.Latency.Batch,
		"latency.threads": &c.Latency.Threads, "latency.runs": &c.Latency.Runs,
		"latency.warmup": &c.Latency.Warmup, "latency.max_rounds": &c.Latency.MaxRounds,
		"stopper.startup": &c.Stopper.Startup, "stopper.min_rounds": &c.Stopper.MinRounds,
		"final.steps": &c.Final.Steps, "final.candidates": &c.Final.Candidates,
		"prune.min_channels": &c.Prune.MinChannels, "prune.round_to": &c.Prune.RoundTo,
	}
	floats := map[string]*float64{
		"prune.max_ratio": &c.Prune.MaxRatio, "prune.step": &c.Prune.Step,
		"prune.max_drop": &c.Prune.MaxDrop, "finetune.lr": &c.Finetune.LR,
		"finetune.temperature": &c.Finetune.Temperature, "latency.max_spread": &c.Latency.MaxSpread,
		"final.uniform_margin": &c.Final.UniformMargin,
	}
	int64s := map[string]*int64{"study.seed": &c.Study.Seed, "data.split_seed": &c.Data.SplitSeed,
		"study.stale_after": (*int64)(&c.Study.StaleAfter.Duration), "latency.timeout": (*int64)(&c.Latency.Timeout.Duration)}
	var out []func()
	defined := func(key string) bool { return md.IsDefined(strings.Split(key, ".")...) }
	for k, p := range ints {
		if *p == 0 && defined(k) {
			out = append(out, func() { *p = 0 })
		}
	}
	for k, p := range floats {
		if *p == 0 && defined(k) {
			out = append(out, func() { *p = 0 })
		}
	}
	for k, p := range int64s {
		if *p == 0 && defined(k) {
			out = append(out, func() { *p = 0 })
		}
	}
	return out
}

// isPlan tells a plan file (what a search writes beside its winner, or "prune --plan"
// reads) from a study config: it has a [ratios] table and none of a config's sections.
func isPlan(src string) bool {
	var probe map[string]any
	if _, err := toml.Decode(src, &probe); err != nil {
		return false
	}
	if _, ok := probe["ratios"].(map[string]any); !ok {
		return false
	}
	for _, k := range []string{"study", "model", "data", "prune", "finetune", "latency", "objective", "stopper", "final"} {
		if _, ok := probe[k]; ok {
			return false
		}
	}
	return true
}

// decodeLine picks the line, key and message out of the decoder's type errors.
var decodeLine = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]*)"\): (.*)$`)

// suggest lists the valid keys of the section an unknown key is in.
func suggest(k toml.Key) string {
	sections := map[string]any{"study": Study{}, "model": Model{}, "data": Data{}, "prune": Prune{},
		"finetune": Finetune{}, "latency": Latency{}, "objective": Objective{}, "stopper": Stopper{}, "final": Final{}}
	if len(k) == 1 {
		return "; sections: " + strings.Join(sortedKeys(sections), ", ")
	}
	v, ok := sections[k[0]]
	if !ok {
		return fmt.Sprintf(" (no section [%s]; sections: %s)", k[0], strings.Join(sortedKeys(sections), ", "))
	}
	return fmt.Sprintf(" (keys of [%s]: %s)", k[0], strings.Join(tomlKeys(v), ", "))
}

func sortedKeys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// sectionLine finds the line of a "[section]" header, 0 when there is none.
func sectionLine(src, section string) int {
	hdr := regexp.MustCompile(`^\s*\[\s*` + regexp.QuoteMeta(section) + `\s*\]`)
	for i, l := range strings.Split(src, "\n") {
		if hdr.MatchString(l) {
			return i + 1
		}
	}
	return 0
}

// lineOf finds the line where a key is set: the "[section]" header, then "key =" below it.
func lineOf(src string, key []string) int {
	lines := strings.Split(src, "\n")
	start := 0
	if len(key) > 1 {
		start = max(0, sectionLine(src, key[0])-1)
	}
	last := key[len(key)-1]
	kre := regexp.MustCompile(`^\s*"?` + regexp.QuoteMeta(last) + `"?\s*=`)
	for i := start; i < len(lines); i++ {
		if kre.MatchString(lines[i]) {
			return i + 1
		}
	}
	if len(key) > 1 && start > 0 {
		return start + 1
	}
	return 1
}

type fieldError struct{ key, msg string }

func (e *fieldError) Error() string { return e.key + ": " + e.msg }

func bad(key, format string, args ...any) error {
	return &fieldError{key: key, msg: fmt.Sprintf(format, args...)}
}

// Dir returns the folder relative paths in the config are resolved against.
func (c *Config) Dir() string {
	if c.Path == "" {
		return "."
	}
	return filepath.Dir(c.Path)
}

// Resolve returns p relative to the config's folder, unless it is absolute or a URL.
func (c *Config) Resolve(p string) string {
	if p == "" || filepath.IsAbs(p) || strings.Contains(p, "://") {
		return p
	}
	return filepath.Join(c.Dir(), p)
}

func (c *Config) defaults() {
	s := &c.Study
	if s.Name == "" {
		base := filepath.Base(c.Path)
		s.Name = strings.TrimSuffix(base, filepath.Ext(base))
		if s.Name == "" || s.Name == "." {
			s.Name = "study"
		}
	}
	if s.Storage == "" {
		s.Storage = s.Name + ".db"
	}
	if s.Sampler == "" {
		s.Sampler = "tpe"
	}
	if s.Trials == 0 {
		s.Trials = 30
	}
	if s.Seed == 0 {
		s.Seed = 1
	}
	if s.Warmstart == nil {
		s.Warmstart = []float64{0.25, 0.5}
	}
	if s.ScreenKeep == 0 {
		s.ScreenKeep = 3
	}
	if s.StaleAfter.Duration == 0 {
		s.StaleAfter.Duration = 2 * time.Minute
	}
	if c.Model.Zoo == "" && c.Model.File == "" {
		c.Model.Zoo = "lenet5"
	}
	if c.Model.File == "" {
		set := orDefault(c.Data.Dataset, "mnist")
		if (set == "folder" || set == "npy") && c.Data.Dir != "" {
			set = filepath.Base(filepath.Clean(c.Data.Dir)) // one cached base model per folder
		}
		c.Model.File = c.Model.Zoo + "-" + set + ".safetensors"
	}
	if c.Model.TrainEpochs == 0 {
		c.Model.TrainEpochs = 2
	}
	d := &c.Data
	if d.Dataset == "" {
		d.Dataset = "mnist"
	}
	if d.SplitSeed == 0 {
		d.SplitSeed = 1
	}
	if d.ValSamples == 0 {
		d.ValSamples = 5000
	}
	p := &c.Prune
	if p.Criterion == "" {
		p.Criterion = "l1"
	}
	if p.MaxRatio == 0 {
		p.MaxRatio = 0.8
	}
	if p.Step == 0 {
		p.Step = 0.05
	}
	if p.MaxDrop == 0 {
		p.MaxDrop = 0.02
	}
	if p.MinChannels == 0 {
		p.MinChannels = 1
	}
	if p.RoundTo == 0 {
		p.RoundTo = 1
	}
	if p.FitTarget == nil {
		fit := true
		p.FitTarget = &fit
	}
	f := &c.Finetune
	if f.Steps == 0 {
		f.Steps = 200
	}
	if f.Batch == 0 {
		f.Batch = 64
	}
	if f.LR == 0 {
		f.LR = 1e-3
	}
	if f.Temperature == 0 {
		f.Temperature = 1
	}
	if f.DistillWeight == nil {
		w := 0.7
		f.DistillWeight = &w
	}
	if f.BNBatches == 0 {
		f.BNBatches = 20
	}
	if f.Rounds == 0 {
		f.Rounds = 4
	}
	l := &c.Latency
	if l.Meter == "" {
		l.Meter = "local"
	}
	if l.Batch == 0 {
		l.Batch = 1
	}
	if l.Threads == 0 {
		l.Threads = 1
	}
	if l.Runs == 0 {
		l.Runs = 50
	}
	if l.Warmup == 0 {
		l.Warmup = 5
	}
	if l.Timeout.Duration == 0 {
		l.Timeout.Duration = 2 * time.Minute
	}
	if l.MaxSpread == 0 {
		l.MaxSpread = 0.03
	}
	if l.MaxRounds == 0 {
		l.MaxRounds = 4
	}
	o := &c.Objective
	if o.Kind == "" {
		o.Kind = "mnas-hard"
	}
	if o.Target == "" && o.Kind != "budget" && o.Kind != "weighted" {
		o.Target = "0.5x"
	}
	st := &c.Stopper
	if st.Kind == "" {
		st.Kind = "median"
	}
	if st.Startup == 0 {
		st.Startup = 5
	}
	if st.MinRounds == 0 {
		st.MinRounds = 1
	}
	fi := &c.Final
	if fi.Steps == 0 {
		fi.Steps = 1000
	}
	if fi.Candidates == 0 {
		fi.Candidates = 3
	}
	if fi.UniformMargin == 0 {
		fi.UniformMargin = 1
	}
	if fi.RerankSteps == nil {
		n := fi.Steps
		fi.RerankSteps = &n
	}
	if fi.ONNX == nil {
		on := true
		fi.ONNX = &on
	}
	if fi.Out == "" {
		fi.Out = s.Name + "-best.safetensors"
	}
	if fi.PlanOut == "" {
		fi.PlanOut = s.Name + "-best.plan.toml"
	}
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// The names a config may give, one list per concept.
var (
	// Samplers are the values of study.sampler.
	Samplers = []string{"tpe", "cmaes", "cmaes-ipop", "random"}
	// Meters are the values of latency.meter.
	Meters = []string{"local", "agent", "lut", "macs", "command"}
	// Stoppers are the values of stopper.kind.
	Stoppers = []string{"none", "median", "successive-halving"}
)

func oneOf(key, v string, allowed ...string) error {
	for _, a := range allowed {
		if v == a {
			return nil
		}
	}
	return bad(key, "%q is not one of %s", v, strings.Join(allowed, ", "))
}

func (c *Config) validate() error {
	s := c.Study
	if !regexp.MustCompile(`^[A-Za-z0-9._-]+$`).MatchString(s.Name) {
		return bad("study.name", "%q: use letters, digits, '.', '_' and '-'", s.Name)
	}
	if err := oneOf("study.sampler", s.Sampler, Samplers...); err != nil {
		return err
	}
	if s.Trials < 1 || s.Trials > 100000 {
		return bad("study.trials", "%d: want 1..100000", s.Trials)
	}
	if s.TimeLimit.Duration < 0 {
		return bad("study.time_limit", "%s must not be negative", s.TimeLimit)
	}
	if s.Screen < 0 || s.Screen > 10000 {
		return bad("study.screen", "%d: want 0..10000 plans", s.Screen)
	}
	if s.ScreenKeep < 0 || s.ScreenKeep > 10000 {
		return bad("study.screen_keep", "%d: want 0..10000 plans", s.ScreenKeep)
	}
	if s.StaleAfter.Duration < 10*time.Second {
		return bad("study.stale_after", "%s: want at least 10s (trials send a heartbeat every few seconds)", s.StaleAfter)
	}
	for _, r := range s.Warmstart {
		if !(r >= 0 && r < 1) {
			return bad("study.warmstart", "ratio %v: want ratios in [0, 1)", r)
		}
	}
	if c.Model.TrainEpochs < 1 || c.Model.TrainEpochs > 100 {
		return bad("model.train_epochs", "%d: want 1..100", c.Model.TrainEpochs)
	}
	d := c.Data
	if err := oneOf("data.dataset", d.Dataset, data.Names...); err != nil {
		return err
	}
	if (d.Dataset == "folder" || d.Dataset == "npy") && d.Dir == "" {
		return bad("data.dir", "missing: data set %q reads its files from a folder", d.Dataset)
	}
	if d.ImageSize < 0 || d.ImageSize > 4096 {
		return bad("data.image_size", "%d: want 1..4096", d.ImageSize)
	}
	if d.Channels != 0 && d.Channels != 1 && d.Channels != 3 {
		return bad("data.channels", "%d: want 1 or 3", d.Channels)
	}
	if (d.ImageSize != 0 || d.Channels != 0) && d.Dataset != "folder" {
		return bad("data.image_size", "applies to image folders (dataset = \"folder\") only")
	}
	if (len(d.Mean) == 0) != (len(d.Std) == 0) {
		return bad("data.mean", "give data.mean and data.std together")
	}
	for _, v := range d.Std {
		if !(v > 0) || math.IsInf(v, 0) {
			return bad("data.std", "%v: want positive values", v)
		}
	}
	for _, v := range d.Mean {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return bad("data.mean", "%v: want finite values", v)
		}
	}
	if d.ValSamples < 100 || d.ValSamples > 30000 {
		return bad("data.val_samples", "%d: want 100..30000", d.ValSamples)
	}
	if d.TrainSamples < 0 {
		return bad("data.train_samples", "%d must not be negative", d.TrainSamples)
	}
	p := c.Prune
	if err := oneOf("prune.criterion", p.Criterion, prune.AllCriteria...); err != nil {
		return err
	}
	if !(p.MinRatio >= 0 && p.MinRatio < 1) {
		return bad("prune.min_ratio", "%v: want a ratio in [0, 1)", p.MinRatio)
	}
	if !(p.MaxRatio > 0 && p.MaxRatio < 1) || p.MaxRatio < p.MinRatio {
		return bad("prune.max_ratio", "%v: want a ratio in (0, 1), at least min_ratio (%v)", p.MaxRatio, p.MinRatio)
	}
	if !(p.Step >= 0 && p.Step <= p.MaxRatio-p.MinRatio) && p.MaxRatio > p.MinRatio {
		return bad("prune.step", "%v: want 0 (continuous) or a step no larger than max_ratio - min_ratio", p.Step)
	}
	if !(p.MaxDrop > 0 && p.MaxDrop < 1) {
		return bad("prune.max_drop", "%v: want an accuracy drop in (0, 1)", p.MaxDrop)
	}
	f := c.Finetune
	switch {
	case f.Steps < 0 || f.Steps > 1000000:
		return bad("finetune.steps", "%d: want 0..1000000", f.Steps)
	case f.Batch < 1 || f.Batch > 4096:
		return bad("finetune.batch", "%d: want 1..4096", f.Batch)
	case !(f.LR > 0 && f.LR < 10):
		return bad("finetune.lr", "%v: want a learning rate in (0, 10)", f.LR)
	case !(f.Temperature >= 1 && f.Temperature <= 100):
		return bad("finetune.temperature", "%v: want 1..100", f.Temperature)
	case !(*f.DistillWeight >= 0 && *f.DistillWeight <= 1):
		return bad("finetune.distill_weight", "%v: want a weight in [0, 1]", *f.DistillWeight)
	case f.BNBatches < 0 || f.BNBatches > 10000:
		return bad("finetune.bn_batches", "%d: want 0..10000", f.BNBatches)
	case f.Rounds < 1 || f.Rounds > 100:
		return bad("finetune.rounds", "%d: want 1..100", f.Rounds)
	case f.ValSamples < 0:
		return bad("finetune.val_samples", "%d must not be negative", f.ValSamples)
	}
	if c.Prune.MinChannels < 1 || c.Prune.MinChannels > 4096 {
		return bad("prune.min_channels", "%d: want 1..4096", c.Prune.MinChannels)
	}
	if c.Prune.RoundTo < 1 || c.Prune.RoundTo > 256 {
		return bad("prune.round_to", "%d: want 1..256 (such as 4 or 8; 1 for no rounding)", c.Prune.RoundTo)
	}
	l := c.Latency
	if l.Timeout.Duration < time.Second {
		return bad("latency.timeout", "%s: want at least 1s per request to the agent", l.Timeout)
	}
	if err := oneOf("latency.meter", l.Meter, Meters...); err != nil {
		return err
	}
	switch {
	case l.Batch < 1 || l.Batch > 256:
		return bad("latency.batch", "%d: want 1..256", l.Batch)
	case l.Threads < 1 || l.Threads > 64:
		return bad("latency.threads", "%d: want 1..64", l.Threads)
	case l.Runs < 1 || l.Runs > 10000:
		return bad("latency.runs", "%d: want 1..10000", l.Runs)
	case l.Warmup < 1 || l.Warmup > 1000:
		return bad("latency.warmup", "%d: want 1..1000", l.Warmup)
	case l.CPU != nil && (*l.CPU < 0 || *l.CPU > 4095):
		return bad("latency.cpu", "%d: want a CPU number, 0 for the first", *l.CPU)
	case l.CPU != nil && l.Meter != "local":
		return bad("latency.cpu", "pins local measurements only; with meter = %q start the agent with --cpu instead", l.Meter)
	case l.CPU != nil && l.Threads != 1:
		return bad("latency.cpu", "pins one thread: needs latency.threads = 1, not %d", l.Threads)
	case l.Meter == "agent" && !strings.HasPrefix(l.Agent, "http://") && !strings.HasPrefix(l.Agent, "https://"):
		return bad("latency.agent", "%q: meter = \"agent\" needs the agent's URL, such as \"http://192.168.1.20:7070\"", l.Agent)
	case !(l.MaxSpread > 0 && l.MaxSpread < 1):
		return bad("latency.max_spread", "%v: want a fraction in (0, 1), such as 0.03 for ±3 %%", l.MaxSpread)
	case l.MaxRounds < 1 || l.MaxRounds > 100:
		return bad("latency.max_rounds", "%d: want 1..100", l.MaxRounds)
	case l.Meter == "lut" && l.LUT == "":
		return bad("latency.lut", "meter = \"lut\" needs a lookup table file from \"autoprune profile\"")
	case l.Meter == "command" && (len(l.Command) == 0 || l.Command[0] == ""):
		return bad("latency.command", "meter = \"command\" needs the runner, such as [\"node\", \"../runners/onnxruntime.js\"]")
	case l.Meter != "command" && len(l.Command) > 0:
		return bad("latency.command", "is the runner of meter = \"command\", not of meter = %q", l.Meter)
	}
	o := c.Objective
	if o.Target != "" {
		if _, err := objectives.ParseTarget(o.Target); err != nil {
			return bad("objective.target", "%v", err)
		}
	}
	if o.MaxBytes < 0 {
		return bad("objective.max_bytes", "%d must not be negative", o.MaxBytes)
	}
	if o.Weight != nil && (math.IsNaN(*o.Weight) || math.IsInf(*o.Weight, 0)) {
		return bad("objective.weight", "%v is not a number", *o.Weight)
	}
	if o.Kind == "budget" && o.Target == "" && o.MaxBytes == 0 {
		return bad("objective.kind", "budget needs target (latency), max_bytes (size) or both")
	}
	st := c.Stopper
	if err := oneOf("stopper.kind", st.Kind, Stoppers...); err != nil {
		return err
	}
	if st.Startup < 0 || st.MinRounds < 0 {
		return bad("stopper.startup", "startup and min_rounds must not be negative")
	}
	if c.Final.Steps < 0 {
		return bad("final.steps", "%d must not be negative", c.Final.Steps)
	}
	if c.Final.Candidates < 1 || c.Final.Candidates > 100 {
		return bad("final.candidates", "%d: want 1..100", c.Final.Candidates)
	}
	if *c.Final.RerankSteps < 0 {
		return bad("final.rerank_steps", "%d must not be negative", *c.Final.RerankSteps)
	}
	if m := c.Final.UniformMargin; !(m >= 0 && m <= 10) {
		return bad("final.uniform_margin", "%v: want 0..10 standard errors", m)
	}
	return nil
}

// tomlKeys lists the TOML keys of a section struct.
func tomlKeys(v any) []string {
	t := reflect.TypeOf(v)
	var out []string
	for i := 0; i < t.NumField(); i++ {
		if k := strings.Split(t.Field(i).Tag.Get("toml"), ",")[0]; k != "" && k != "-" {
			out = append(out, k)
		}
	}
	return out
}
