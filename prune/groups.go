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

// flow is what a layer's output carries: a channel set and the number of consecutive
// features per channel (1 for feature maps, H*W after a flatten).
type flow struct {
	set    int
	factor int
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

func analyze(m *nn.Model) (*analysis, error) {
	shapes, err := m.Shapes()
	if err != nil {
		return nil, err
	}
	a := &analysis{m: m, shapes: shapes, out: make([]flow, len(m.Layers)), inFlows: make([]flow, len(m.Layers))}
	input := a.newSet(m.Input.C, true) // the input channels are fixed
	index := map[string]int{}
	flowOf := func(name string) flow {
		if name == nn.InputName {
			return flow{set: input, factor: 1}
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
				a.out[i] = flow{set: a.newSet(l.Out, false), factor: 1}
			case g == l.In && g == l.Out:
				a.out[i] = in // depthwise: output channel c is input channel c
			default:
				// Grouped convolutions tie channels within groups; keep them whole.
				a.locked[a.find(in.set)] = true
				a.out[i] = flow{set: a.newSet(l.Out, true), factor: 1}
			}
		case nn.Linear:
			a.out[i] = flow{set: a.newSet(l.Out, false), factor: 1}
		case nn.Flatten:
			s := a.shapeIn(i)
			a.out[i] = flow{set: in.set, factor: in.factor * s.H * s.W}
		case nn.Add:
			for _, name := range l.Inputs[1:] {
				f := flowOf(name)
				if f.factor != in.factor {
					return nil, fmt.Errorf("prune: layer %q adds inputs with different layouts", l.Name)
				}
				a.union(in.set, f.set)
			}
			a.out[i] = in
		case nn.Concat:
			// The pruner does not follow channels through a concatenation yet: what feeds
			// it and what it makes are kept whole.
			for _, name := range l.Inputs {
				a.locked[a.find(flowOf(name).set)] = true
			}
			a.out[i] = flow{set: a.newSet(a.shapes[i].C, true), factor: 1}
			a.whole = append(a.whole, fmt.Sprintf("concat %s: the channels of %s that it joins are kept whole (pruning through a concatenation is not supported yet)",
				l.Name, strings.Join(l.Inputs, ", ")))
		default: // batch norm, activations, pools keep channels
			a.out[i] = in
		}
	}
	// The network's output layer is never pruned.
	a.locked[a.find(a.out[len(m.Layers)-1].set)] = true
	return a, nil
}

// KeptWhole says which channels of m no group holds because the pruner cannot yet follow
// them (through a concatenation), one sentence each; nil when there are none.
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
	for i, l := range a.m.Layers {
		in, out := a.inFlows[i], a.out[i]
		switch l.Kind {
		case nn.Conv2D:
			if l.GroupsOrOne() == 1 {
				if g := get(in.set); g != nil {
					g.Consumers = append(g.Consumers, l.Name)
				}
				if g := get(out.set); g != nil {
					g.Producers = append(g.Producers, l.Name)
				}
			} else if l.GroupsOrOne() == l.In && l.In == l.Out {
				if g := get(out.set); g != nil {
					g.Carriers = append(g.Carriers, l.Name)
				}
			}
		case nn.Linear:
			if g := get(in.set); g != nil {
				g.Consumers = append(g.Consumers, l.Name)
			}
			if g := get(out.set); g != nil {
				g.Producers = append(g.Producers, l.Name)
			}
		case nn.BatchNorm:
			if g := get(out.set); g != nil {
				g.Carriers = append(g.Carriers, l.Name)
			}
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
