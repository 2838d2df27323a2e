package eval

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/autoprune/autoprune/nn"
)

// The latency agent protocol, shared by the agent (package agent) and RemoteMeter:
//
//	POST /v1/measure        MeasureRequest  -> MeasureResponse
//	POST /v1/measure-pair   PairRequest     -> PairResponse    (since agent version 2)
//	GET  /v1/info                           -> AgentInfo
//
// Bodies are JSON. Every error answer is an ErrorResponse with a 4xx or 5xx status. When the
// agent has a token, every request carries "Authorization: Bearer TOKEN".
const (
	// MeasurePath is the path of the measurement endpoint.
	MeasurePath = "/v1/measure"
	// PairPath is the path of the interleaved measurement of two models (see PairRequest).
	PairPath = "/v1/measure-pair"
	// InfoPath is the path of the device description endpoint.
	InfoPath = "/v1/info"
)

// MeasureRequest asks a latency agent to time a model's forward pass. Zero numbers take
// the defaults of MeasureLocal (batch 1, 1 thread, 5 warm-up passes, 50 timed passes, a 3 s
// budget).
type MeasureRequest struct {
	// Model is the architecture only (name, input, layers): the agent fills random weights,
	// since latency does not depend on their values.
	Model    *nn.Model `json:"model"`
	Batch    int       `json:"batch,omitempty"`
	Threads  int       `json:"threads,omitempty"`
	Warmup   int       `json:"warmup,omitempty"`
	Runs     int       `json:"runs,omitempty"`
	BudgetMS int       `json:"budget_ms,omitempty"`
}

// Budget returns BudgetMS as a duration.
func (r MeasureRequest) Budget() time.Duration { return time.Duration(r.BudgetMS) * time.Millisecond }

// MeasureResponse is a latency agent's answer to a MeasureRequest.
type MeasureResponse struct {
	Latency Latency `json:"latency"` // the measured distribution, with the device
	Device  Device  `json:"device"`  // the device that measured
	Hash    string  `json:"hash"`    // nn.Model.Hash of the architecture measured
}

// AgentInfo is a latency agent's answer to GET /v1/info.
type AgentInfo struct {
	Version string `json:"version"`
	Device  Device `json:"device"`
	Limits  Limits `json:"limits"`
}

// ErrorResponse is the body of every error answer of a latency agent.
type ErrorResponse struct {
	Error string `json:"error"`
}

// Errors of DecodeMeasureRequest and DecodePairRequest, each wrapped with the details.
var (
	// ErrBadRequest is malformed JSON, an unknown field or an invalid model (400).
	ErrBadRequest = errors.New("bad measure request")
	// ErrBodyTooLarge is a body over Limits.MaxBody (413).
	ErrBodyTooLarge = errors.New("measure request too large")
	// ErrOverLimit is a valid request that asks for more than the limits allow (422).
	ErrOverLimit = errors.New("measure request over the agent's limits")
)

// Limits bounds what a latency agent accepts, so that no request can exhaust the device's
// memory or keep it busy for long. Every bound is checked before anything is allocated.
type Limits struct {
	MaxBody    int64   `json:"max_body_bytes"`    // request body
	MaxLayers  int     `json:"max_layers"`        // layers of the model (both models of a pair)
	MaxBatch   int     `json:"max_batch"`         // samples per forward pass
	MaxThreads int     `json:"max_threads"`       // engine threads
	MaxWarmup  int     `json:"max_warmup"`        // untimed passes
	MaxRuns    int     `json:"max_runs"`          // timed passes (pairs, for a pair)
	MaxBudget  int     `json:"max_budget_ms"`     // time for the timed passes, milliseconds
	MaxMACs    float64 `json:"max_macs_per_pass"` // multiply-adds of one forward pass, all samples (both models of a pair)
	MaxMemory  float64 `json:"max_memory_bytes"`  // activations, im2col buffers, weights (both models of a pair)
}

