package eval_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/autoprune/autoprune/eval"
	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/nn/zoo"
)

// tinyArch is a valid two-layer architecture in the JSON of a MeasureRequest.
const tinyArch = `{"name":"tiny","input":{"c":1,"h":4,"w":4},"layers":[` +
	`{"name":"conv","kind":"conv2d","inputs":["input"],"in":1,"out":2,"kernel":3,"pad":1},` +
	`{"name":"relu","kind":"relu","inputs":["conv"]}]}`

func TestDecodeMeasureRequest(t *testing.T) {
	req, m, err := eval.DecodeMeasureRequest(strings.NewReader(`{"model":` + tinyArch + `,"batch":2,"runs":7}`))
	if err != nil {
		t.Fatal(err)
	}
	if req.Batch != 2 || req.Runs != 7 || req.Threads != 1 || req.Warmup != 5 || req.BudgetMS != 3000 {
		t.Errorf("request %+v: want batch 2, runs 7 and defaults for the rest", req)
	}
	if m.Name != "tiny" || len(m.Layers) != 2 || m.Layers[0].Weight != nil {
		t.Errorf("model %+v: want the architecture without weights", m)
	}

	big := `{"model":` + tinyArch + `,"batch":1` + strings.Repeat(" ", 1<<20) + `}`
	for _, tc := range []struct {
		name, body string
		want       error
		msg        string
	}{
		{"empty", ``, eval.ErrBadRequest, "empty body"},
		{"malformed", `{"model":`, eval.ErrBadRequest, "unexpected EOF"},
		{"not an object", `[1,2]`, eval.ErrBadRequest, "cannot unmarshal"},
		{"unknown field", `{"model":` + tinyArch + `,"colour":"red"}`, eval.ErrBadRequest, `unknown field "colour"`},
		{"unknown layer field", strings.Replace(`{"model":`+tinyArch+`}`, `"pad":1`, `"pad":1,"weight":[1]`, 1), eval.ErrBadRequest, `unknown field "weight"`},
		{"trailing data", `{"model":` + tinyArch + `} {}`, eval.ErrBadRequest, "after the JSON object"},
		{"trailing garbage", `{"model":` + tinyArch + `}xyz`, eval.ErrBadRequest, "after the JSON object"},
		{"no model", `{"batch":1}`, eval.ErrBadRequest, "no model"},
		{"unknown kind", `{"model":` + strings.Replace(tinyArch, `"relu","inputs"`, `"swish","inputs"`, 1) + `}`, eval.ErrBadRequest, `unknown layer kind "swish"`},
		{"inconsistent shapes", `{"model":` + strings.Replace(tinyArch, `"in":1`, `"in":3`, 1) + `}`, eval.ErrBadRequest, "expects 3 input channels"},
		{"negative runs", `{"model":` + tinyArch + `,"runs":-1}`, eval.ErrBadRequest, "runs -1 is negative"},
		{"wrong type", `{"model":` + tinyArch + `,"batch":"one"}`, eval.ErrBadRequest, "cannot unmarshal"},
		{"huge number", `{"model":` + tinyArch + `,"batch":1e30}`, eval.ErrBadRequest, "cannot unmarshal"},
		{"absurd batch", `{"model":` + tinyArch + `,"batch":100000}`, eval.ErrOverLimit, "batch 100000 exceeds the limit of 256"},
		{"absurd threads", `{"model":` + tinyArch + `,"threads":1000}`, eval.ErrOverLimit, "threads 1000 exceeds"},
		{"absurd runs", `{"model":` + tinyArch + `,"runs":10001}`, eval.ErrOverLimit, "runs 10001 exceeds"},
		{"absurd budget", `{"model":` + tinyArch + `,"budget_ms":3600000}`, eval.ErrOverLimit, "budget_ms 3600000 exceeds"},
		{"absurd MACs", `{"model":{"name":"x","input":{"c":1024,"h":64,"w":64},"layers":[{"name":"c","kind":"conv2d","inputs":["input"],"in":1024,"out":1024,"kernel":3,"pad":1}]}}`, eval.ErrOverLimit, "multiply-adds per forward pass"},
		{"absurd memory", `{"model":{"name":"x","input":{"c":1,"h":16384,"w":16384},"layers":[{"name":"r","kind":"relu","inputs":["input"]}]},"batch":2}`, eval.ErrOverLimit, "MiB"},
		{"absurd input", `{"model":{"name":"x","input":{"c":1000000,"h":1000000,"w":1000000},"layers":[{"name":"r","kind":"relu","inputs":["input"]}]}}`, eval.ErrOverLimit, "input shape"},
		{"absurd conv weights", `{"model":{"name":"x","input":{"c":1048576,"h":1,"w":1},"layers":[{"name":"c","kind":"conv2d","inputs":["input"],"in":1048576,"out":1048576,"kernel":1}]}}`, eval.ErrOverLimit, "multiply-adds"},
		{"null layer", `{"model":{"name":"x","input":{"c":1,"h":1,"w":1},"layers":[null]}}`, eval.ErrBadRequest, "layer 0 is missing"},
		{"oversize body", big, eval.ErrBodyTooLarge, "over 1048576 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, m, err := eval.DecodeMeasureRequest(strings.NewReader(tc.body))
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %v, want %v containing %q", err, tc.want, tc.msg)
			}
			if m != nil {
				t.Errorf("got a model with the error")
			}
		})
	}
}

