package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// docs/ARCHITECTURE.md's package table is the import graph: every package of the module has
// a row, lists every package of the module it imports, and imports none of the rows above
// its own (dependencies point down).
func TestArchitectureTableMatchesImports(t *testing.T) {
	const module = "github.com/autoprune/autoprune/"
	f, err := os.Open("../../docs/ARCHITECTURE.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var order []string
	listed := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		cells := strings.Split(sc.Text(), "|")
		if len(cells) != 5 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`") {
			continue
		}
		name := strings.Trim(strings.TrimSpace(cells[1]), "`")
		order = append(order, name)
		listed[name] = strings.TrimSpace(cells[3])
	}
	if len(order) == 0 {
		t.Fatal("no package table in docs/ARCHITECTURE.md")
	}
	cmd := exec.Command("go", "list", "-json", "../../...")
	out, err := cmd.Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	row := map[string]int{}
	for i, name := range order {
		row[name] = i
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(p.ImportPath, module)
		i, ok := row[name]
		if !ok {
			t.Errorf("package %s has no row in docs/ARCHITECTURE.md", name)
			continue
		}
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, module) {
				continue
			}
			dep := strings.TrimPrefix(imp, module)
			if j, ok := row[dep]; ok && j <= i {
				t.Errorf("%s imports %s, which sits above it in the table", name, dep)
			}
			if name == "cmd/autoprune" {
				continue // "everything below"
			}
			if !containsWord(listed[name], dep) {
				t.Errorf("%s imports %s; its row lists %q", name, dep, listed[name])
			}
		}
	}
}

// containsWord tells whether list, a comma-separated cell, names pkg as one of its items
// (an item may carry a remark in parentheses).
func containsWord(list, pkg string) bool {
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		if i := strings.IndexByte(item, ' '); i > 0 {
			item = item[:i]
		}
		if strings.Trim(item, "`") == pkg {
			return true
		}
	}
	return false
}

// The README's library snippets are the compiled Examples, word for word: the body of
// each Example function, one tab less indented.
func TestReadmeShowsTheExamples(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, ex := range []struct{ file, fn string }{
		{"../../search/example_test.go", "ExampleOpen"},
		{"../../prune/example_test.go", "ExampleStructured"},
	} {
		src, err := os.ReadFile(ex.file)
		if err != nil {
			t.Fatal(err)
		}
		s := string(src)
		head := "func " + ex.fn + "() {\n"
		i := strings.Index(s, head)
		if i < 0 {
			t.Fatalf("%s has no %s", ex.file, ex.fn)
		}
		body := s[i+len(head):]
		body = body[:strings.Index(body, "\n}\n")]
		var lines []string
		for _, l := range strings.Split(body, "\n") {
			lines = append(lines, strings.TrimPrefix(l, "\t"))
		}
		if want := strings.Join(lines, "\n"); !strings.Contains(string(readme), want) {
			t.Errorf("README.md does not show %s (%s) as it is:\n%s", ex.fn, ex.file, want)
		}
	}
}
