// Package prune removes parts of a network: structured pruning (whole channels, filters and
// neurons, so the model really gets smaller and faster on dense hardware) and unstructured
// pruning (individual weights, as masks), with the dependency analysis that keeps coupled
// channels consistent, importance criteria, pruning schedules and sensitivity analysis.
//
// Every function returns a new model and leaves its input untouched.
package prune

import (
	"fmt"
	"sort"
	"strings"

	"github.com/autoprune/autoprune/nn"
)

// Group is a set of channels that must be removed together: the output channels of one or
// more producing layers (convolutions, linear layers) and everything that carries them
// (batch norms, activations, pools, depthwise convolutions, residual additions) up to the
// layers that consume them.
type Group struct {
	// Name is stable and derived from layer names: the first producer in layer order.
	Name string
	// Size is the number of channels (or neurons) in the group.
	Size int
	// Producers are the Conv2D and Linear layers whose output channels form the group
	// (several when residual additions tie them together).
	Producers []string
	// Carriers are the layers whose per-channel parameters or channels follow the group:
	// batch norms and depthwise convolutions.
	Carriers []string
	// Consumers are the Conv2D and Linear layers whose input channels (or input features,
	// after a flatten) are the group's channels.
	Consumers []string
}

// String formats the group as "name (size channels: producers)".
func (g Group) String() string {
	return fmt.Sprintf("%s (%d channels: %s)", g.Name, g.Size, strings.Join(g.Producers, ", "))
}

// seg is a run of channels that belong to one channel set: n channels of set.
type seg struct {
	set, n int
}

// flow is what a layer's output carries: its channels as runs of channel sets (one run,
// except after a concatenation, which lays its inputs' runs one after another) and the
// number of consecutive features per channel (1 for feature maps, H*W after a flatten).
type flow struct {
	segs   []seg
	factor int
}

// lock marks every set of f as not prunable.
func (a *analysis) lock(f flow) {
	for _, s := range f.segs {
		a.locked[a.find(s.set)] = true
	}
}

// sameLayout tells whether two flows have runs of the same sizes and the same factor, so
// that an addition can tie them run by run.
func sameLayout(x, y flow) bool {
	if x.factor != y.factor || len(x.segs) != len(y.segs) {
		return false
	}
	for i := range x.segs {
		if x.segs[i].n != y.segs[i].n {
			return false
		}
	}
	return true
}

// analysis is the channel-set structure of a model.
type analysis struct {
	m       *nn.Model
	shapes  []nn.Shape
	out     []flow // per layer output
	parent  []int  // union-find over sets
	size    []int  // channels per set
	locked  []bool // set may not be pruned
	inFlows []flow // per layer, the flow of its first input
	// whole says which layers' channels are kept whole because the pruner cannot yet
	// follow them, and why.
	whole []string
}

func (a *analysis) find(s int) int {
	for a.parent[s] != s {
		a.parent[s] = a.parent[a.parent[s]]
		s = a.parent[s]
	}
	return s
}

func (a *analysis) union(x, y int) {
	x, y = a.find(x), a.find(y)
	if x == y {
		return
	}
	if y < x {
		x, y = y, x
	}
	a.parent[y] = x
	a.locked[x] = a.locked[x] || a.locked[y]
}

func (a *analysis) newSet(size int, locked bool) int {
	a.parent = append(a.parent, len(a.parent))
	a.size = append(a.size, size)
	a.locked = append(a.locked, locked)
	return len(a.parent) - 1
}

// fresh returns the flow of a new channel set of size channels.
func (a *analysis) fresh(size int, locked bool) flow {
	return flow{segs: []seg{{a.newSet(size, locked), size}}, factor: 1}
}

