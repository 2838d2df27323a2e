package config

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// shippedConfigs lists the study configs tracked in ../configs: what a search writes there
// (plans, models, databases) is not a config.
func shippedConfigs(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("git", "-C", "../configs", "ls-files", "*.toml").Output()
	if err != nil {
		t.Skipf("git ls-files in ../configs: %v (the test needs the project's git checkout)", err)
	}
	var files []string
	for _, f := range strings.Fields(string(out)) {
		files = append(files, filepath.Join("../configs", f))
	}
	return files
}

func TestShippedConfigs(t *testing.T) {
	files := shippedConfigs(t)
	if len(files) < 4 {
		t.Fatalf("configs: %v", files)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			c, err := Load(f)
			if err != nil {
				t.Fatal(err)
			}
			if c.Study.Trials < 1 || c.Finetune.Steps < 1 || c.Objective.Kind == "" {
				t.Errorf("defaults missing: %+v", c)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse("", "/tmp/x/my-study.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Study.Name != "my-study" || c.Study.Storage != "my-study.db" || c.Model.Zoo != "lenet5" ||
		c.Objective.Target != "0.5x" || c.Latency.Meter != "local" || c.Study.Sampler != "tpe" {
		t.Errorf("defaults: %+v", c)
	}
	if got := c.Resolve(c.Study.Storage); got != "/tmp/x/my-study.db" {
		t.Errorf("Resolve = %q", got)
	}
	if got := c.Resolve("postgres://localhost/test"); got != "postgres://localhost/test" {
		t.Errorf("Resolve URL = %q", got)
	}
}

// A config built in Go starts from Default, which validates as it is; Validate finds what a
// program set wrong, naming the key, and never panics on a struct literal.
func TestDefaultAndValidate(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
	if c.Study.Name != "study" || c.Study.Storage != "study.db" || c.Study.StaleAfter.Duration != 2*time.Minute || *c.Final.RerankSteps != c.Final.Steps {
		t.Errorf("Default() = %+v", c.Study)
	}
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"unknown sampler", func(c *Config) { c.Study.Sampler = "bayes" }, `study.sampler: "bayes" is not one of tpe`},
		{"no data set", func(c *Config) { c.Data.Dataset = "" }, "data.dataset"},
		{"target", func(c *Config) { c.Objective.Target = "fast" }, "objective.target"},
		{"unset pointer", func(c *Config) { c.Finetune.DistillWeight = nil }, "finetune.distill_weight is not set (start from config.Default())"},
	}
	for _, tc := range tests {
		c := Default()
		tc.edit(c)
		err := c.Validate()
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate() = %v, want ErrConfig containing %q", tc.name, err, tc.want)
		}
	}
	var nilConfig *Config
	if err := nilConfig.Validate(); !errors.Is(err, ErrConfig) {
		t.Errorf("nil config: %v", err)
	}
	if err := (&Config{}).Validate(); !errors.Is(err, ErrConfig) {
		t.Errorf("struct literal: %v", err)
	}
}

