package prune

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/autoprune/autoprune/internal/fileio"
)

// PlanFile is the TOML form of a plan:
//
//	criterion = "l1"        # optional: l1, l2, bn, random, taylor
//	[ratios]
//	conv1 = 0.25
//	"layer1.conv1" = 0.5    # group names with dots are quoted
type PlanFile struct {
	Criterion string             `toml:"criterion"`
	Ratios    map[string]float64 `toml:"ratios"`
}

// LoadPlan reads a plan file strictly: unknown keys and wrong types are errors that name
// the file, and ratios must be in [0, 1).
func LoadPlan(path string) (PlanFile, error) {
	var pf PlanFile
	md, err := toml.DecodeFile(path, &pf)
	if err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			return pf, fmt.Errorf("plan file %s: %w: line %d: %v", path, ErrPlan, perr.Position.Line, perr.Message)
		}
		if errors.Is(err, os.ErrNotExist) {
			return pf, fmt.Errorf("plan file %s: no such file", path)
		}
		return pf, fmt.Errorf("plan file %s: %w: %v", path, ErrPlan, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		sort.Strings(keys)
		return pf, fmt.Errorf("plan file %s: %w: unknown key(s) %s (want criterion and a [ratios] table of group = ratio)", path, ErrPlan, strings.Join(keys, ", "))
	}
	if len(pf.Ratios) == 0 {
		return pf, fmt.Errorf("plan file %s: %w: no [ratios] table: nothing to prune", path, ErrPlan)
	}
	for g, r := range pf.Ratios {
		if !(r >= 0 && r < 1) {
			return pf, fmt.Errorf("plan file %s: %w: ratios.%s = %v: want a ratio in [0, 1)", path, ErrPlan, g, r)
		}
	}
	return pf, nil
}

// SavePlan writes a plan in the form LoadPlan reads, atomically (see fileio.WriteAtomic),
// with a comment line above it (such as where the plan comes from). Errors name the file.
func SavePlan(path string, pf PlanFile, comment string) error {
	var b bytes.Buffer
	if comment != "" {
		fmt.Fprintf(&b, "# %s\n", strings.ReplaceAll(comment, "\n", " "))
	}
	if pf.Criterion != "" {
		fmt.Fprintf(&b, "criterion = %q\n\n", pf.Criterion)
	}
	b.WriteString("[ratios]\n")
	names := make([]string, 0, len(pf.Ratios))
	for n := range pf.Ratios {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&b, "%q = %g\n", n, pf.Ratios[n])
	}
	if err := fileio.WriteAtomic(path, func(w io.Writer) error { _, err := w.Write(b.Bytes()); return err }); err != nil {
		return fmt.Errorf("plan file %s: %w", path, err)
	}
	return nil
}
