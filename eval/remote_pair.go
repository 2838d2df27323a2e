package eval

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"time"

	"github.com/autoprune/autoprune/nn"
)

// PairRequest asks a latency agent to time a candidate interleaved with a reference model
// (POST /v1/measure-pair; see MeasurePairLocal). Zero numbers take the defaults of
// MeasurePairLocal (batch 1, 1 thread, 5 warm-up passes of each model, 50 timed pairs, a 3 s
// budget).
type PairRequest struct {
	// Ref and Cand are architectures only (name, input, layers), as in MeasureRequest; they
	// must have the same input shape.
	Ref      *nn.Model `json:"ref"`
	Cand     *nn.Model `json:"cand"`
	Batch    int       `json:"batch,omitempty"`
	Threads  int       `json:"threads,omitempty"`
	Warmup   int       `json:"warmup,omitempty"`    // untimed passes of each model
	Runs     int       `json:"runs,omitempty"`      // timed pairs
	BudgetMS int       `json:"budget_ms,omitempty"` // time for the timed pairs
}

// Budget returns BudgetMS as a duration.
func (r PairRequest) Budget() time.Duration { return time.Duration(r.BudgetMS) * time.Millisecond }

// PairResponse is a latency agent's answer to a PairRequest.
type PairResponse struct {
	Pairs    Pairs  `json:"pairs"`     // every timed pair, with the device
	Device   Device `json:"device"`    // the device that measured
	RefHash  string `json:"ref_hash"`  // nn.Model.Hash of the reference measured
	CandHash string `json:"cand_hash"` // nn.Model.Hash of the candidate measured
}

// maxPairsPerRun bounds the pairs an interleaved measurement returns per timed pair asked
// for: InterleavedPairs goes on past runs for fast models, up to 50 times as many.
const maxPairsPerRun = 50

// DecodePairRequest reads a PairRequest under DefaultLimits; see Limits.DecodePair.
func DecodePairRequest(r io.Reader) (req PairRequest, ref, cand *nn.Model, err error) {
	return DefaultLimits.DecodePair(r)
}

// DecodePair reads one PairRequest as strictly as Decode reads a MeasureRequest: at most
// MaxBody bytes, one JSON object with no unknown fields and nothing after it, both
// architectures checked, zero numbers replaced by defaults. The agent holds both models at
// once, so MaxLayers, MaxMACs and MaxMemory bound the two together. The models it returns
// have no weights. Errors wrap ErrBadRequest, ErrBodyTooLarge or ErrOverLimit.
func (lim Limits) DecodePair(r io.Reader) (req PairRequest, ref, cand *nn.Model, err error) {
	if err := lim.decodeStrict(r, &req, `a "ref" and a "cand" model`); err != nil {
		return req, nil, nil, err
	}
	switch {
	case req.Ref == nil:
		return req, nil, nil, fmt.Errorf("%w: no reference model (want \"ref\": {\"name\", \"input\", \"layers\"})", ErrBadRequest)
	case req.Cand == nil:
		return req, nil, nil, fmt.Errorf("%w: no candidate model (want \"cand\": {\"name\", \"input\", \"layers\"})", ErrBadRequest)
	}
	if err := lim.fill(&req.Batch, &req.Threads, &req.Warmup, &req.Runs, &req.BudgetMS); err != nil {
		return req, nil, nil, err
	}
	if err := lim.checkModels(req.Batch, req.Threads, reqModel{"reference", req.Ref}, reqModel{"candidate", req.Cand}); err != nil {
		return req, nil, nil, err
	}
	if req.Ref.Input != req.Cand.Input {
		return req, nil, nil, fmt.Errorf("%w: reference input %v differs from candidate input %v", ErrBadRequest, req.Ref.Input, req.Cand.Input)
	}
	return req, req.Ref, req.Cand, nil
}

