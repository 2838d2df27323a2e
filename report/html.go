package report

import (
	"bytes"
	"fmt"
	"html/template"
	"io"
	"regexp"
	"sort"
	"time"

	"github.com/autoprune/autoprune/search"
)

// Page says how HTML renders a study.
type Page struct {
	// Refresh, when positive, makes the page reload itself this often (a live view).
	Refresh time.Duration
	// Source names where the study was read from (a file or a redacted URL).
	Source string
	// Top is how many of the best trials the page lists (default 10).
	Top int
}

// HTML writes the study as one self-contained page: the plots embedded as SVG, the best
// trials and the Pareto front as tables, the winning plan, the config, the device and the
// workers. It needs nothing but the page: no script, no style sheet, no font from elsewhere.
func HTML(w io.Writer, s *search.Summary, pg Page) error {
	if pg.Top <= 0 {
		pg.Top = 10
	}
	v := view{Summary: s, Page: pg, Target: s.Constraint.String()}
	for _, d := range drawings {
		p, err := d.draw(s)
		if err != nil {
			return fmt.Errorf("plot %s: %w", d.name, err)
		}
		if p == nil {
			continue
		}
		var b bytes.Buffer
		wt, err := p.WriterTo(Width, Height, "svg")
		if err != nil {
			return fmt.Errorf("plot %s: %w", d.name, err)
		}
		if _, err := wt.WriteTo(&b); err != nil {
			return fmt.Errorf("plot %s: %w", d.name, err)
		}
		v.Plots = append(v.Plots, figure{Name: d.name, SVG: template.HTML(prolog.ReplaceAllString(b.String(), "$1"))})
	}
	row := func(t search.TrialResult) trialRow {
		m := t.Metric
		r := trialRow{Number: t.Number, Score: fmt.Sprintf("%.4f", t.Value), Acc: fmt.Sprintf("%.2f", 100*m.Accuracy),
			Delta:   fmt.Sprintf("%+.2f", 100*(m.Accuracy-s.Dense.Accuracy)),
			Latency: fmt.Sprintf("%.3f", float64(m.Latency.Median)/1e6), Speedup: "-",
			MACs:   fmt.Sprintf("%.1f", 100*float64(m.MACs)/float64(max(s.Dense.MACs, 1))),
			Params: m.Params, Bytes: m.Bytes, Over: t.Miss, Best: s.Best != nil && s.Best.Number == t.Number}
		switch {
		case t.Miss != "":
			r.Verdict = t.Miss
		case s.Constraint.Target != "" || s.Constraint.MaxBytes > 0:
			r.Verdict = "met"
		default:
			r.Verdict = "-"
		}
		if m.RelLatency > 0 {
			r.Speedup = fmt.Sprintf("%.2fx", 1/m.RelLatency)
		}
		return r
	}
	for _, t := range s.Top(pg.Top) {
		v.TopRows = append(v.TopRows, row(t))
	}
	for _, t := range s.Front() {
		v.FrontRows = append(v.FrontRows, row(t))
	}
	if s.Best != nil {
		v.Widths = s.Widths(s.Best.Plan)
	}
	workers := map[string]int{}
	for _, t := range s.Trials {
		if t.State == "fail" && t.Error != "" {
			v.Failed = append(v.Failed, fmt.Sprintf("trial %d: %s", t.Number, t.Error))
		}
		if t.Worker != "" {
			workers[t.Worker]++
		}
	}
	for w, n := range workers {
		v.Workers = append(v.Workers, fmt.Sprintf("%s (%d trials)", w, n))
	}
	sort.Strings(v.Workers)
	return page.Execute(w, v)
}

// prolog matches what precedes the <svg> element in a file, which an HTML page must not hold.
var prolog = regexp.MustCompile(`(?s)^.*?(<svg)`)

type figure struct {
	Name string
	SVG  template.HTML
}

type trialRow struct {
	Number                              int
	Score, Acc, Delta, Latency, Speedup string
	MACs                                string
	Params                              int
	Bytes                               int64
	Over, Verdict                       string
	Best                                bool
}

type view struct {
	*search.Summary
	Page
	Target    string
	Plots     []figure
	TopRows   []trialRow
	FrontRows []trialRow
	Widths    []search.Width
	Failed    []string
	Workers   []string
}

