package eval_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/autoprune/autoprune/eval"
	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/nn/zoo"
)

// bigConv is a one-convolution architecture of about 10.3e9 multiply-adds per pass: under
// the default limit of 20e9 alone, over it with a second one.
const bigConv = `{"name":"big","input":{"c":1024,"h":33,"w":33},"layers":[` +
	`{"name":"c","kind":"conv2d","inputs":["input"],"in":1024,"out":1024,"kernel":3,"pad":1}]}`

func TestDecodePairRequest(t *testing.T) {
	req, ref, cand, err := eval.DecodePairRequest(strings.NewReader(`{"ref":` + tinyArch + `,"cand":` + tinyArch + `,"runs":7,"budget_ms":100}`))
	if err != nil {
		t.Fatal(err)
	}
	if req.Runs != 7 || req.BudgetMS != 100 || req.Batch != 1 || req.Threads != 1 || req.Warmup != 5 {
		t.Errorf("request %+v: want runs 7, budget 100 ms and defaults for the rest", req)
	}
	if ref == nil || cand == nil || ref.Name != "tiny" || cand.Layers[0].Weight != nil {
		t.Errorf("models %+v and %+v: want both architectures without weights", ref, cand)
	}
	if _, _, err := eval.DecodeMeasureRequest(strings.NewReader(`{"model":` + bigConv + `}`)); err != nil {
		t.Fatalf("one big convolution alone must be within the limits: %v", err)
	}

	wide := strings.Replace(tinyArch, `"c":1,"h":4,"w":4`, `"c":1,"h":5,"w":5`, 1)
	pair := func(ref, cand string) string { return `{"ref":` + ref + `,"cand":` + cand + `}` }
	lim := eval.DefaultLimits
	lim.MaxLayers = 3 // each tiny model has 2
	for _, tc := range []struct {
		name string
		lim  eval.Limits
		body string
		want error
		msg  string
	}{
		{"empty", eval.DefaultLimits, ``, eval.ErrBadRequest, `empty body (want a JSON object with a "ref" and a "cand" model)`},
		{"malformed", eval.DefaultLimits, `{"ref":`, eval.ErrBadRequest, "unexpected EOF"},
		{"unknown field", eval.DefaultLimits, `{"ref":` + tinyArch + `,"cand":` + tinyArch + `,"model":{}}`, eval.ErrBadRequest, `unknown field "model"`},
		{"trailing data", eval.DefaultLimits, pair(tinyArch, tinyArch) + ` {}`, eval.ErrBadRequest, "after the JSON object"},
		{"no reference", eval.DefaultLimits, `{"cand":` + tinyArch + `}`, eval.ErrBadRequest, "no reference model"},
		{"no candidate", eval.DefaultLimits, `{"ref":` + tinyArch + `}`, eval.ErrBadRequest, "no candidate model"},
		{"bad candidate", eval.DefaultLimits, pair(tinyArch, strings.Replace(tinyArch, `"in":1`, `"in":3`, 1)), eval.ErrBadRequest, "candidate: "},
		{"different inputs", eval.DefaultLimits, pair(tinyArch, wide), eval.ErrBadRequest, "reference input 1x4x4 differs from candidate input 1x5x5"},
		{"negative warmup", eval.DefaultLimits, `{"ref":` + tinyArch + `,"cand":` + tinyArch + `,"warmup":-1}`, eval.ErrBadRequest, "warmup -1 is negative"},
		{"absurd runs", eval.DefaultLimits, `{"ref":` + tinyArch + `,"cand":` + tinyArch + `,"runs":10001}`, eval.ErrOverLimit, "runs 10001 exceeds"},
		{"layers together", lim, pair(tinyArch, tinyArch), eval.ErrOverLimit, "the 2 models have 4 layers, limit 3"},
		{"MACs together", eval.DefaultLimits, pair(bigConv, bigConv), eval.ErrOverLimit, "multiply-adds per forward pass of the 2 models together"},
		{"oversize body", eval.DefaultLimits, pair(tinyArch, tinyArch) + strings.Repeat(" ", 1<<20), eval.ErrBodyTooLarge, "over 1048576 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, ref, cand, err := tc.lim.DecodePair(strings.NewReader(tc.body))
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %v, want %v containing %q", err, tc.want, tc.msg)
			}
			if ref != nil || cand != nil {
				t.Errorf("got models with the error")
			}
		})
	}
	// Memory, like MACs, bounds the two models together.
	one := eval.DefaultLimits
	_, m, err := one.Decode(strings.NewReader(`{"model":` + bigConv + `}`))
	if err != nil {
		t.Fatal(err)
	}
	shapes, _ := m.Shapes()
	one.MaxMACs = 1e12
	one.MaxMemory = 1.5 * eval.Estimate(m, shapes, 1, 1).Memory
	if _, _, _, err := one.DecodePair(strings.NewReader(pair(bigConv, bigConv))); !errors.Is(err, eval.ErrOverLimit) || !strings.Contains(err.Error(), "MiB") {
		t.Errorf("two models over the memory limit together: %v", err)
	}
}

