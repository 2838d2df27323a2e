package prune

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// SavePlan writes what LoadPlan reads back: the criterion, every ratio (group names with
// dots included), and a comment that cannot break the file.
func TestSavePlanRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.plan.toml")
	want := PlanFile{Criterion: "taylor", Ratios: map[string]float64{"conv1": 0.25, "layer1.conv1": 0.5, "fc": 0.125}}
	if err := SavePlan(path, want, "best plan\nof trial 3"); err != nil {
		t.Fatal(err)
	}
	got, err := LoadPlan(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("read back %+v, want %+v", got, want)
	}
	b, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(b), "# best plan of trial 3\n") {
		t.Errorf("file starts %q", b)
	}
	if err := SavePlan(filepath.Join(path, "x"), want, ""); err == nil || !strings.Contains(err.Error(), "plan file") {
		t.Errorf("writing under a file: %v", err)
	}
}