func TestBadConfigs(t *testing.T) {
	tests := []struct {
		name, src, want string
	}{
		{"unknown key", "[study]\ntrials = 3\ntrails = 4\n", "s.toml:3: invalid config: unknown key study.trails (keys of [study]:"},
		{"unknown section", "[studdy]\ntrials = 3\n", "unknown section [studdy]"},
		{"wrong type", "[study]\n\ntrials = \"many\"\n", "s.toml:3: invalid config: key study.trials: incompatible types"},
		{"syntax", "[study\ntrials = 3\n", "s.toml:2"},
		{"sampler", "[study]\nsampler = \"grid\"\n", `s.toml:2: invalid config: study.sampler: "grid" is not one of tpe, cmaes, cmaes-ipop, random`},
		{"trials", "[study]\nseed = 3\ntrials = -1\n", "s.toml:3: invalid config: study.trials: -1"},
		{"ratio", "[prune]\nmax_ratio = 1.5\n", "prune.max_ratio"},
		{"min over max", "[prune]\nmin_ratio = 0.6\nmax_ratio = 0.5\n", "prune.max_ratio"},
		{"dataset", "[data]\ndataset = \"cifar\"\n", "data.dataset"},
		{"agent url", "[latency]\nmeter = \"agent\"\n", "latency.agent"},
		{"lut", "[latency]\nmeter = \"lut\"\n", "latency.lut"},
		{"cpu negative", "[latency]\ncpu = -1\n", "s.toml:2: invalid config: latency.cpu: -1: want a CPU number"},
		{"cpu threads", "[latency]\nthreads = 2\ncpu = 1\n", "latency.cpu: pins one thread"},
		{"cpu agent", "[latency]\nmeter = \"agent\"\nagent = \"http://h:7070\"\ncpu = 1\n", "start the agent with --cpu"},
		{"target", "[objective]\ntarget = \"fast\"\n", "objective.target"},
		{"target junk", "[objective]\ntarget = \"0.5abcx\"\n", `s.toml:2: invalid config: objective.target: latency target "0.5abcx": want a positive ratio`},
		{"duration", "[study]\ntime_limit = \"ten minutes\"\n", "want a duration"},
		{"distill", "[finetune]\ndistill_weight = 2.0\n", "finetune.distill_weight"},
		{"budget", "[objective]\nkind = \"budget\"\n", "objective.kind"},
		{"stopper", "[stopper]\nkind = \"hyperband\"\n", "stopper.kind"},
		{"min channels", "[prune]\nmin_channels = -2\n", "s.toml:2: invalid config: prune.min_channels: -2: want 1..4096"},
		{"round to", "[prune]\nround_to = 1000\n", "prune.round_to: 1000"},
		{"max spread", "[latency]\nmax_spread = 1.5\n", "s.toml:2: invalid config: latency.max_spread: 1.5"},
		{"max rounds", "[latency]\nmax_rounds = -1\n", "latency.max_rounds: -1"},
		{"candidates", "[final]\ncandidates = -3\n", "final.candidates: -3"},
		{"rerank steps", "[final]\nrerank_steps = -1\n", "final.rerank_steps: -1"},
		{"uniform margin", "[final]\nuniform_margin = -1\n", "final.uniform_margin: -1"},
		{"uniform margin nan", "[final]\nuniform_margin = nan\n", "final.uniform_margin: NaN"},
		{"command meter", "[latency]\nmeter = \"command\"\n", "latency.command: meter = \"command\" needs the runner"},
		{"command without meter", "[latency]\ncommand = [\"node\", \"r.js\"]\n", "latency.command: is the runner of meter = \"command\", not of meter = \"local\""},
		{"folder without dir", "[data]\ndataset = \"folder\"\n", "s.toml:1: invalid config: data.dir: missing"},
		{"channels", "[data]\ndataset = \"folder\"\ndir = \"img\"\nchannels = 2\n", "s.toml:4: invalid config: data.channels: 2: want 1 or 3"},
		{"image size on idx", "[data]\nimage_size = 32\n", "data.image_size: applies to image folders"},
		{"mean without std", "[data]\nmean = [0.5]\n", "data.mean: give data.mean and data.std together"},
		{"zero std", "[data]\nmean = [0.5]\nstd = [0.0]\n", "data.std: 0: want positive values"},
		{"stale after", "[study]\nstale_after = \"1s\"\n", "s.toml:2: invalid config: study.stale_after: 1s: want at least 10s"},
		{"test evaluation (never read, removed)", "[data]\ntest_evaluation = false\n", "unknown key data.test_evaluation"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.src, "s.toml")
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v\nwant ErrConfig containing %q", err, tc.want)
			}
		})
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.toml")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, p := range []string{"../configs/mobile.toml", "../configs/embedded.toml"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(b))
	}
	f.Add("[study]\ntrials = 3\n")
	f.Fuzz(func(t *testing.T, src string) {
		c, err := Parse(src, "fuzz.toml")
		if err == nil && c == nil {
			t.Fatal("nil config without error")
		}
	})
}

func TestPlanIsNotAConfig(t *testing.T) {
	dir := t.TempDir()
	plan := filepath.Join(dir, "mobile-best.plan.toml")
	src := "# best plan of trial 8\ncriterion = \"l1\"\n\n[ratios]\n\"conv1\" = 0.5\n"
	if err := os.WriteFile(plan, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(plan)
	if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "prune MODEL --plan") {
		t.Fatalf("Load(plan) = %v, want a config error pointing to prune --plan", err)
	}
	// A config that happens to have a ratios-like table elsewhere is still read as a config.
	if _, err := Parse("[study]\nname = \"x\"\n", filepath.Join(dir, "x.toml")); err != nil {
		t.Fatal(err)
	}
}

// A value the user wrote is honoured, zero included: distill_weight = 0 means labels only.
func TestExplicitZeroDistillWeight(t *testing.T) {
	c, err := Parse("[finetune]\ndistill_weight = 0\n", "/tmp/x/s.toml")
	if err != nil {
		t.Fatal(err)
	}
	if *c.Finetune.DistillWeight != 0 {
		t.Errorf("distill_weight = 0 read as %v", *c.Finetune.DistillWeight)
	}
	d, err := Parse("", "/tmp/x/s.toml")
	if err != nil {
		t.Fatal(err)
	}
	if *d.Finetune.DistillWeight != 0.7 || d.Finetune.Temperature != 1 {
		t.Errorf("defaults: distill_weight %v, temperature %v; want 0.7 and 1", *d.Finetune.DistillWeight, d.Finetune.Temperature)
	}
}

