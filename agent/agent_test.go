package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/autoprune/autoprune/agent"
	"github.com/autoprune/autoprune/eval"
	"github.com/autoprune/autoprune/nn"
	"github.com/autoprune/autoprune/nn/zoo"
	"github.com/autoprune/autoprune/prune"
)

// start runs an agent on a free loopback port until the test ends and returns its URL.
func start(t *testing.T, cfg agent.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- agent.New(cfg).Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Serve returned %v, want context.Canceled", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("agent did not shut down")
		}
	})
	return "http://" + ln.Addr().String()
}

func arch(t *testing.T, name string) string {
	t.Helper()
	m, err := zoo.Build(name, nn.Shape{C: 1, H: 28, W: 28}, 10, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.Architecture()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

type answer struct {
	status int
	body   string
	header http.Header
}

func do(t *testing.T, method, url, token, body string) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, string(b), resp.Header}
}

func TestAgentMeasuresAndRejectsBadRequests(t *testing.T) {
	const token = "correct-horse-battery-staple"
	url := start(t, agent.Config{Token: token})
	lenet := arch(t, "lenet5")
	valid := `{"model":` + lenet + `,"batch":2,"runs":5,"warmup":1,"budget_ms":2000}`

	check := func(a answer) {
		t.Helper()
		if a.status != http.StatusOK {
			t.Fatalf("valid request: %d %s", a.status, a.body)
		}
		var res eval.MeasureResponse
		if err := json.Unmarshal([]byte(a.body), &res); err != nil {
			t.Fatal(err)
		}
		l := res.Latency
		if l.N != 5 || l.Batch != 2 || l.Threads != 1 || l.Proxy || !(l.Min > 0 && l.Min <= l.Median && l.Median <= l.P90) ||
			l.Median > 5*time.Second {
			t.Errorf("implausible distribution %+v", l)
		}
		m, _ := zoo.Build("lenet5", nn.Shape{C: 1, H: 28, W: 28}, 10, 1)
		if res.Hash != m.Hash() || res.Device != eval.ThisDevice() || l.Device != res.Device {
			t.Errorf("answer %+v: want hash %.16s and this device", res, m.Hash())
		}
	}
	check(do(t, "POST", url+eval.MeasurePath, token, valid))

	info := do(t, "GET", url+eval.InfoPath, token, "")
	var ai eval.AgentInfo
	if info.status != 200 || json.Unmarshal([]byte(info.body), &ai) != nil || ai.Version != agent.Version || ai.Device.Cores <= 0 {
		t.Errorf("info: %d %s", info.status, info.body)
	}

	huge := `{"model":` + lenet + `,"batch":1` + strings.Repeat(" ", 1<<20+10) + `}`
	for _, tc := range []struct {
		name, method, path, token, body string
		status                          int
		msg                             string
	}{
		{"malformed JSON", "POST", eval.MeasurePath, token, `{"model":{`, 400, "unexpected EOF"},
		{"unknown field", "POST", eval.MeasurePath, token, `{"model":` + lenet + `,"iterations":3}`, 400, `unknown field "iterations"`},
		{"unknown layer kind", "POST", eval.MeasurePath, token, `{"model":` + strings.Replace(lenet, `"relu"`, `"gelu"`, 1) + `}`, 400, `unknown layer kind "gelu"`},
		{"inconsistent shapes", "POST", eval.MeasurePath, token, `{"model":` + strings.Replace(lenet, `"in":6`, `"in":7`, 1) + `}`, 400, "expects 7 input channels"},
		{"dangling input", "POST", eval.MeasurePath, token, `{"model":` + strings.Replace(lenet, `"inputs":["conv1"]`, `"inputs":["nowhere"]`, 1) + `}`, 400, `input "nowhere" is not defined`},
		{"absurd batch", "POST", eval.MeasurePath, token, `{"model":` + lenet + `,"batch":100000}`, 422, "batch 100000 exceeds"},
		{"absurd runs", "POST", eval.MeasurePath, token, `{"model":` + lenet + `,"runs":1000000}`, 422, "runs 1000000 exceeds"},
		{"absurd size", "POST", eval.MeasurePath, token, `{"model":{"name":"x","input":{"c":1024,"h":64,"w":64},"layers":[{"name":"c","kind":"conv2d","inputs":["input"],"in":1024,"out":1024,"kernel":3,"pad":1}]}}`, 422, "multiply-adds"},
		{"oversize body", "POST", eval.MeasurePath, token, huge, 413, "over 1048576 bytes"},
		{"trailing garbage", "POST", eval.MeasurePath, token, valid + `garbage`, 400, "after the JSON object"},
		{"second object", "POST", eval.MeasurePath, token, valid + valid, 400, "after the JSON object"},
		{"empty body", "POST", eval.MeasurePath, token, ``, 400, "empty body"},
		{"wrong method", "GET", eval.MeasurePath, token, ``, 405, "method GET not allowed"},
		{"wrong method on info", "DELETE", eval.InfoPath, token, ``, 405, "not allowed"},
		{"wrong path", "GET", "/v2/measure", token, ``, 404, "no such endpoint"},
		{"missing token", "POST", eval.MeasurePath, "", valid, 401, "missing or wrong token"},
		{"wrong token", "POST", eval.MeasurePath, "correct-horse-battery-stapler", valid, 401, "missing or wrong token"},
		{"wrong token on info", "GET", eval.InfoPath, "x", ``, 401, "token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := do(t, tc.method, url+tc.path, tc.token, tc.body)
			var e eval.ErrorResponse
			if a.status != tc.status || json.Unmarshal([]byte(a.body), &e) != nil || !strings.Contains(e.Error, tc.msg) {
				t.Errorf("%d %s, want %d with a JSON error containing %q", a.status, a.body, tc.status, tc.msg)
			}
			if ct := a.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
		})
	}
	// A form post, which a web page could send without asking, is refused.
	req, _ := http.NewRequest("POST", url+eval.MeasurePath, strings.NewReader(valid))
	req.Header.Set("Content-Type", "text/plain")
	req.Header.Set("Authorization", "Bearer "+token)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("text/plain body: %v %v", resp.Status, err)
	}
	// After all that, the agent still measures.
	check(do(t, "POST", url+eval.MeasurePath, token, valid))
}