// DefaultLimits are the limits of DecodeMeasureRequest and of an agent by default.
var DefaultLimits = Limits{
	MaxBody:    1 << 20,
	MaxLayers:  2000,
	MaxBatch:   256,
	MaxThreads: 64,
	MaxWarmup:  1000,
	MaxRuns:    10000,
	MaxBudget:  60000,
	MaxMACs:    20e9,
	MaxMemory:  1 << 30,
}

// DecodeMeasureRequest reads a MeasureRequest under DefaultLimits; see Limits.Decode.
func DecodeMeasureRequest(r io.Reader) (MeasureRequest, *nn.Model, error) {
	return DefaultLimits.Decode(r)
}

// Decode reads one MeasureRequest strictly: at most MaxBody bytes, one JSON object with no
// unknown fields and nothing after it. It checks the architecture (known layer kinds,
// consistent shapes), fills the defaults of zero numbers, and refuses requests over the
// limits. The model it returns has no weights. Errors wrap ErrBadRequest, ErrBodyTooLarge or
// ErrOverLimit.
func (lim Limits) Decode(r io.Reader) (MeasureRequest, *nn.Model, error) {
	var req MeasureRequest
	if err := lim.decodeStrict(r, &req, "a model"); err != nil {
		return req, nil, err
	}
	m := req.Model
	if m == nil {
		return req, nil, fmt.Errorf("%w: no model (want \"model\": {\"name\", \"input\", \"layers\"})", ErrBadRequest)
	}
	if err := lim.fill(&req.Batch, &req.Threads, &req.Warmup, &req.Runs, &req.BudgetMS); err != nil {
		return req, nil, err
	}
	if err := lim.checkModels(req.Batch, req.Threads, reqModel{m: m}); err != nil {
		return req, nil, err
	}
	return req, m, nil
}

// decodeStrict reads at most MaxBody bytes from r and decodes them into v: one JSON object,
// no unknown field, nothing after it. want names what the object must hold, for the error
// about an empty body.
func (lim Limits) decodeStrict(r io.Reader, v any, want string) error {
	body, err := io.ReadAll(io.LimitReader(r, lim.MaxBody+1))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("%w: body over %d bytes", ErrBodyTooLarge, lim.MaxBody)
		}
		return fmt.Errorf("%w: reading the body: %v", ErrBadRequest, err)
	}
	if int64(len(body)) > lim.MaxBody {
		return fmt.Errorf("%w: body over %d bytes", ErrBodyTooLarge, lim.MaxBody)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return fmt.Errorf("%w: empty body (want a JSON object with %s)", ErrBadRequest, want)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: unexpected data after the JSON object", ErrBadRequest)
	}
	return nil
}

// fill checks the numbers of a request against the limits and replaces zeros by defaults.
func (lim Limits) fill(batch, threads, warmup, runs, budgetMS *int) error {
	for _, f := range []struct {
		name      string
		v         *int
		def, most int
	}{
		{"batch", batch, 1, lim.MaxBatch},
		{"threads", threads, 1, lim.MaxThreads},
		{"warmup", warmup, 5, lim.MaxWarmup},
		{"runs", runs, 50, lim.MaxRuns},
		{"budget_ms", budgetMS, 3000, lim.MaxBudget},
	} {
		switch {
		case *f.v < 0:
			return fmt.Errorf("%w: %s %d is negative", ErrBadRequest, f.name, *f.v)
		case *f.v == 0:
			*f.v = min(f.def, f.most)
		case *f.v > f.most:
			return fmt.Errorf("%w: %s %d exceeds the limit of %d", ErrOverLimit, f.name, *f.v, f.most)
		}
	}
	return nil
}

// reqModel is a model of a request and the name errors give it ("" when it is the only one).
type reqModel struct {
	label string
	m     *nn.Model
}

