package search

import (
	"fmt"
	"hash/fnv"
	"math/rand"
	"sync"

	"github.com/c-bata/goptuna"
)

// globalRandMu serialises the samplers that draw from the process-wide math/rand generator.
var globalRandMu sync.Mutex

// reseeded wraps a goptuna sampler that draws from the process-wide math/rand generator
// (goptuna's TPE picks its mixture components there, beyond the reach of its seed option).
// Before each draw it reseeds that generator from the study seed, the trial number and the
// parameter name, so the same seed proposes the same trials. This needs rand.Seed to take
// effect: the module's go.mod sets "godebug randseednop=0"; a program that imports this
// package from another module needs the same line in its own go.mod, otherwise TPE runs
// but does not repeat itself exactly (Open warns).
type reseeded struct {
	goptuna.Sampler
	seed int64
}

// Sample reseeds the global generator, then asks the wrapped sampler.
func (r reseeded) Sample(st *goptuna.Study, t goptuna.FrozenTrial, name string, dist any) (float64, error) {
	h := fnv.New64a()
	fmt.Fprintf(h, "%d/%d/%s", r.seed, t.Number, name)
	globalRandMu.Lock()
	defer globalRandMu.Unlock()
	rand.Seed(int64(h.Sum64()))
	return r.Sampler.Sample(st, t, name, dist)
}

// globalSeedWorks reports whether rand.Seed takes effect in this program (see reseeded).
func globalSeedWorks() bool {
	globalRandMu.Lock()
	defer globalRandMu.Unlock()
	rand.Seed(1)
	a := rand.Int63()
	rand.Seed(1)
	return a == rand.Int63()
}