// fakeAgent answers measure requests like an agent would, after failing the first
// failures calls with the given status.
type fakeAgent struct {
	calls    atomic.Int32
	failures int32
	status   int
	token    string
}

func (f *fakeAgent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := f.calls.Add(1)
	if f.token != "" && r.Header.Get("Authorization") != "Bearer "+f.token {
		w.WriteHeader(http.StatusUnauthorized)
		json.NewEncoder(w).Encode(eval.ErrorResponse{Error: "missing or wrong token"})
		return
	}
	if n <= f.failures {
		w.Header().Set("Retry-After", "0")
		w.WriteHeader(f.status)
		json.NewEncoder(w).Encode(eval.ErrorResponse{Error: "busy, try later"})
		return
	}
	if r.URL.Path == eval.InfoPath {
		json.NewEncoder(w).Encode(eval.AgentInfo{Version: "test", Device: eval.Device{OS: "android", Arch: "arm64", CPU: "fake", Cores: 8}})
		return
	}
	req, m, err := eval.DecodeMeasureRequest(r.Body)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(eval.ErrorResponse{Error: err.Error()})
		return
	}
	dev := eval.Device{OS: "android", Arch: "arm64", CPU: "fake", Cores: 8}
	lat := eval.Latency{Median: time.Millisecond, P90: 2 * time.Millisecond, Mean: time.Millisecond,
		Min: time.Millisecond / 2, N: req.Runs, Batch: req.Batch, Threads: req.Threads, Device: dev}
	json.NewEncoder(w).Encode(eval.MeasureResponse{Latency: lat, Device: dev, Hash: m.Hash()})
}

func lenet(t testing.TB) *nn.Model {
	t.Helper()
	m, err := zoo.Build("lenet5", nn.Shape{C: 1, H: 28, W: 28}, 10, 1)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestRemoteMeterRetriesThenSucceeds(t *testing.T) {
	f := &fakeAgent{failures: 2, status: http.StatusServiceUnavailable, token: "s3cret"}
	srv := httptest.NewServer(f)
	defer srv.Close()
	rm := &eval.RemoteMeter{URL: srv.URL, Token: "s3cret", Runs: 9, Batch: 2, Backoff: time.Millisecond}
	m := lenet(t)
	l, err := rm.Measure(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	if l.N != 9 || l.Batch != 2 || l.Median != time.Millisecond || l.Device.Arch != "arm64" || l.Proxy {
		t.Errorf("latency %+v: want the agent's measurement", l)
	}
	if got := f.calls.Load(); got != 3 {
		t.Errorf("%d calls, want 3 (two 503s, then success)", got)
	}
	// The same architecture with other weights and names comes from the cache.
	m2 := m.Clone()
	m2.Name = "renamed"
	m2.Init(7)
	if _, err := rm.Measure(context.Background(), m2); err != nil {
		t.Fatal(err)
	}
	if got := f.calls.Load(); got != 3 {
		t.Errorf("%d calls after a cached measurement, want still 3", got)
	}
	info, err := rm.Info(context.Background())
	if err != nil || info.Device.OS != "android" {
		t.Errorf("info %+v, %v", info, err)
	}
}

func TestRemoteMeterGivesUpOn5xx(t *testing.T) {
	f := &fakeAgent{failures: 100, status: http.StatusInternalServerError}
	srv := httptest.NewServer(f)
	defer srv.Close()
	rm := &eval.RemoteMeter{URL: srv.URL, Retries: 3, Backoff: time.Millisecond}
	_, err := rm.Measure(context.Background(), lenet(t))
	if err == nil || !strings.Contains(err.Error(), "failed after 4 tries") || !strings.Contains(err.Error(), "busy, try later") {
		t.Fatalf("error %v: want failure after 4 tries with the agent's message", err)
	}
	if got := f.calls.Load(); got != 4 {
		t.Errorf("%d calls, want 4", got)
	}
}

func TestRemoteMeterDoesNotRetry4xx(t *testing.T) {
	for _, status := range []int{http.StatusBadRequest, http.StatusUnauthorized, http.StatusUnprocessableEntity} {
		f := &fakeAgent{failures: 100, status: status}
		srv := httptest.NewServer(f)
		rm := &eval.RemoteMeter{URL: srv.URL, Backoff: time.Millisecond}
		_, err := rm.Measure(context.Background(), lenet(t))
		srv.Close()
		if err == nil || !strings.Contains(err.Error(), http.StatusText(status)) {
			t.Errorf("status %d: error %v", status, err)
		}
		if got := f.calls.Load(); got != 1 {
			t.Errorf("status %d: %d calls, want 1 (no retry)", status, got)
		}
	}
	// A wrong token says what to check.
	f := &fakeAgent{token: "right"}
	srv := httptest.NewServer(f)
	defer srv.Close()
	_, err := (&eval.RemoteMeter{URL: srv.URL, Token: "wrong"}).Measure(context.Background(), lenet(t))
	if err == nil || !strings.Contains(err.Error(), "check the token") {
		t.Errorf("wrong token: error %v", err)
	}
}

func TestRemoteMeterUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there any more
	rm := &eval.RemoteMeter{URL: url, Backoff: time.Millisecond, Timeout: 5 * time.Second}
	start := time.Now()
	_, err = rm.Measure(context.Background(), lenet(t))
	want := "latency agent at " + url + ": unreachable after 3 tries"
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "is `autoprune agent` running there?") {
		t.Fatalf("error %v: want %q and a hint", err, want)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %s to give up", d)
	}
}

