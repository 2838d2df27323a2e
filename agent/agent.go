// Package agent is the latency agent: a small HTTP server that runs on the target device (a
// phone, a board) and times forward passes of the architectures a pruning search sends it,
// so that the search optimises latency measured where the model will run.
//
// The protocol is in package eval (MeasureRequest, MeasureResponse, PairRequest,
// PairResponse, AgentInfo; the client is eval.RemoteMeter):
//
//	POST /v1/measure        a model architecture and timing settings -> the latency distribution
//	POST /v1/measure-pair   a reference and a candidate architecture -> their timings, interleaved
//	                        (A B A B ...) pair by pair, whose ratios survive drift of the device
//	GET  /v1/info           the device description, the agent version and its limits
//
// The agent listens on loopback by default. On any other address it requires a token,
// which every request must then carry as "Authorization: Bearer TOKEN". It reads at most
// 1 MiB per request, decodes strictly, checks the model and bounds its size before
// allocating anything, runs one measurement at a time, and answers every error with a JSON
// body {"error": "..."}.
package agent

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/autoprune/autoprune/eval"
	"github.com/autoprune/autoprune/nn"
)

// Version is the agent protocol version reported by GET /v1/info: 2 added
// POST /v1/measure-pair.
const Version = "2"

// DefaultAddr is the address the agent listens on when none is given: loopback only.
const DefaultAddr = "127.0.0.1:7070"

// MeasureFunc times a model's forward pass; the model has weights.
type MeasureFunc func(ctx context.Context, m *nn.Model, req eval.MeasureRequest) (eval.Latency, error)

// PairFunc times a candidate interleaved with a reference model; both have weights.
type PairFunc func(ctx context.Context, ref, cand *nn.Model, req eval.PairRequest) (eval.Pairs, error)

// Config configures an agent. The zero value is usable: no token, DefaultLimits with at most
// twice as many threads as cores, eval.MeasureLocal and eval.MeasurePairLocal, the local
// device.
type Config struct {
	// Token, when set, must be sent by every request as "Authorization: Bearer TOKEN".
	Token string
	// Limits bound what a request may ask; zero means eval.DefaultLimits with MaxThreads
	// lowered to twice the number of cores.
	Limits eval.Limits
	// QueueTimeout is how long a request waits for the measurement in progress to finish
	// before it gets 503 Service Unavailable; default 2 minutes.
	QueueTimeout time.Duration
	// MeasureTimeout bounds one measurement, warm-up included; default the budget plus
	// one minute.
	MeasureTimeout time.Duration
	// Measure times a forward pass; default eval.MeasureLocal.
	Measure MeasureFunc
	// MeasurePair times two models interleaved; default eval.MeasurePairLocal.
	MeasurePair PairFunc
	// Device describes this machine; default eval.ThisDevice().
	Device eval.Device
	// Log receives one line per request; nil discards them.
	Log *log.Logger
}

// Agent is the HTTP handler of the latency agent.
type Agent struct {
	cfg       Config
	tokenHash [sha256.Size]byte
	slot      chan struct{} // holds one value while a measurement runs
}

// New returns an agent with cfg's settings (defaults filled in).
func New(cfg Config) *Agent {
	if cfg.Limits == (eval.Limits{}) {
		cfg.Limits = eval.DefaultLimits
		cfg.Limits.MaxThreads = min(cfg.Limits.MaxThreads, 2*runtime.NumCPU())
	}
	if cfg.QueueTimeout <= 0 {
		cfg.QueueTimeout = 2 * time.Minute
	}
	if cfg.Measure == nil {
		cfg.Measure = func(ctx context.Context, m *nn.Model, r eval.MeasureRequest) (eval.Latency, error) {
			return eval.MeasureLocal(ctx, m, r.Batch, r.Threads, r.Warmup, r.Runs, r.Budget())
		}
	}
	if cfg.MeasurePair == nil {
		cfg.MeasurePair = func(ctx context.Context, ref, cand *nn.Model, r eval.PairRequest) (eval.Pairs, error) {
			return eval.MeasurePairLocal(ctx, ref, cand, r.Batch, r.Threads, r.Warmup, r.Runs, r.Budget())
		}
	}
	if cfg.Device == (eval.Device{}) {
		cfg.Device = eval.ThisDevice()
	}
	if cfg.Log == nil {
		cfg.Log = log.New(io.Discard, "", 0)
	}
	return &Agent{cfg: cfg, tokenHash: sha256.Sum256([]byte(cfg.Token)), slot: make(chan struct{}, 1)}
}

// Device returns the device description the agent reports.
func (a *Agent) Device() eval.Device { return a.cfg.Device }