func TestAgentSerializesMeasurements(t *testing.T) {
	var mu sync.Mutex
	type span struct{ from, to time.Time }
	var spans []span
	measure := func(ctx context.Context, m *nn.Model, r eval.MeasureRequest) (eval.Latency, error) {
		from := time.Now()
		time.Sleep(30 * time.Millisecond)
		to := time.Now()
		mu.Lock()
		spans = append(spans, span{from, to})
		mu.Unlock()
		return eval.Summarize([]time.Duration{time.Millisecond}), nil
	}
	measurePair := func(ctx context.Context, ref, cand *nn.Model, r eval.PairRequest) (eval.Pairs, error) {
		if _, err := measure(ctx, cand, eval.MeasureRequest{}); err != nil {
			return eval.Pairs{}, err
		}
		return eval.Pairs{RefTimes: []time.Duration{1}, CandTimes: []time.Duration{1}, Batch: 1, Threads: 1}, nil
	}
	url := start(t, agent.Config{Measure: measure, MeasurePair: measurePair})
	mlp := arch(t, "mlp")
	// Single and pair measurements share the device: none may overlap another.
	single, pair := `{"model":`+mlp+`}`, `{"ref":`+mlp+`,"cand":`+mlp+`}`
	var wg sync.WaitGroup
	errs := make(chan string, 6)
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path, body := eval.MeasurePath, single
			if i%2 == 1 {
				path, body = eval.PairPath, pair
			}
			resp, err := http.Post(url+path, "application/json", strings.NewReader(body))
			if err != nil {
				errs <- err.Error()
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				errs <- resp.Status
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if len(spans) != 6 {
		t.Fatalf("%d measurements, want 6", len(spans))
	}
	for i := range spans {
		for j := range spans {
			if i != j && spans[i].from.Before(spans[j].to) && spans[j].from.Before(spans[i].to) {
				t.Errorf("measurements %d and %d overlap: %v and %v", i, j, spans[i], spans[j])
			}
		}
	}
}

func TestAgentQueueTimeoutPanicAndMeasureTimeout(t *testing.T) {
	release := make(chan struct{})
	measure := func(ctx context.Context, m *nn.Model, r eval.MeasureRequest) (eval.Latency, error) {
		switch m.Name {
		case "panic":
			panic("engine bug")
		case "block":
			<-release
		case "slow":
			<-ctx.Done()
			return eval.Latency{}, fmt.Errorf("latency: %w", ctx.Err())
		}
		return eval.Summarize([]time.Duration{time.Millisecond}), nil
	}
	url := start(t, agent.Config{Measure: measure, QueueTimeout: 100 * time.Millisecond, MeasureTimeout: 200 * time.Millisecond})
	model := func(name string) string {
		return `{"model":` + strings.Replace(arch(t, "mlp"), `"name":"mlp"`, `"name":"`+name+`"`, 1) + `}`
	}

	a := do(t, "POST", url+eval.MeasurePath, "", model("panic"))
	if a.status != 500 || !strings.Contains(a.body, "engine bug") {
		t.Errorf("panicking measurement: %d %s", a.status, a.body)
	}
	a = do(t, "POST", url+eval.MeasurePath, "", model("slow"))
	if a.status != http.StatusGatewayTimeout || !strings.Contains(a.body, "exceeded the agent's limit") {
		t.Errorf("slow measurement: %d %s", a.status, a.body)
	}

	// While one measurement holds the device, another waits for the queue timeout and
	// gets 503 with Retry-After.
	first := make(chan answer, 1)
	go func() {
		resp, err := http.Post(url+eval.MeasurePath, "application/json", strings.NewReader(model("block")))
		if err != nil {
			first <- answer{status: -1, body: err.Error()}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		first <- answer{status: resp.StatusCode, body: string(b)}
	}()
	time.Sleep(50 * time.Millisecond)
	a = do(t, "POST", url+eval.MeasurePath, "", model("queued"))
	if a.status != http.StatusServiceUnavailable || a.header.Get("Retry-After") == "" || !strings.Contains(a.body, "busy") {
		t.Errorf("queued request: %d %s", a.status, a.body)
	}
	close(release)
	if a := <-first; a.status != http.StatusGatewayTimeout && a.status != 200 {
		t.Errorf("blocked request: %d %s", a.status, a.body)
	}
	// The agent survived all of it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		a = do(t, "POST", url+eval.MeasurePath, "", model("fine"))
		if a.status == 200 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if a.status != 200 {
		t.Errorf("after the errors: %d %s", a.status, a.body)
	}
}

func TestCheckListen(t *testing.T) {
	for _, tc := range []struct {
		addr, token string
		ok          bool
	}{
		{"127.0.0.1:7070", "", true},
		{"localhost:7070", "", true},
		{"[::1]:7070", "", true},
		{"127.0.0.2:0", "", true},
		{"0.0.0.0:7070", "", false},
		{":7070", "", false},
		{"[::]:7070", "", false},
		{"192.168.1.20:7070", "", false},
		{"phone.local:7070", "", false},
		{"0.0.0.0:7070", "s3cret", true},
		{"192.168.1.20:7070", "s3cret", true},
		{"127.0.0.1", "", false},
		{"127.0.0.1:http", "", false},
		{"127.0.0.1:70000", "", false},
	} {
		err := agent.CheckListen(tc.addr, tc.token)
		if (err == nil) != tc.ok {
			t.Errorf("CheckListen(%q, %q) = %v, want ok=%v", tc.addr, tc.token, err, tc.ok)
		}
	}
	err := agent.CheckListen("0.0.0.0:7070", "")
	if err == nil || !strings.Contains(err.Error(), "without authentication") || !strings.Contains(err.Error(), "--token") {
		t.Errorf("message %v does not say why and what to do", err)
	}
}

func TestAgentShutsDownOnCancel(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	measure := func(ctx context.Context, m *nn.Model, r eval.MeasureRequest) (eval.Latency, error) {
		close(started)
		<-ctx.Done() // a long measurement, cut short by the shutdown
		return eval.Latency{}, ctx.Err()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- agent.New(agent.Config{Measure: measure}).Serve(ctx, ln) }()
	go http.Post("http://"+ln.Addr().String()+eval.MeasurePath, "application/json",
		bytes.NewReader([]byte(`{"model":`+arch(t, "mlp")+`}`)))
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("measurement did not start")
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Serve returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not stop")
	}
}

// halfVGG returns vgg-small and vgg-small with half of every group's channels removed by L1
// norm.
func halfVGG(t *testing.T) (dense, pruned *nn.Model) {
	t.Helper()
	dense, err := zoo.Build("vgg-small", nn.Shape{C: 1, H: 28, W: 28}, 10, 1)
	if err != nil {
		t.Fatal(err)
	}
	gs, err := prune.Groups(dense)
	if err != nil {
		t.Fatal(err)
	}
	pruned, err = prune.Structured(dense, prune.Uniform(gs, 0.5), prune.L1{})
	if err != nil {
		t.Fatal(err)
	}
	return dense, pruned
}

func TestAgentMeasuresPairs(t *testing.T) {
	const token = "correct-horse-battery-staple"
	url := start(t, agent.Config{Token: token})
	dense, pruned := halfVGG(t)
	rm := &eval.RemoteMeter{URL: url, Token: token, Runs: 30, Warmup: 2, Budget: 10 * time.Second}
	ratios := map[string]float64{}
	for _, tc := range []struct {
		name      string
		ref, cand *nn.Model
	}{
		{"itself", dense, dense.Clone()},
		{"pruned", dense, pruned},
	} {
		p, err := rm.MeasurePair(context.Background(), tc.ref, tc.cand)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if err := p.Check(); err != nil || p.Len() < 30 || p.Batch != 1 || p.Threads != 1 || p.Device != eval.ThisDevice() {
			t.Errorf("%s: %v, %d pairs, batch %d, %d thread(s), device %v", tc.name, err, p.Len(), p.Batch, p.Threads, p.Device)
		}
		ratios[tc.name] = p.Ratio()
	}
	// Loose bounds, and the order: the machine is shared.
	if r := ratios["itself"]; r < 0.8 || r > 1.25 {
		t.Errorf("vgg-small against itself: ratio %.3f, want about 1", r)
	}
	if r := ratios["pruned"]; r > 0.8 || r >= ratios["itself"] {
		t.Errorf("50 %% pruned vgg-small against dense: ratio %.3f (itself %.3f), want well below 1", r, ratios["itself"])
	}

	// A wrong or missing token is refused before anything is measured.
	for _, tok := range []string{"", "correct-horse-battery-stapler"} {
		_, err := (&eval.RemoteMeter{URL: url, Token: tok}).MeasurePair(context.Background(), dense, pruned)
		if err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "check the token") {
			t.Errorf("token %q: error %v", tok, err)
		}
	}

	// A cancelled request stops the measurement, and the device is free again afterwards.
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(200 * time.Millisecond); cancel() }()
	begin := time.Now()
	long := &eval.RemoteMeter{URL: url, Token: token, Runs: 10000, Budget: 60 * time.Second}
	if _, err := long.MeasurePair(ctx, dense, pruned); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: error %v, want context.Canceled", err)
	}
	if d := time.Since(begin); d > 10*time.Second {
		t.Errorf("cancelled measurement took %s to return", d)
	}
	quick := &eval.RemoteMeter{URL: url, Token: token, Runs: 5, Warmup: 1, Backoff: 100 * time.Millisecond, Retries: 20}
	if _, err := quick.MeasurePair(context.Background(), dense, pruned); err != nil {
		t.Errorf("after a cancelled measurement: %v", err)
	}
}