func TestRemoteMeterTimeout(t *testing.T) {
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // a device busy for longer than the client waits
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	defer srv.Close()
	defer close(stop)
	rm := &eval.RemoteMeter{URL: srv.URL, Timeout: 50 * time.Millisecond, Retries: 1, Backoff: time.Millisecond}
	_, err := rm.Measure(context.Background(), lenet(t))
	if err == nil || !strings.Contains(err.Error(), "no answer after 2 tries of 50ms each") {
		t.Fatalf("error %v: want a timeout after 2 tries", err)
	}
}

func TestRemoteMeterBadURLAndCancel(t *testing.T) {
	for _, u := range []string{"", "127.0.0.1:7070", "ftp://x", "http://", "http://host:99999"} {
		_, err := (&eval.RemoteMeter{URL: u}).Measure(context.Background(), lenet(t))
		if err == nil || !strings.Contains(err.Error(), "latency agent URL") {
			t.Errorf("URL %q: error %v", u, err)
		}
	}
	// A cancelled context stops the retries at once.
	f := &fakeAgent{failures: 100, status: http.StatusServiceUnavailable}
	srv := httptest.NewServer(f)
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	_, err := (&eval.RemoteMeter{URL: srv.URL, Retries: 1000, Backoff: 10 * time.Millisecond}).Measure(ctx, lenet(t))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want context.Canceled", err)
	}
}

func TestRemoteMeterChecksAnswer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		json.NewEncoder(w).Encode(eval.MeasureResponse{Hash: "0000", Latency: eval.Latency{Median: 1, N: 1}})
	}))
	defer srv.Close()
	_, err := (&eval.RemoteMeter{URL: srv.URL}).Measure(context.Background(), lenet(t))
	if err == nil || !strings.Contains(err.Error(), "measured architecture") {
		t.Errorf("error %v, want a hash mismatch", err)
	}
}

// FuzzDecodeMeasureRequest checks that no input makes the decoder panic, and that every
// request it accepts is within the limits and survives a round trip.
func FuzzDecodeMeasureRequest(f *testing.F) {
	f.Add([]byte(`{"model":` + tinyArch + `,"batch":2,"threads":1,"warmup":1,"runs":3,"budget_ms":10}`))
	f.Add([]byte(`{"model":{"name":"x","input":{"c":1,"h":1,"w":1},"layers":[{"name":"a","kind":"add","inputs":["input","input"]}]}}`))
	f.Add([]byte(`{"model":null}`))
	f.Add([]byte(`{"model":{}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		req, m, err := eval.DecodeMeasureRequest(strings.NewReader(string(data)))
		if err != nil {
			if m != nil {
				t.Fatal("model returned with an error")
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
		shapes, err := m.Shapes()
		if err != nil {
			t.Fatalf("accepted model does not validate: %v", err)
		}
		if c := eval.Estimate(m, shapes, req.Batch, req.Threads); c.MACs > lim.MaxMACs || c.Memory > lim.MaxMemory {
			t.Fatalf("accepted model over the limits: %+v", c)
		}
		b, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		req2, m2, err := eval.DecodeMeasureRequest(strings.NewReader(string(b)))
		if err != nil {
			t.Fatalf("re-encoded request %s does not decode: %v", b, err)
		}
		if m2.Hash() != m.Hash() || req2.Batch != req.Batch || req2.Runs != req.Runs {
			t.Fatalf("round trip changed the request: %s", b)
		}
	})
}