// CheckListen refuses to listen on a non-loopback address without a token: anyone who can
// reach the port could otherwise keep the device busy. "localhost" and addresses in
// 127.0.0.0/8 and ::1 are loopback; an empty host (":7070") means every interface.
func CheckListen(addr, token string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--listen %q: want HOST:PORT, e.g. %s: %w", addr, DefaultAddr, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("--listen %q: port %q is not a number in 0..65535", addr, port)
	}
	if isLoopback(host) || token != "" {
		return nil
	}
	where := host
	if where == "" || where == "0.0.0.0" || where == "::" {
		where = "every network interface"
	}
	return fmt.Errorf("--listen %s would accept measurement requests from %s without authentication: "+
		"give a --token (or AUTOPRUNE_AGENT_TOKEN) that clients must send, or listen on 127.0.0.1 and forward the port (adb forward, ssh -L)", addr, where)
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ServeHTTP answers one request: authentication, routing, limits, panics turned into 500.
func (a *Agent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w}
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			a.cfg.Log.Printf("panic serving %s %s: %v\n%s", r.Method, r.URL.Path, p, debug.Stack())
			if rec.status == 0 {
				writeError(rec, http.StatusInternalServerError, "internal error (the agent logged it)")
			}
		}
		a.cfg.Log.Printf("%s %s %s %d %s%s", r.RemoteAddr, r.Method, r.URL.Path, rec.status,
			time.Since(start).Round(time.Microsecond), rec.note)
	}()
	if !a.authorized(r) {
		rec.Header().Set("WWW-Authenticate", `Bearer realm="autoprune agent"`)
		writeError(rec, http.StatusUnauthorized, "missing or wrong token: send \"Authorization: Bearer TOKEN\" with the agent's --token")
		return
	}
	switch r.URL.Path {
	case eval.MeasurePath:
		if !allow(rec, r, http.MethodPost) {
			return
		}
		a.measure(rec, r)
	case eval.PairPath:
		if !allow(rec, r, http.MethodPost) {
			return
		}
		a.measurePair(rec, r)
	case eval.InfoPath:
		if !allow(rec, r, http.MethodGet, http.MethodHead) {
			return
		}
		writeJSON(rec, http.StatusOK, eval.AgentInfo{Version: Version, Device: a.cfg.Device, Limits: a.cfg.Limits})
	default:
		writeError(rec, http.StatusNotFound, fmt.Sprintf("no such endpoint %q (have POST %s, POST %s and GET %s)",
			r.URL.Path, eval.MeasurePath, eval.PairPath, eval.InfoPath))
	}
}

// authorized compares the bearer token in constant time (of hashes, so that the length of
// the token does not show either).
func (a *Agent) authorized(r *http.Request) bool {
	if a.cfg.Token == "" {
		return true
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return false
	}
	h := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return subtle.ConstantTimeCompare(h[:], a.tokenHash[:]) == 1
}

func allow(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s (use %s)", r.Method, r.URL.Path, strings.Join(methods, " or ")))
	return false
}

// measure decodes and checks a request, waits for the measurement slot, and times the model.
func (a *Agent) measure(w *recorder, r *http.Request) {
	if !jsonBody(w, r) {
		return
	}
	req, m, err := a.cfg.Limits.Decode(http.MaxBytesReader(w, r.Body, a.cfg.Limits.MaxBody))
	if err != nil {
		writeDecodeError(w, err)
		return
	}
	hash := m.Hash()
	w.note = fmt.Sprintf(" model %q %.12s batch %d threads %d", m.Name, hash, req.Batch, req.Threads)
	var lat eval.Latency
	ok := a.run(w, r, fmt.Sprintf("%q", m.Name), req.Budget(), func(ctx context.Context) error {
		if err := m.Init(1); err != nil {
			return fmt.Errorf("%w: %v", eval.ErrBadRequest, err)
		}
		var err error
		lat, err = a.cfg.Measure(ctx, m, req)
		return err
	})
	if !ok {
		return
	}
	lat.Device = a.cfg.Device
	w.note += fmt.Sprintf(" median %s n %d", lat.Median, lat.N)
	writeJSON(w, http.StatusOK, eval.MeasureResponse{Latency: lat, Device: a.cfg.Device, Hash: hash})
}