func TestAgentRejectsBadPairRequests(t *testing.T) {
	const token = "s3cret"
	url := start(t, agent.Config{Token: token})
	lenet := arch(t, "lenet5")
	other := `{"name":"r","input":{"c":1,"h":27,"w":27},"layers":[{"name":"r","kind":"relu","inputs":["input"]}]}`
	pair := func(ref, cand string) string { return `{"ref":` + ref + `,"cand":` + cand + `}` }
	valid := `{"ref":` + lenet + `,"cand":` + lenet + `,"runs":5,"warmup":1,"budget_ms":1000}`
	// About 10.3e9 multiply-adds each: one is within the default limit of 20e9, two are not.
	big := `{"name":"big","input":{"c":1024,"h":33,"w":33},"layers":[{"name":"c","kind":"conv2d","inputs":["input"],"in":1024,"out":1024,"kernel":3,"pad":1}]}`
	pool := `{"name":"p","input":{"c":1,"h":575,"w":575},"layers":[{"name":"m","kind":"maxpool","inputs":["input"],"kernel":64,"stride":1}]}`
	many := `{"name":"deep","input":{"c":1,"h":28,"w":28},"layers":[{"name":"r0","kind":"relu","inputs":["input"]}`
	for i := 1; i < 1500; i++ {
		many += fmt.Sprintf(`,{"name":"r%d","kind":"relu","inputs":["r%d"]}`, i, i-1)
	}
	many += `]}`
	if _, _, err := eval.DecodeMeasureRequest(strings.NewReader(`{"model":` + big + `}`)); err != nil {
		t.Fatalf("one big convolution alone: %v", err)
	}
	for _, tc := range []struct {
		name, method, token, body string
		status                    int
		msg                       string
	}{
		{"malformed JSON", "POST", token, `{"ref":{`, 400, "unexpected EOF"},
		{"unknown field", "POST", token, `{"ref":` + lenet + `,"cand":` + lenet + `,"model":{}}`, 400, `unknown field "model"`},
		{"no candidate", "POST", token, `{"ref":` + lenet + `}`, 400, "no candidate model"},
		{"invalid candidate", "POST", token, pair(lenet, strings.Replace(lenet, `"in":6`, `"in":7`, 1)), 400, "candidate: "},
		{"different inputs", "POST", token, pair(lenet, other), 400, "differs from candidate input"},
		{"trailing garbage", "POST", token, valid + `garbage`, 400, "after the JSON object"},
		{"empty body", "POST", token, ``, 400, "empty body"},
		{"absurd runs", "POST", token, `{"ref":` + lenet + `,"cand":` + lenet + `,"runs":1000000}`, 422, "runs 1000000 exceeds"},
		{"MACs together", "POST", token, pair(big, big), 422, "of the 2 models together"},
		{"layers together", "POST", token, pair(many, many), 422, "the 2 models have 3000 layers, limit 2000"},
		// A tiny pooling model: no multiply-add, but a 64x64 window for each of 512x512
		// outputs, 32 samples: 6.9e10 operations for the pair, counted like a convolution's.
		{"pooling work", "POST", token, `{"ref":` + pool + `,"cand":` + pool + `,"batch":32}`, 422, "of the 2 models together"},
		{"oversize body", "POST", token, valid + strings.Repeat(" ", 1<<20), 413, "over 1048576 bytes"},
		{"wrong method", "GET", token, ``, 405, "method GET not allowed"},
		{"missing token", "POST", "", valid, 401, "missing or wrong token"},
		{"wrong token", "POST", "s3cret!", valid, 401, "missing or wrong token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := do(t, tc.method, url+eval.PairPath, tc.token, tc.body)
			var e eval.ErrorResponse
			if a.status != tc.status || json.Unmarshal([]byte(a.body), &e) != nil || !strings.Contains(e.Error, tc.msg) {
				t.Errorf("%d %s, want %d with a JSON error containing %q", a.status, a.body, tc.status, tc.msg)
			}
		})
	}
	req, _ := http.NewRequest("POST", url+eval.PairPath, strings.NewReader(valid))
	req.Header.Set("Content-Type", "text/plain")
	req.Header.Set("Authorization", "Bearer "+token)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("text/plain body: %v %v", resp.Status, err)
	}
	// After all that, the agent still measures, and says which architectures it timed.
	a := do(t, "POST", url+eval.PairPath, token, valid)
	var res eval.PairResponse
	if a.status != 200 || json.Unmarshal([]byte(a.body), &res) != nil {
		t.Fatalf("valid request: %d %s", a.status, a.body)
	}
	m, _ := zoo.Build("lenet5", nn.Shape{C: 1, H: 28, W: 28}, 10, 1)
	if res.RefHash != m.Hash() || res.CandHash != m.Hash() || res.Device != eval.ThisDevice() || res.Pairs.Check() != nil || res.Pairs.Len() < 5 {
		t.Errorf("answer %+v", res)
	}
}