// checkModels validates the architectures a request will hold in memory at the same time
// and bounds them together: layers, multiply-adds of one forward pass of each, and memory.
func (lim Limits) checkModels(batch, threads int, models ...reqModel) error {
	what, together := "model has", ""
	if len(models) > 1 {
		what, together = fmt.Sprintf("the %d models have", len(models)), fmt.Sprintf(" of the %d models together", len(models))
	}
	layers := 0
	for _, x := range models {
		layers += len(x.m.Layers)
	}
	if layers > lim.MaxLayers {
		return fmt.Errorf("%w: %s %d layers, limit %d", ErrOverLimit, what, layers, lim.MaxLayers)
	}
	var total Cost
	for _, x := range models {
		prefix := ""
		if x.label != "" {
			prefix = x.label + ": "
		}
		// Shapes bounds every layer output but not the input, whose size could overflow.
		if in := x.m.Input; float64(in.C)*float64(in.H)*float64(in.W) > 1<<28 {
			return fmt.Errorf("%w: %sinput shape %v has more than %d values", ErrOverLimit, prefix, in, 1<<28)
		}
		shapes, err := x.m.Shapes()
		if err != nil {
			return fmt.Errorf("%w: %s%v", ErrBadRequest, prefix, err)
		}
		c := Estimate(x.m, shapes, batch, threads)
		total.MACs += c.MACs
		total.Memory += c.Memory
	}
	if total.MACs > lim.MaxMACs {
		return fmt.Errorf("%w: %.3g multiply-adds per forward pass%s (batch %d), limit %.3g",
			ErrOverLimit, total.MACs, together, batch, lim.MaxMACs)
	}
	if total.Memory > lim.MaxMemory {
		return fmt.Errorf("%w: the forward pass%s needs about %.0f MiB (batch %d), limit %.0f MiB",
			ErrOverLimit, together, total.Memory/(1<<20), batch, lim.MaxMemory/(1<<20))
	}
	return nil
}

// Cost is the work and memory one forward pass of a model needs.
type Cost struct {
	MACs   float64 // multiply-adds over the whole batch
	Memory float64 // bytes: input, every activation, im2col scratch and two copies of the weights
}

// Estimate computes the cost of one forward pass of m, whose per-layer output shapes are
// shapes (from m.Shapes), for batch samples and threads workers: the multiply-adds of
// convolutions and linear layers, and as many operations for every other layer as it does
// (a pooling window per output, one per element for additions and activations), so that
// no layer kind escapes a work limit. It uses floating point so that absurd sizes cannot
// overflow.
func Estimate(m *nn.Model, shapes []nn.Shape, batch, threads int) Cost {
	size := func(s nn.Shape) float64 { return float64(s.C) * float64(s.H) * float64(s.W) }
	b := float64(max(batch, 1))
	acts := size(m.Input)
	var macs, params, col float64
	for i, l := range m.Layers {
		out := shapes[i]
		acts += size(out)
		switch l.Kind {
		case nn.Conv2D:
			k := float64(l.In) / float64(l.GroupsOrOne()) * float64(l.Kernel) * float64(l.Kernel)
			macs += float64(out.H) * float64(out.W) * float64(l.Out) * k
			params += float64(l.Out)*k + float64(l.Out)
			col = math.Max(col, k*float64(out.H)*float64(out.W))
		case nn.Linear:
			macs += float64(l.In) * float64(l.Out)
			params += float64(l.In)*float64(l.Out) + float64(l.Out)
		case nn.BatchNorm:
			params += 4 * float64(out.C)
			macs += 2 * size(out)
		case nn.MaxPool, nn.AvgPool:
			// Every output reads a whole window: a large kernel on a large map is as much
			// work as a convolution.
			macs += size(out) * float64(l.Kernel) * float64(l.Kernel)
		case nn.Add:
			macs += size(out) * float64(len(l.Inputs)-1)
		case nn.GlobalAvgPool:
			macs += inSize(m, shapes, l)
		default: // activations, flatten: one pass over the output
			macs += size(out)
		}
	}
	return Cost{
		MACs:   b * macs,
		Memory: 4 * (b*acts + float64(max(threads, 1))*col + 2*params),
	}
}