// measurePair decodes and checks a pair request, waits for the measurement slot, and times
// the two models interleaved.
func (a *Agent) measurePair(w *recorder, r *http.Request) {
	if !jsonBody(w, r) {
		return
	}
	req, ref, cand, err := a.cfg.Limits.DecodePair(http.MaxBytesReader(w, r.Body, a.cfg.Limits.MaxBody))
	if err != nil {
		writeDecodeError(w, err)
		return
	}
	refHash, candHash := ref.Hash(), cand.Hash()
	w.note = fmt.Sprintf(" ref %q %.12s cand %q %.12s batch %d threads %d", ref.Name, refHash, cand.Name, candHash, req.Batch, req.Threads)
	var p eval.Pairs
	ok := a.run(w, r, fmt.Sprintf("%q versus %q", cand.Name, ref.Name), req.Budget(), func(ctx context.Context) error {
		if err := ref.Init(1); err != nil {
			return fmt.Errorf("%w: reference: %v", eval.ErrBadRequest, err)
		}
		if err := cand.Init(1); err != nil {
			return fmt.Errorf("%w: candidate: %v", eval.ErrBadRequest, err)
		}
		var err error
		p, err = a.cfg.MeasurePair(ctx, ref, cand, req)
		return err
	})
	if !ok {
		return
	}
	p.Device = a.cfg.Device
	w.note += fmt.Sprintf(" ratio %.4f n %d", p.Ratio(), p.Len())
	writeJSON(w, http.StatusOK, eval.PairResponse{Pairs: p, Device: a.cfg.Device, RefHash: refHash, CandHash: candHash})
}

// jsonBody refuses a request body that is not declared as JSON (415). A JSON content type
// also makes browsers ask before a cross-site POST, so that a web page cannot make a
// loopback agent measure.
func jsonBody(w http.ResponseWriter, r *http.Request) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(strings.ToLower(ct), "application/json") {
		writeError(w, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q: want application/json", ct))
		return false
	}
	return true
}

// writeDecodeError answers a request the decoder refused: 413 for a body over the limit,
// 422 for a request over the agent's limits, 400 for anything else.
func writeDecodeError(w http.ResponseWriter, err error) {
	status := http.StatusBadRequest
	switch {
	case errors.Is(err, eval.ErrBodyTooLarge):
		status = http.StatusRequestEntityTooLarge
	case errors.Is(err, eval.ErrOverLimit):
		status = http.StatusUnprocessableEntity
	}
	writeError(w, status, err.Error())
}

// run waits for the measurement slot and runs work in it under the measurement timeout
// (the agent's, or budget plus one minute). It reports whether work succeeded; otherwise it
// has answered with the error. what names the measurement in the log of a panic.
func (a *Agent) run(w http.ResponseWriter, r *http.Request, what string, budget time.Duration, work func(ctx context.Context) error) bool {
	// Wait for the device: one measurement at a time, or they would disturb each other.
	queue := time.NewTimer(a.cfg.QueueTimeout)
	defer queue.Stop()
	select {
	case a.slot <- struct{}{}:
	case <-queue.C:
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("busy: another measurement has run for over %s; try again later", a.cfg.QueueTimeout))
		return false
	case <-r.Context().Done():
		writeError(w, http.StatusServiceUnavailable, "request cancelled while waiting for the device")
		return false
	}

	timeout := a.cfg.MeasureTimeout
	if timeout <= 0 {
		timeout = budget + time.Minute
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		// The slot is released only when the measurement really ends, even after the
		// handler gave up on it, so that measurements never overlap.
		defer func() { <-a.slot }()
		var err error
		defer func() {
			if p := recover(); p != nil {
				a.cfg.Log.Printf("panic measuring %s: %v\n%s", what, p, debug.Stack())
				err = fmt.Errorf("%w: %v", errPanic, p)
			}
			done <- err
		}()
		err = work(ctx)
	}()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	switch {
	case err == nil:
		return true
	case errors.Is(err, eval.ErrBadRequest), errors.Is(err, nn.ErrInvalid):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusGatewayTimeout, fmt.Sprintf("measurement exceeded the agent's limit of %s", timeout))
	case r.Context().Err() != nil:
		writeError(w, http.StatusServiceUnavailable, "request cancelled during the measurement")
	default:
		writeError(w, http.StatusInternalServerError, "measurement failed: "+err.Error())
	}
	return false
}

var errPanic = errors.New("panic in the inference engine")

// recorder remembers the status written, for the log and the panic handler.
type recorder struct {
	http.ResponseWriter
	status int
	note   string
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(eval.ErrorResponse{Error: "encoding the answer: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, eval.ErrorResponse{Error: msg})
}

// Server returns an http.Server for the agent with timeouts on every phase of a request.
// Its requests' contexts derive from ctx, so cancelling ctx stops running measurements.
func (a *Agent) Server(ctx context.Context) *http.Server {
	measure := a.cfg.MeasureTimeout
	if measure <= 0 {
		measure = time.Duration(a.cfg.Limits.MaxBudget)*time.Millisecond + time.Minute
	}
	return &http.Server{
		Handler:           a,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      a.cfg.QueueTimeout + measure + 30*time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          a.cfg.Log,
	}
}

// Serve answers requests on ln until ctx is cancelled, then shuts down gracefully (running
// measurements are cancelled, open connections get 10 seconds to finish) and returns
// ctx.Err(). It returns other errors of the listener as they come.
func (a *Agent) Serve(ctx context.Context, ln net.Listener) error {
	srv := a.Server(ctx)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("agent: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	<-errc
	return ctx.Err()
}