func TestMeasurePairLocal(t *testing.T) {
	dense, pruned, _, _ := vggPair(t)
	ctx := context.Background()
	self, err := eval.MeasurePairLocal(ctx, dense, dense.Clone(), 1, 1, 2, 30, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	half, err := eval.MeasurePairLocal(ctx, dense, pruned, 1, 1, 2, 30, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []eval.Pairs{self, half} {
		if err := p.Check(); err != nil || p.Len() < 30 || p.Batch != 1 || p.Threads != 1 || p.Device != eval.ThisDevice() {
			t.Errorf("pairs: %v, %d pairs, batch %d, %d thread(s), %v", err, p.Len(), p.Batch, p.Threads, p.Device)
		}
	}
	// Loose bounds: the machine is shared.
	if r := self.Ratio(); r < 0.8 || r > 1.25 {
		t.Errorf("a model against itself: ratio %.3f, want about 1", r)
	}
	if r := half.Ratio(); r > 0.8 || r >= self.Ratio() {
		t.Errorf("50 %% pruned against dense: ratio %.3f (itself %.3f), want well below 1", r, self.Ratio())
	}

	// A budget far too short for the runs still times 5 pairs, and no more than
	// InterleavedPairs gives 5 runs.
	p, err := eval.MeasurePairLocal(ctx, dense, pruned, 1, 1, 1, 10000, time.Nanosecond)
	if err != nil {
		t.Fatal(err)
	}
	if p.Len() < 5 || p.Len() > 50*5 {
		t.Errorf("%d pairs within a 1 ns budget, want 5 to 250", p.Len())
	}

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := eval.MeasurePairLocal(cancelled, dense, pruned, 1, 1, 1, 10, time.Second); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
	other, err := zoo.Build("vgg-small", nn.Shape{C: 1, H: 32, W: 32}, 10, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eval.MeasurePairLocal(ctx, dense, other, 1, 1, 1, 10, time.Second); err == nil || !strings.Contains(err.Error(), "differs") {
		t.Errorf("different inputs: %v", err)
	}
}

// pairAgent answers pair requests by timing them here, and lets a test spoil the answer.
func pairAgent(t *testing.T, spoil func(*eval.PairResponse)) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != eval.PairPath {
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(eval.ErrorResponse{Error: "no such endpoint " + r.URL.Path})
			return
		}
		req, ref, cand, err := eval.DecodePairRequest(r.Body)
		if err == nil {
			err = errors.Join(ref.Init(1), cand.Init(1))
		}
		var p eval.Pairs
		if err == nil {
			p, err = eval.MeasurePairLocal(r.Context(), ref, cand, req.Batch, req.Threads, req.Warmup, req.Runs, req.Budget())
		}
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(eval.ErrorResponse{Error: err.Error()})
			return
		}
		res := eval.PairResponse{Pairs: p, Device: p.Device, RefHash: ref.Hash(), CandHash: cand.Hash()}
		if spoil != nil {
			spoil(&res)
		}
		json.NewEncoder(w).Encode(res)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestRemoteMeterMeasurePairChecksAnswer(t *testing.T) {
	m := lenet(t)
	good := pairAgent(t, nil)
	rm := &eval.RemoteMeter{URL: good.URL, Runs: 5, Warmup: 1, Batch: 2}
	p, err := rm.MeasurePair(context.Background(), m, m.Clone())
	if err != nil {
		t.Fatal(err)
	}
	if p.Len() < 5 || p.Batch != 2 || p.Threads != 1 || p.Check() != nil {
		t.Errorf("pairs: %d, batch %d, %d thread(s), %v", p.Len(), p.Batch, p.Threads, p.Check())
	}

	for _, tc := range []struct {
		name  string
		spoil func(*eval.PairResponse)
		msg   string
	}{
		{"other reference", func(r *eval.PairResponse) { r.RefHash = "0000" }, "measured architectures"},
		{"other candidate", func(r *eval.PairResponse) { r.CandHash = "0000" }, "measured architectures"},
		{"uneven pairs", func(r *eval.PairResponse) { r.Pairs.CandTimes = r.Pairs.CandTimes[1:] }, "reference times but"},
		{"no pairs", func(r *eval.PairResponse) { r.Pairs.RefTimes, r.Pairs.CandTimes = nil, nil }, "no timed pair"},
		{"zero time", func(r *eval.PairResponse) { r.Pairs.RefTimes[0] = 0 }, "non-positive time"},
		{"too many pairs", func(r *eval.PairResponse) {
			r.Pairs.RefTimes = make([]time.Duration, 251)
			r.Pairs.CandTimes = make([]time.Duration, 251)
			for i := range r.Pairs.RefTimes {
				r.Pairs.RefTimes[i], r.Pairs.CandTimes[i] = 1, 1
			}
		}, "251 pairs for 5 runs"},
		{"other batch", func(r *eval.PairResponse) { r.Pairs.Batch = 1 }, "measured batch 1"},
		{"other threads", func(r *eval.PairResponse) { r.Pairs.Threads = 4 }, "with 4 thread(s)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := pairAgent(t, tc.spoil)
			rm := &eval.RemoteMeter{URL: srv.URL, Runs: 5, Warmup: 1, Batch: 2}
			if _, err := rm.MeasurePair(context.Background(), m, m); err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %v, want one containing %q", err, tc.msg)
			}
		})
	}

	// Models that cannot be paired are refused before anything is sent.
	other, err := zoo.Build("lenet5", nn.Shape{C: 1, H: 32, W: 32}, 10, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rm.MeasurePair(context.Background(), m, other); err == nil || !strings.Contains(err.Error(), "differs") {
		t.Errorf("different inputs: %v", err)
	}
	broken := m.Clone()
	broken.Layers[0].In = 3
	if _, err := rm.MeasurePair(context.Background(), m, broken); err == nil || !strings.Contains(err.Error(), "candidate") {
		t.Errorf("invalid candidate: %v", err)
	}
}

func TestRemoteMeterMeasurePairOldAgent(t *testing.T) {
	// An agent of version 1 knows /v1/measure and /v1/info only.
	f := &fakeAgent{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == eval.PairPath {
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(eval.ErrorResponse{Error: `no such endpoint "/v1/measure-pair" (have POST /v1/measure and GET /v1/info)`})
			return
		}
		f.ServeHTTP(w, r)
	}))
	defer srv.Close()
	m := lenet(t)
	_, err := (&eval.RemoteMeter{URL: srv.URL, Backoff: time.Millisecond}).MeasurePair(context.Background(), m, m)
	if err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), "update the agent binary") {
		t.Errorf("error %v: want the 404 and what to do", err)
	}
}