// MeasurePairLocal times cand interleaved with ref on this machine within a time budget; it
// is what a latency agent runs for a PairRequest. It runs the warm-up passes of each model
// itself, timing them to learn how many pairs fit in the budget, then times that many, but
// at least 5 and at most runs, with InterleavedPairs (which adds one untimed pass of each,
// and more pairs for fast models, to cover MinInterleaved whatever the budget). Zero
// arguments take the defaults of a PairRequest.
func MeasurePairLocal(ctx context.Context, ref, cand *nn.Model, batch, threads, warmup, runs int, budget time.Duration) (Pairs, error) {
	batch, threads, warmup, runs, budget = timingDefaults(batch, threads, warmup, runs, budget)
	if ref.Input != cand.Input {
		return Pairs{}, fmt.Errorf("latency: reference input %v differs from candidate input %v", ref.Input, cand.Input)
	}
	var pair time.Duration // the last warm-up pass of each model
	for _, m := range []*nn.Model{ref, cand} {
		ex, err := nn.NewExecutor(m, batch, nn.Options{Threads: threads})
		if err != nil {
			return Pairs{}, fmt.Errorf("latency: %w", err)
		}
		x := randomInput(batch * m.Input.Size())
		var d time.Duration
		for i := 0; i < warmup; i++ {
			if err := ctx.Err(); err != nil {
				return Pairs{}, fmt.Errorf("latency: %w", err)
			}
			t0 := time.Now()
			if _, err := ex.ForwardContext(ctx, x); err != nil {
				return Pairs{}, fmt.Errorf("latency: %w", err)
			}
			d = time.Since(t0)
		}
		pair += d
	}
	// Free the warm-up executors before InterleavedPairs plans its own, so that memory
	// stays within what the limits bounded and no collection of them falls among the pairs.
	runtime.GC()
	n := min(runs, max(5, int(budget/max(pair, 1))))
	return InterleavedPairs(ctx, ref, cand, batch, threads, 1, n)
}

// MeasurePair implements PairMeter: the agent times cand interleaved with ref on the device
// (POST /v1/measure-pair, agent version 2 and later), with the meter's batch, threads,
// warm-up, runs (timed pairs) and budget. Nothing is cached: each call is a new round, and
// callers merge rounds (Pairs.Merge) when one is not precise enough. Retries, backoff and
// timeouts are those of Measure. The answer is checked: the same architectures, the batch
// and threads asked for, well-formed pairs and not more of them than the agent may time.
func (rm *RemoteMeter) MeasurePair(ctx context.Context, ref, cand *nn.Model) (Pairs, error) {
	for _, x := range []struct {
		what string
		m    *nn.Model
	}{{"reference", ref}, {"candidate", cand}} {
		if _, err := x.m.Shapes(); err != nil {
			return Pairs{}, fmt.Errorf("remote latency: %s: %w", x.what, err)
		}
	}
	if ref.Input != cand.Input {
		return Pairs{}, fmt.Errorf("remote latency: reference input %v differs from candidate input %v", ref.Input, cand.Input)
	}
	req := PairRequest{Ref: ref, Cand: cand, Batch: rm.Batch, Threads: rm.Threads, Warmup: rm.Warmup,
		Runs: rm.Runs, BudgetMS: int(rm.Budget / time.Millisecond)}
	body, err := json.Marshal(req)
	if err != nil {
		return Pairs{}, fmt.Errorf("latency agent at %s: encoding models %q and %q: %w", rm.URL, ref.Name, cand.Name, err)
	}
	runs := rm.Runs
	if runs <= 0 {
		runs = 50
	}
	most := maxPairsPerRun * runs
	// Two numbers of at most 20 digits and a comma per pair, and room for the rest.
	limit := int64(most)*2*21 + 64<<10
	var res PairResponse
	if err := rm.call(ctx, http.MethodPost, PairPath, body, limit, &res); err != nil {
		var se *statusError
		if errors.As(err, &se) && se.status == http.StatusNotFound {
			return Pairs{}, fmt.Errorf("%w — the agent is older than %s: update the agent binary on the device "+
				"(build autoprune for it again, copy it there and restart \"autoprune agent\")", err, PairPath)
		}
		return Pairs{}, err
	}
	p := res.Pairs
	switch {
	case res.RefHash != ref.Hash() || res.CandHash != cand.Hash():
		return Pairs{}, fmt.Errorf("latency agent at %s: measured architectures %.16s and %.16s, sent %.16s and %.16s (is the agent the same version?)",
			rm.URL, res.RefHash, res.CandHash, ref.Hash(), cand.Hash())
	case p.Check() != nil:
		return Pairs{}, fmt.Errorf("latency agent at %s: answer for models %q and %q: %w", rm.URL, ref.Name, cand.Name, p.Check())
	case p.Len() > most:
		return Pairs{}, fmt.Errorf("latency agent at %s: %d pairs for %d runs asked, more than the %d an agent times", rm.URL, p.Len(), runs, most)
	case p.Batch != max(rm.Batch, 1) || p.Threads != max(rm.Threads, 1):
		return Pairs{}, fmt.Errorf("latency agent at %s: measured batch %d with %d thread(s), asked for batch %d with %d",
			rm.URL, p.Batch, p.Threads, max(rm.Batch, 1), max(rm.Threads, 1))
	}
	return p, nil
}
