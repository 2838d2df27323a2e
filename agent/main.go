package agent

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"strings"

	"github.com/autoprune/autoprune/eval"
	"github.com/autoprune/autoprune/nn"
)

// TokenEnv names the environment variable that holds the agent token when --token is not
// given, so that the token stays out of process listings and shell history.
const TokenEnv = "AUTOPRUNE_AGENT_TOKEN"

// ErrUsage is wrapped by Main's errors about its command line (exit code 2).
var ErrUsage = errors.New("usage")

// Token returns the token given on a command line, or else the one in TokenEnv.
func Token(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	return os.Getenv(TokenEnv)
}

// usageError is a command-line mistake: its message alone, matching ErrUsage.
type usageError struct{ msg string }

func (e usageError) Error() string        { return e.msg }
func (e usageError) Is(target error) bool { return target == ErrUsage }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// Main runs the agent's command line (flags only; name is how the program is called, such
// as "autoprune agent") until ctx ends. It serves both "autoprune agent" and the agent
// alone (cmd/autoprune-agent, a smaller binary for phones and boards). --help returns
// flag.ErrHelp; mistakes in the command line wrap ErrUsage.
func Main(ctx context.Context, name string, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: %s [--listen HOST:PORT] [--token TOKEN] [--cpu N]\n\n%s\n\nFlags:\n", name, strings.ReplaceAll(strings.TrimSpace(help), "NAME", name))
		fs.PrintDefaults()
	}
	listen := fs.String("listen", DefaultAddr, "address to listen on (HOST:PORT; port 0 picks a free one)")
	token := fs.String("token", "", "secret that every request must carry (required off loopback; default $"+TokenEnv+")")
	quiet := fs.Bool("quiet", false, "do not log each request on stderr")
	cpu := fs.Int("cpu", -1, "pin measurements to this CPU, numbered from 0 (Linux and Android); -1: no pinning")
	command := fs.String("command", "", "time ONNX exports with this latency runner (split at spaces) instead of the Go engine")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usagef("agent: unexpected argument %q (all options are flags; see --help)", fs.Arg(0))
	}
	tok := Token(*token)
	if err := CheckListen(*listen, tok); err != nil {
		return usagef("agent: %v", err)
	}
	logger := log.New(stderr, "agent: ", log.LstdFlags)
	if *quiet {
		logger = log.New(io.Discard, "", 0)
	}
	cfg := Config{Token: tok, Log: logger}
	if *command != "" {
		if *cpu != -1 {
			return usagef("agent: --cpu pins the Go engine; with --command, pin the runtime itself")
		}
		argv := strings.Fields(*command)
		meter := func(batch, threads, warmup, runs int) *eval.CommandMeter {
			return &eval.CommandMeter{Argv: argv, Batch: batch, Threads: threads, Warmup: warmup, Runs: runs}
		}
		cfg.Device = meter(1, 1, 1, 1).Describe()
		cfg.Measure = func(ctx context.Context, m *nn.Model, r eval.MeasureRequest) (eval.Latency, error) {
			return meter(r.Batch, r.Threads, r.Warmup, r.Runs).Measure(ctx, m)
		}
		cfg.MeasurePair = func(ctx context.Context, ref, cand *nn.Model, r eval.PairRequest) (eval.Pairs, error) {
			return meter(r.Batch, r.Threads, r.Warmup, r.Runs).MeasurePair(ctx, ref, cand)
		}
	}
	if *cpu >= 0 {
		release, err := eval.PinToCPU(*cpu)
		if err != nil {
			return usagef("agent: --cpu: %v", err)
		}
		release()
		cfg.Limits = eval.DefaultLimits
		cfg.Limits.MaxThreads = 1
		cfg.Measure = func(ctx context.Context, m *nn.Model, r eval.MeasureRequest) (eval.Latency, error) {
			release, err := eval.PinToCPU(*cpu)
			if err != nil {
				return eval.Latency{}, err
			}
			defer release()
			return eval.MeasureLocal(ctx, m, r.Batch, r.Threads, r.Warmup, r.Runs, r.Budget())
		}
		cfg.MeasurePair = func(ctx context.Context, ref, cand *nn.Model, r eval.PairRequest) (eval.Pairs, error) {
			release, err := eval.PinToCPU(*cpu)
			if err != nil {
				return eval.Pairs{}, err
			}
			defer release()
			return eval.MeasurePairLocal(ctx, ref, cand, r.Batch, r.Threads, r.Warmup, r.Runs, r.Budget())
		}
	} else if *cpu != -1 {
		return usagef("agent: --cpu %d: want a CPU number (0 for the first) or -1", *cpu)
	}
	a := New(cfg)
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", *listen)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	auth := "no token"
	if tok != "" {
		auth = "token required"
	}
	fmt.Fprintf(stderr, "autoprune agent %s: listening on http://%s (%s; device %s); Ctrl-C to stop\n",
		Version, ln.Addr(), auth, a.Device())
	return a.Serve(ctx, ln)
}

const help = `
Runs the latency agent: an HTTP server that times forward passes of the architectures a
search or "autoprune bench --agent" sends it, on this machine, one at a time. Start it on
the target device; point the search at it with its URL.

It listens on loopback (127.0.0.1:7070) by default: reach it through a forwarded port
(adb forward tcp:7070 tcp:7070, ssh -L 7070:127.0.0.1:7070 HOST). To listen on a network
address it needs a token, which clients send as "Authorization: Bearer TOKEN"; the token
can also come from the environment variable ` + TokenEnv + `.

Endpoints: POST /v1/measure (a model architecture -> latency distribution), POST
/v1/measure-pair (a reference and a candidate architecture -> their passes timed
alternately, A B A B ..., pair by pair; "autoprune bench --agent URL --versus REF"), GET
/v1/info. Requests are limited to 1 MiB, batch 256, 20e9 multiply-adds per pass, 1 GiB of
memory, 10000 runs and a 60 s budget; for a pair, the two models together.

On a phone with big and little cores, --cpu pins every measurement to one core (numbered
from 0, as in /proc/cpuinfo), so the search sees the core the app will run on; a request
must then ask for one thread.

With --command the device times the models in the runtime the app uses: each model is
exported to ONNX and timed by that command, in the protocol of "[latency] meter = command"
(runners/onnxruntime.js is one).

The same agent is also built alone, a smaller binary for phones and boards:
go build ./cmd/autoprune-agent (it links only what measuring needs).

Examples:
  NAME                                   # 127.0.0.1:7070, no token
  NAME --cpu 7                           # measure on CPU 7 only (a big core)
  NAME --command "node runners/onnxruntime.js"   # time in ONNX Runtime
  NAME --listen 0.0.0.0:7070 --token "$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"`