func analyze(m *nn.Model) (*analysis, error) {
	shapes, err := m.Shapes()
	if err != nil {
		return nil, err
	}
	a := &analysis{m: m, shapes: shapes, out: make([]flow, len(m.Layers)), inFlows: make([]flow, len(m.Layers))}
	input := a.fresh(m.Input.C, true) // the input channels are fixed
	index := map[string]int{}
	flowOf := func(name string) flow {
		if name == nn.InputName {
			return input
		}
		return a.out[index[name]]
	}
	for i, l := range m.Layers {
		index[l.Name] = i
		in := flowOf(l.Inputs[0])
		a.inFlows[i] = in
		switch l.Kind {
		case nn.Conv2D:
			g := l.GroupsOrOne()
			switch {
			case g == 1:
				a.out[i] = a.fresh(l.Out, false)
			case g == l.In && g == l.Out:
				a.out[i] = in // depthwise: output channel c is input channel c
			default:
				// Grouped convolutions tie channels within groups; keep them whole.
				a.lock(in)
				a.out[i] = a.fresh(l.Out, true)
			}
		case nn.Linear:
			a.out[i] = a.fresh(l.Out, false)
		case nn.Flatten:
			s := a.shapeIn(i)
			a.out[i] = flow{segs: in.segs, factor: in.factor * s.H * s.W}
		case nn.Add:
			for _, name := range l.Inputs[1:] {
				f := flowOf(name)
				if !sameLayout(in, f) {
					if f.factor != in.factor {
						return nil, fmt.Errorf("prune: layer %q adds inputs with different layouts", l.Name)
					}
					// Channels joined differently on each side (a concatenation added to
					// a plain tensor): keep both sides whole.
					a.lock(in)
					a.lock(f)
					a.whole = append(a.whole, fmt.Sprintf("add %s: the channels of %s are kept whole (its inputs join their channels in different ways)",
						l.Name, strings.Join(l.Inputs, ", ")))
					continue
				}
				for j, s := range f.segs {
					a.union(in.segs[j].set, s.set)
				}
			}
			a.out[i] = in
		case nn.Concat:
			// The output's channels are the inputs' runs one after another; every run
			// keeps its own group.
			out, same := flow{factor: in.factor}, true
			for _, name := range l.Inputs {
				f := flowOf(name)
				out.segs = append(out.segs, f.segs...)
				same = same && f.factor == in.factor
			}
			if !same {
				a.lock(out)
				a.whole = append(a.whole, fmt.Sprintf("concat %s: the channels of %s that it joins are kept whole (they are flattened differently)",
					l.Name, strings.Join(l.Inputs, ", ")))
			}
			a.out[i] = out
		default: // batch norm, activations, pools keep channels
			a.out[i] = in
		}
	}
	// The network's output layer is never pruned.
	a.lock(a.out[len(m.Layers)-1])
	return a, nil
}

// KeptWhole says which channels of m no group holds because the pruner cannot follow them
// (an addition of channels joined in different ways, a concatenation of differently
// flattened inputs), one sentence each; nil when there are none.
func KeptWhole(m *nn.Model) ([]string, error) {
	a, err := analyze(m)
	if err != nil {
		return nil, err
	}
	return a.whole, nil
}

// shapeIn returns the shape of layer i's first input.
func (a *analysis) shapeIn(i int) nn.Shape {
	name := a.m.Layers[i].Inputs[0]
	if name == nn.InputName {
		return a.m.Input
	}
	return a.shapes[a.m.Index(name)]
}

// Groups returns the prunable channel groups of a model in layer order. The model input's
// channels, the output layer's neurons and channels tied by grouped (non-depthwise)
// convolutions are never in a group.
func Groups(m *nn.Model) ([]Group, error) {
	a, err := analyze(m)
	if err != nil {
		return nil, err
	}
	return a.groups(), nil
}

func (a *analysis) groups() []Group {
	bySet := map[int]*Group{}
	var order []int
	get := func(set int) *Group {
		r := a.find(set)
		if a.locked[r] {
			return nil
		}
		g, ok := bySet[r]
		if !ok {
			g = &Group{Size: a.size[r]}
			bySet[r] = g
			order = append(order, r)
		}
		return g
	}
	// consume lists a layer among the consumers of every group its input carries;
	// carry lists it among the carriers of the group of a one-run flow (a batch norm or
	// depthwise convolution after a concatenation spans several groups: it is sliced with
	// them but not scored with any).
	consume := func(f flow, name string) {
		for _, s := range f.segs {
			if g := get(s.set); g != nil && (len(g.Consumers) == 0 || g.Consumers[len(g.Consumers)-1] != name) {
				g.Consumers = append(g.Consumers, name)
			}
		}
	}
	carry := func(f flow, name string) {
		if len(f.segs) != 1 {
			return
		}
		if g := get(f.segs[0].set); g != nil {
			g.Carriers = append(g.Carriers, name)
		}
	}
	produce := func(f flow, name string) {
		if g := get(f.segs[0].set); g != nil {
			g.Producers = append(g.Producers, name)
		}
	}
	for i, l := range a.m.Layers {
		in, out := a.inFlows[i], a.out[i]
		switch l.Kind {
		case nn.Conv2D:
			if l.GroupsOrOne() == 1 {
				consume(in, l.Name)
				produce(out, l.Name)
			} else if l.GroupsOrOne() == l.In && l.In == l.Out {
				carry(out, l.Name)
			}
		case nn.Linear:
			consume(in, l.Name)
			produce(out, l.Name)
		case nn.BatchNorm:
			carry(out, l.Name)
		}
	}
	var gs []Group
	for _, r := range order {
		g := bySet[r]
		if len(g.Producers) == 0 {
			continue
		}
		g.Name = g.Producers[0]
		gs = append(gs, *g)
	}
	sort.SliceStable(gs, func(i, j int) bool { return a.m.Index(gs[i].Name) < a.m.Index(gs[j].Name) })
	return gs
}
