package report

import (
	"bytes"
	"context"
	"image/color"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// chromium runs Debian's headless Chromium on a file with extra flags and returns its
// standard output and the console messages the page logged.
func chromium(t *testing.T, page string, flags ...string) (string, []string) {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not installed (apt-get install chromium; .ci/run does): the page is not checked in a browser")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir(), "--enable-logging=stderr", "--v=0"}, flags...)
	cmd := exec.CommandContext(ctx, bin, append(args, "file://"+page)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, stderr.String())
	}
	var console []string
	for _, l := range strings.Split(stderr.String(), "\n") {
		if strings.Contains(l, ":CONSOLE") {
			console = append(console, l)
		}
	}
	return stdout.String(), console
}

// The report loads in a real browser with no console message, its DOM holds the tables and
// the plots, and a screenshot shows both.
func TestHTMLInChromium(t *testing.T) {
	dir := t.TempDir()
	// The console check must be able to fail: a page with a script error is caught.
	bad := filepath.Join(dir, "bad.html")
	if err := os.WriteFile(bad, []byte(`<html><body><script>missing();</script></body></html>`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, console := chromium(t, bad, "--dump-dom"); len(console) == 0 {
		t.Fatal("a script error left no console message: the check below would pass on any page")
	}

	page := filepath.Join(dir, "report.html")
	var b bytes.Buffer
	if err := HTML(&b, study(), Page{Source: "fixed.db"}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(page, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	dom, console := chromium(t, page, "--dump-dom")
	if len(console) > 0 {
		t.Errorf("console messages:\n%s", strings.Join(console, "\n"))
	}
	for what, n := range map[string]int{"<svg": 3, `<table class="trials">`: 2, `<table id="plan">`: 1, `<tr class="best">`: 2} {
		if got := strings.Count(dom, what); got != n {
			t.Errorf("the loaded page holds %d %s, want %d", got, what, n)
		}
	}

	shot := filepath.Join(dir, "shot.png")
	chromium(t, page, "--window-size=1280,1600", "--screenshot="+shot)
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	count := func(c color.RGBA) int {
		n := 0
		for y := img.Bounds().Min.Y; y < img.Bounds().Max.Y; y++ {
			for x := img.Bounds().Min.X; x < img.Bounds().Max.X; x++ {
				r, g, b, _ := img.At(x, y).RGBA()
				if near(r, c.R) && near(g, c.G) && near(b, c.B) {
					n++
				}
			}
		}
		return n
	}
	// The marks of the complete trials (plots) and the shading of the best trial's rows
	// (tables) are on screen.
	if n := count(ColorFeasible); n < 50 {
		t.Errorf("screenshot: %d pixels of the trial marks' colour: the plots are not drawn", n)
	}
	if n := count(color.RGBA{R: 0xef, G: 0xe7, B: 0xf7}); n < 1000 {
		t.Errorf("screenshot: %d pixels of the best row's shading: the tables are not drawn", n)
	}
}

func near(v uint32, c uint8) bool {
	d := int(v>>8) - int(c)
	return d > -4 && d < 4
}