// inSize is the size of a layer's first input.
func inSize(m *nn.Model, shapes []nn.Shape, l *nn.Layer) float64 {
	s := m.Input
	if i := m.Index(l.Inputs[0]); i >= 0 {
		s = shapes[i]
	}
	return float64(s.C) * float64(s.H) * float64(s.W)
}

// RemoteMeter measures latency on another device through its latency agent ("autoprune
// agent"). It sends only the architecture; results are cached by nn.Model.Hash. Network
// errors and 5xx answers are retried with exponential backoff; 4xx answers are not.
type RemoteMeter struct {
	URL     string        // the agent, e.g. "http://127.0.0.1:7070"
	Token   string        // sent as "Authorization: Bearer TOKEN" when set
	Batch   int           // samples per pass; default 1
	Threads int           // engine threads on the device; default 1
	Warmup  int           // untimed passes; default 5
	Runs    int           // timed passes; default 50
	Budget  time.Duration // time for the timed passes (at least 5 runs); default 3s
	Timeout time.Duration // for one request, queueing on the agent included; default 2*Budget + 60s
	Retries int           // extra tries after a failed one; 0 means 2, negative means none
	Backoff time.Duration // wait before the first retry, doubled each time; default 250ms
	Client  *http.Client  // default: a client without a global timeout

	mu    sync.Mutex
	cache map[string]Latency
}

// Measure returns the latency distribution of m measured by the agent, from the cache when
// the same architecture was measured before.
func (rm *RemoteMeter) Measure(ctx context.Context, m *nn.Model) (Latency, error) {
	if _, err := m.Shapes(); err != nil {
		return Latency{}, fmt.Errorf("remote latency: %w", err)
	}
	key := m.Hash()
	rm.mu.Lock()
	l, ok := rm.cache[key]
	rm.mu.Unlock()
	if ok {
		return l, nil
	}
	res, err := rm.MeasureResponse(ctx, m)
	if err != nil {
		return Latency{}, err
	}
	rm.mu.Lock()
	if rm.cache == nil {
		rm.cache = map[string]Latency{}
	}
	rm.cache[key] = res.Latency
	rm.mu.Unlock()
	return res.Latency, nil
}

// MeasureResponse asks the agent to measure m, without the cache, and returns its whole
// answer after checking that it measured the same architecture.
func (rm *RemoteMeter) MeasureResponse(ctx context.Context, m *nn.Model) (MeasureResponse, error) {
	var res MeasureResponse
	body, err := json.Marshal(MeasureRequest{
		Model: m, Batch: rm.Batch, Threads: rm.Threads, Warmup: rm.Warmup, Runs: rm.Runs,
		BudgetMS: int(rm.Budget / time.Millisecond),
	})
	if err != nil {
		return res, fmt.Errorf("latency agent at %s: encoding model %q: %w", rm.URL, m.Name, err)
	}
	if err := rm.call(ctx, http.MethodPost, MeasurePath, body, maxAnswer, &res); err != nil {
		return res, err
	}
	if want := m.Hash(); res.Hash != want {
		return res, fmt.Errorf("latency agent at %s: measured architecture %.16s, sent %.16s (is the agent the same version?)", rm.URL, res.Hash, want)
	}
	if res.Latency.N <= 0 || res.Latency.Median <= 0 {
		return res, fmt.Errorf("latency agent at %s: answer for model %q has no timings", rm.URL, m.Name)
	}
	return res, nil
}

// Info asks the agent for its version, device and limits.
func (rm *RemoteMeter) Info(ctx context.Context) (AgentInfo, error) {
	var info AgentInfo
	err := rm.call(ctx, http.MethodGet, InfoPath, nil, maxAnswer, &info)
	return info, err
}

// statusError is an error answer of the agent.
type statusError struct {
	status     int
	msg        string
	retryAfter time.Duration // from a Retry-After header in seconds
}

func (e *statusError) Error() string {
	s := fmt.Sprintf("HTTP %d %s: %s", e.status, http.StatusText(e.status), e.msg)
	if e.status == http.StatusUnauthorized {
		s += " (check the token: --token, or AUTOPRUNE_AGENT_TOKEN)"
	}
	return s
}