// FuzzDecodePairRequest checks that no input makes the pair decoder panic, and that every
// request it accepts is within the limits for both models together and survives a round
// trip.
func FuzzDecodePairRequest(f *testing.F) {
	f.Add([]byte(`{"ref":` + tinyArch + `,"cand":` + tinyArch + `,"batch":2,"threads":1,"warmup":1,"runs":3,"budget_ms":10}`))
	f.Add([]byte(`{"ref":{"name":"x","input":{"c":1,"h":1,"w":1},"layers":[{"name":"a","kind":"add","inputs":["input","input"]}]},` +
		`"cand":{"name":"y","input":{"c":1,"h":1,"w":1},"layers":[{"name":"r","kind":"relu","inputs":["input"]}]}}`))
	f.Add([]byte(`{"ref":` + bigConv + `,"cand":` + bigConv + `}`))
	f.Add([]byte(`{"ref":null,"cand":{}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		req, ref, cand, err := eval.DecodePairRequest(strings.NewReader(string(data)))
		if err != nil {
			if ref != nil || cand != nil {
				t.Fatal("models returned with an error")
			}
			if !errors.Is(err, eval.ErrBadRequest) && !errors.Is(err, eval.ErrOverLimit) && !errors.Is(err, eval.ErrBodyTooLarge) {
				t.Fatalf("error %v wraps none of the request errors", err)
			}
			return
		}
		lim := eval.DefaultLimits
		if req.Batch < 1 || req.Batch > lim.MaxBatch || req.Threads < 1 || req.Threads > lim.MaxThreads ||
			req.Runs < 1 || req.Runs > lim.MaxRuns || req.Warmup < 1 || req.Warmup > lim.MaxWarmup ||
			req.BudgetMS < 1 || req.BudgetMS > lim.MaxBudget {
			t.Fatalf("accepted request out of limits: %+v", req)
		}
		if ref.Input != cand.Input || len(ref.Layers)+len(cand.Layers) > lim.MaxLayers {
			t.Fatalf("accepted models with inputs %v and %v and %d layers", ref.Input, cand.Input, len(ref.Layers)+len(cand.Layers))
		}
		var total eval.Cost
		for _, m := range []*nn.Model{ref, cand} {
			shapes, err := m.Shapes()
			if err != nil {
				t.Fatalf("accepted model does not validate: %v", err)
			}
			c := eval.Estimate(m, shapes, req.Batch, req.Threads)
			total.MACs += c.MACs
			total.Memory += c.Memory
		}
		if total.MACs > lim.MaxMACs || total.Memory > lim.MaxMemory {
			t.Fatalf("accepted models over the limits together: %+v", total)
		}
		b, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		req2, ref2, cand2, err := eval.DecodePairRequest(strings.NewReader(string(b)))
		if err != nil {
			t.Fatalf("re-encoded request %s does not decode: %v", b, err)
		}
		if ref2.Hash() != ref.Hash() || cand2.Hash() != cand.Hash() || req2.Runs != req.Runs || req2.BudgetMS != req.BudgetMS {
			t.Fatalf("round trip changed the request: %s", b)
		}
	})
}