var page = template.Must(template.New("page").Funcs(template.FuncMap{
	"pct":     func(x float64) string { return fmt.Sprintf("%.2f", 100*x) },
	"ms":      func(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/1e6) },
	"seconds": func(d time.Duration) int { return int(d.Round(time.Second) / time.Second) },
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{{if gt .Refresh 0}}<meta http-equiv="refresh" content="{{seconds .Refresh}}">
{{end}}<title>autoprune study {{.Study}}</title>
<style>
body { font-family: sans-serif; margin: 1.5em auto; max-width: 84em; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.8em; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.best td { background: #efe7f7; font-weight: bold; }
tr.over td { color: #a33; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; }
.plots figure { flex: 1 1 34em; max-width: 40em; }
.plots svg { width: 100%; height: auto; border: 1px solid #eee; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
.note { color: #666; font-size: 0.85em; }
</style>
</head>
<body>
<h1>Study {{.Study}}</h1>
<p id="summary">{{index .Counts "complete"}} complete, {{index .Counts "pruned"}} stopped early, {{index .Counts "fail"}} failed, {{index .Counts "running"}} running, {{index .Counts "waiting"}} waiting.
{{if ne .Target "none"}}Constraint {{.Target}}: met by {{.Feasible}} of {{index .Counts "complete"}} complete trials.{{end}}
{{if .Best}}Best: trial {{.Best.Number}}, {{pct .Best.Metric.Accuracy}} % validation accuracy at {{printf "%.3f" .Best.Metric.RelLatency}}x the dense latency.{{else if ne .Target "none"}}No complete trial meets the constraint yet.{{end}}</p>
<p>Dense model: {{pct .Dense.Accuracy}} % validation accuracy, {{ms .Dense.Latency.Median}} ms median latency, {{.Dense.Params}} parameters, {{.Dense.MACs}} MACs.</p>

<div class="plots">
{{range .Plots}}<figure id="plot-{{.Name}}">{{.SVG}}</figure>
{{end}}</div>

<h2>Best trials</h2>
{{template "trials" .TopRows}}
<p class="note">By score; the trials that meet the constraint come first. "vs dense": validation accuracy points against the dense model.</p>

<h2>Pareto front</h2>
{{template "trials" .FrontRows}}
<p class="note">Complete trials that no other complete trial beats on both validation accuracy and latency, fastest first.</p>

{{if .Widths}}<h2>Winning plan: trial {{.Best.Number}}</h2>
<table id="plan">
<tr><th>group</th><th>ratio removed</th><th>channels kept</th><th>of</th></tr>
{{range .Widths}}<tr><td>{{.Group}}</td><td>{{printf "%.2f" .Ratio}}</td><td>{{.Kept}}</td><td>{{.Size}}</td></tr>
{{end}}</table>
{{end}}
{{if .Failed}}<h2>Failed trials</h2>
<ul>{{range .Failed}}<li>{{.}}</li>{{end}}</ul>
{{end}}
<h2>Device and machine</h2>
<p>Latency measured on {{.Dense.Latency.Device}}, batch {{.Dense.Latency.Batch}}, {{.Dense.Latency.Threads}} thread(s){{if .Dense.Latency.Proxy}} (estimated, not measured){{end}}.</p>
{{if .Workers}}<p>Workers: {{range $i, $w := .Workers}}{{if $i}}, {{end}}{{$w}}{{end}}.</p>{{end}}
{{if .Source}}<p>Study read from {{.Source}}{{if .ConfigPath}}, made with the config {{.ConfigPath}}{{end}}.</p>{{end}}

<h2>Config</h2>
{{if .Config}}<pre id="config">{{.Config}}</pre>{{else}}<p>This study was made before configs were stored with it{{if .ConfigPath}}: see {{.ConfigPath}}{{end}}.</p>{{end}}
</body>
</html>
{{define "trials"}}<table class="trials">
<tr><th>trial</th><th>score</th><th>val acc %</th><th>vs dense</th><th>latency ms</th><th>speed-up</th><th>MACs %</th><th>params</th><th>bytes</th><th>constraint</th></tr>
{{range .}}<tr class="{{if .Best}}best{{end}}{{if .Over}} over{{end}}"><td>{{.Number}}{{if .Best}} (best){{end}}</td><td>{{.Score}}</td><td>{{.Acc}}</td><td>{{.Delta}}</td><td>{{.Latency}}</td><td>{{.Speedup}}</td><td>{{.MACs}}</td><td>{{.Params}}</td><td>{{.Bytes}}</td><td>{{.Verdict}}</td></tr>
{{else}}<tr><td colspan="10">no complete trial yet</td></tr>
{{end}}</table>
{{end}}`))