// maxAnswer is the most a client reads of an agent's answer, unless it expects more.
const maxAnswer = 1 << 20

// call sends one request with retries and decodes a 200 answer of at most limit bytes into
// out.
func (rm *RemoteMeter) call(ctx context.Context, method, path string, body []byte, limit int64, out any) error {
	u, err := rm.endpoint(path)
	if err != nil {
		return err
	}
	tries := 1 + rm.Retries
	if rm.Retries == 0 {
		tries = 3
	} else if rm.Retries < 0 {
		tries = 1
	}
	wait := rm.Backoff
	if wait <= 0 {
		wait = 250 * time.Millisecond
	}
	var last error
	network := false
	for i := 0; i < tries; i++ {
		if i > 0 {
			d := wait << (i - 1)
			var se *statusError
			if errors.As(last, &se) {
				d = max(d, se.retryAfter)
			}
			t := time.NewTimer(min(d, 10*time.Second))
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("latency agent at %s: %w", rm.URL, ctx.Err())
			case <-t.C:
			}
		}
		var retry bool
		retry, network, last = rm.try(ctx, method, u, body, limit, out)
		if last == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("latency agent at %s: %w", rm.URL, ctx.Err())
		}
		if !retry {
			return fmt.Errorf("latency agent at %s: %w", rm.URL, last)
		}
	}
	var ne net.Error
	if network && (errors.Is(last, context.DeadlineExceeded) || (errors.As(last, &ne) && ne.Timeout())) {
		return fmt.Errorf("latency agent at %s: no answer after %d tries of %s each: %w (a busy or slow device needs a longer timeout)",
			rm.URL, tries, rm.timeout(), last)
	}
	if network {
		return fmt.Errorf("latency agent at %s: unreachable after %d tries: %w — is `autoprune agent` running there?", rm.URL, tries, last)
	}
	return fmt.Errorf("latency agent at %s: failed after %d tries: %w", rm.URL, tries, last)
}

// try sends one request. It reports whether a failure is worth retrying and whether it was
// a network error (no HTTP answer).
func (rm *RemoteMeter) try(ctx context.Context, method, u string, body []byte, limit int64, out any) (retry, network bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, rm.timeout())
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return false, false, fmt.Errorf("building request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if rm.Token != "" {
		req.Header.Set("Authorization", "Bearer "+rm.Token)
	}
	client := rm.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return true, true, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return true, true, fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e ErrorResponse
		msg := strings.TrimSpace(string(data))
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		if len(msg) > 500 {
			msg = msg[:500] + "..."
		}
		se := &statusError{status: resp.StatusCode, msg: msg}
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			se.retryAfter = time.Duration(min(s, 60)) * time.Second
		}
		return resp.StatusCode >= 500, false, se
	}
	if int64(len(data)) > limit {
		return false, false, fmt.Errorf("answer over %d bytes", limit)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return false, false, fmt.Errorf("answer is not valid JSON: %w", err)
	}
	return false, false, nil
}

// timeout returns the time limit of one request.
func (rm *RemoteMeter) timeout() time.Duration {
	if rm.Timeout > 0 {
		return rm.Timeout
	}
	budget := rm.Budget
	if budget <= 0 {
		budget = 3 * time.Second
	}
	return 2*budget + time.Minute
}

// endpoint joins the agent URL and a path, checking that the URL is http(s)://HOST[:PORT].
func (rm *RemoteMeter) endpoint(path string) (string, error) {
	u, err := url.Parse(rm.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("latency agent URL %q: want http://HOST:PORT (the address \"autoprune agent --listen\" prints)", rm.URL)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n <= 0 || n > 65535 {
			return "", fmt.Errorf("latency agent URL %q: bad port %q", rm.URL, p)
		}
	}
	return strings.TrimRight(u.Scheme+"://"+u.Host+u.Path, "/") + path, nil
}