// A zero the user wrote is honoured or refused with the key's name, never replaced by the
// default.
// The re-ranking fine-tune is the final one unless the file sets it apart.
func TestRerankStepsFollowFinalSteps(t *testing.T) {
	for src, want := range map[string]int{
		"":                       1000,
		"[final]\nsteps = 300\n": 300,
		"[final]\nsteps = 300\nrerank_steps = 50\n": 50,
		"[final]\nrerank_steps = 0\n":               0,
	} {
		c, err := Parse(src, "/tmp/x/s.toml")
		if err != nil {
			t.Fatalf("%q: %v", src, err)
		}
		if got := *c.Final.RerankSteps; got != want {
			t.Errorf("%q: rerank_steps %d, want %d", src, got, want)
		}
	}
}

func TestExplicitZeros(t *testing.T) {
	honoured := []struct {
		src string
		get func(*Config) float64
	}{
		{"[prune]\nstep = 0\n", func(c *Config) float64 { return c.Prune.Step }},
		{"[finetune]\nsteps = 0\n", func(c *Config) float64 { return float64(c.Finetune.Steps) }},
		{"[finetune]\nbn_batches = 0\n", func(c *Config) float64 { return float64(c.Finetune.BNBatches) }},
		{"[stopper]\nstartup = 0\n", func(c *Config) float64 { return float64(c.Stopper.Startup) }},
		{"[final]\nsteps = 0\n", func(c *Config) float64 { return float64(c.Final.Steps) }},
		{"[final]\nsteps = 0\n", func(c *Config) float64 { return float64(*c.Final.RerankSteps) }},
		{"[study]\nseed = 0\n", func(c *Config) float64 { return float64(c.Study.Seed) }},
		{"[data]\nsplit_seed = 0\n", func(c *Config) float64 { return float64(c.Data.SplitSeed) }},
	}
	for _, tc := range honoured {
		c, err := Parse(tc.src, "/tmp/x/s.toml")
		if err != nil {
			t.Errorf("%q: %v", tc.src, err)
			continue
		}
		if v := tc.get(c); v != 0 {
			t.Errorf("%q read as %v", tc.src, v)
		}
	}
	refused := map[string]string{
		"[study]\ntrials = 0\n":           "s.toml:2: invalid config: study.trials: 0",
		"[model]\ntrain_epochs = 0\n":     "model.train_epochs: 0",
		"[finetune]\nrounds = 0\n":        "finetune.rounds: 0",
		"[finetune]\nlr = 0\n":            "finetune.lr: 0",
		"[finetune]\ntemperature = 0\n":   "finetune.temperature: 0",
		"[latency]\nwarmup = 0\n":         "latency.warmup: 0",
		"[latency]\nruns = 0\n":           "latency.runs: 0",
		"[final]\ncandidates = 0\n":       "final.candidates: 0",
		"[prune]\nmax_ratio = 0\n":        "prune.max_ratio: 0",
		"[study]\nstale_after = \"0s\"\n": "study.stale_after: 0s",
		"[latency]\ntimeout = \"0s\"\n":   "s.toml:2: invalid config: latency.timeout: 0s",
		"[latency]\ntimeout = \"-5s\"\n":  "latency.timeout: -5s",
	}
	for src, want := range refused {
		_, err := Parse(src, "/tmp/x/s.toml")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", src, err, want)
		}
	}
}

// KeyError names the line that sets a key, its section's line when the key is left to its
// default, and no line for a config built in Go.
func TestKeyError(t *testing.T) {
	c, err := Parse("[study]\ntrials = 3\n\n[latency]\nmeter = \"lut\"\nlut = \"t.json\"\n", "/tmp/x/s.toml")
	if err != nil {
		t.Fatal(err)
	}
	cause := errors.New("no such file")
	for _, tc := range []struct {
		c    *Config
		key  string
		want string
	}{
		{c, "latency.lut", "config /tmp/x/s.toml:6: invalid config: latency.lut: no such file"},
		{c, "latency.batch", "config /tmp/x/s.toml:4: invalid config: latency.batch: no such file"},
		{c, "objective.kind", "config /tmp/x/s.toml: invalid config: objective.kind: no such file"},
		{Default(), "latency.lut", "config : invalid config: latency.lut: no such file"},
	} {
		err := tc.c.KeyError(tc.key, cause)
		if err.Error() != tc.want || !errors.Is(err, ErrConfig) || !errors.Is(err, cause) {
			t.Errorf("KeyError(%s) = %q, want %q wrapping both", tc.key, err, tc.want)
		}
	}
}
