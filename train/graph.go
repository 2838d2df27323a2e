package train

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/autoprune/autoprune/internal/kernel"
	"github.com/autoprune/autoprune/nn"
)

// param is one trainable tensor of the graph. Its data is the slice of the graph's model
// copy, bound as the node's value: optimizer updates are visible to the next run.
type param struct {
	name  string // "<layer>.<param>", as in nn
	node  *G.Node
	data  []float32
	mask  []float32 // weight mask of the layer, or nil
	decay bool      // weight decay applies (Conv2D and Linear weights)

	m, v []float32 // optimizer state, allocated on first use
}

// graph is a gorgonia expression graph for one model and batch size.
type graph struct {
	model   *nn.Model // private copy whose parameter slices back the param nodes
	batch   int
	classes int

	g      *G.ExprGraph
	xData  []float32 // backing array of the input node
	logits *G.Node
	params []*param
	bns    map[*nn.Layer]*bnOp

	loss   *xentOp // nil without a loss
	labels []uint8 // read by loss at every run
	vm     G.VM
}

// buildOptions selects what a graph computes.
type buildOptions struct {
	training   bool    // batch norm with batch statistics (and running-stat updates)
	loss       bool    // add the cross-entropy loss and its gradients
	bnMomentum float64 // running-stat update rate
}

// build validates m and builds its graph for batches of n samples.
func build(m *nn.Model, n int, o buildOptions) (gr *graph, err error) {
	if n <= 0 {
		return nil, fmt.Errorf("train: batch size %d must be positive", n)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	shapes, err := m.Shapes()
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	out := shapes[len(shapes)-1]
	if out.H != 1 || out.W != 1 {
		return nil, fmt.Errorf("train: model %q: output shape %v is not a vector of logits", m.Name, out)
	}
	mc := m.Clone()
	gr = &graph{model: mc, batch: n, classes: out.C, g: G.NewGraph(), bns: map[*nn.Layer]*bnOp{}}
	defer func() {
		// gorgonia reports some graph errors by panicking.
		if r := recover(); r != nil {
			gr, err = nil, fmt.Errorf("train: building the graph of %q: %v", m.Name, r)
		}
	}()

	in := m.Input
	gr.xData = make([]float32, n*in.Size())
	xt := tensor.New(tensor.WithShape(n, in.C, in.H, in.W), tensor.WithBacking(gr.xData))
	x := G.NewTensor(gr.g, tensor.Float32, 4, G.WithShape(n, in.C, in.H, in.W), G.WithName(nn.InputName), G.WithValue(xt))

	nodes := map[string]*G.Node{nn.InputName: x}
	dims := map[string]nn.Shape{nn.InputName: in}
	// learned tells whether a tensor depends on parameters, i.e. needs a gradient.
	learned := map[string]bool{nn.InputName: false}
	ws := &workspace{}

	newParam := func(l *nn.Layer, field string, data, mask []float32, decay bool, shape ...int) *G.Node {
		name := l.Name + "." + field
		t := tensor.New(tensor.WithShape(shape...), tensor.WithBacking(data))
		node := G.NewTensor(gr.g, tensor.Float32, len(shape), G.WithShape(shape...), G.WithName(name), G.WithValue(t))
		gr.params = append(gr.params, &param{name: name, node: node, data: data, mask: mask, decay: decay})
		return node
	}

	// A training batch norm whose only reader is a ReLU or ReLU6 applies it itself (one pass
	// over the activations less each way); the activation's node is the batch norm's.
	readers := map[string]int{}
	for _, l := range mc.Layers {
		for _, in := range l.Inputs {
			readers[in]++
		}
	}
	fused := map[string]bool{} // activations applied by their batch norm
	for i, l := range mc.Layers {
		src := nodes[l.Inputs[0]]
		s := dims[l.Inputs[0]]
		needDX := learned[l.Inputs[0]]
		if fused[l.Name] {
			nodes[l.Name], dims[l.Name], learned[l.Name] = src, shapes[i], learned[l.Inputs[0]]
			continue
		}
		var node *G.Node
		hasParams := false
		switch l.Kind {
		case nn.Conv2D:
			applyMask(l.Weight, l.Mask)
			q := convGeom{n: n, c: s.C, h: s.H, w: s.W, oc: l.Out, k: l.Kernel, s: l.StrideOrOne(),
				p: l.Pad, g: l.GroupsOrOne(), oh: shapes[i].H, ow: shapes[i].W}
			op := newConvOp(l.Name, q, l.HasBias, l.Mask, needDX, ws)
			args := []*G.Node{src, newParam(l, "weight", l.Weight, l.Mask, true, l.Out, s.C/q.g, l.Kernel, l.Kernel)}
			if l.HasBias {
				args = append(args, newParam(l, "bias", l.Bias, nil, false, l.Out))
			}
			node, err = G.ApplyOp(op, args...)
			hasParams = true
		case nn.Linear:
			applyMask(l.Weight, l.Mask)
			op := newLinearOp(l.Name, n, l.In, l.Out, l.HasBias, l.Mask, needDX)
			args := []*G.Node{src, newParam(l, "weight", l.Weight, l.Mask, true, l.Out, l.In)}
			if l.HasBias {
				args = append(args, newParam(l, "bias", l.Bias, nil, false, l.Out))
			}
			node, err = G.ApplyOp(op, args...)
			hasParams = true
		case nn.BatchNorm:
			op := newBNOp(l.Name, n, s.C, s.H, s.W, float64(l.EpsOrDefault()), o.bnMomentum, o.training, l.Mean, l.Var)
			if next := i + 1; o.training && next < len(mc.Layers) && readers[l.Name] == 1 {
				if a := mc.Layers[next]; len(a.Inputs) == 1 && a.Inputs[0] == l.Name && (a.Kind == nn.ReLU || a.Kind == nn.ReLU6) {
					top := kernel.Inf
					if a.Kind == nn.ReLU6 {
						top = 6
					}
					op.fuse(top)
					fused[a.Name] = true
				}
			}
			gr.bns[l] = op
			gamma := newParam(l, "gamma", l.Gamma, nil, false, s.C)
			beta := newParam(l, "beta", l.Beta, nil, false, s.C)
			node, err = G.ApplyOp(op, src, gamma, beta)
			hasParams = true
		case nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Sigmoid, nn.HardSigmoid, nn.HardSwish:
			node, err = G.ApplyOp(newElemOp(l, tensor.Shape{n, s.C, s.H, s.W}), src)
		case nn.MaxPool, nn.AvgPool, nn.GlobalAvgPool:
			op := newPoolOp(l.Name, l.Kind, n, s.C, s.H, s.W, l.Kernel, l.StrideOrOne(), l.Pad)
			node, err = G.ApplyOp(op, src)
		case nn.Flatten:
			op := &flattenOp{opBase: newBase("flatten", l.Name), inShape: tensor.Shape{n, s.C, s.H, s.W}}
			node, err = G.ApplyOp(op, src)
		case nn.Add:
			node = src
			for _, name := range l.Inputs[1:] {
				if node, err = G.Add(node, nodes[name]); err != nil {
					break
				}
			}
		case nn.Concat:
			ins := make(G.Nodes, len(l.Inputs))
			for j, name := range l.Inputs {
				ins[j] = nodes[name]
			}
			node, err = G.Concat(1, ins...)
		default:
			err = fmt.Errorf("unsupported layer kind %q", l.Kind)
		}
		if err != nil {
			return nil, fmt.Errorf("train: layer %q (%s): %w", l.Name, l.Kind, err)
		}
		nodes[l.Name] = node
		dims[l.Name] = shapes[i]
		lrn := hasParams
		for _, name := range l.Inputs {
			lrn = lrn || learned[name]
		}
		learned[l.Name] = lrn
	}
	gr.logits = nodes[mc.Layers[len(mc.Layers)-1].Name]

	if !o.loss {
		gr.vm = G.NewTapeMachine(gr.g)
		return gr, nil
	}
	gr.labels = make([]uint8, n)
	gr.loss = newXentOp(n, out.C, gr.labels)
	cost, err := G.ApplyOp(gr.loss, gr.logits)
	if err != nil {
		return nil, fmt.Errorf("train: loss: %w", err)
	}
	wrt := make(G.Nodes, len(gr.params))
	for i, p := range gr.params {
		wrt[i] = p.node
	}
	if _, err := G.Grad(cost, wrt...); err != nil {
		return nil, fmt.Errorf("train: gradients of %q: %w", m.Name, err)
	}
	gr.vm = G.NewTapeMachine(gr.g, G.BindDualValues(wrt...))
	return gr, nil
}

// applyMask zeroes the masked entries of w.
func applyMask(w, mask []float32) {
	for i, m := range mask {
		if m == 0 {
			w[i] = 0
		}
	}
}

// run copies a batch in and runs the graph once. With a loss, the parameter gradients are
// then in gradOf (and must be cleared with clearGrads before the next run).
func (gr *graph) run(x []float32, labels []uint8) error {
	if len(x) != len(gr.xData) {
		return fmt.Errorf("train: batch has %d values, want %d (%d samples of %v)",
			len(x), len(gr.xData), gr.batch, gr.model.Input)
	}
	copy(gr.xData, x)
	if gr.loss != nil {
		if len(labels) != gr.batch {
			return fmt.Errorf("train: %d labels for a batch of %d", len(labels), gr.batch)
		}
		for i, l := range labels {
			if int(l) >= gr.classes {
				return fmt.Errorf("train: label %d of sample %d is out of range for %d classes", l, i, gr.classes)
			}
		}
		copy(gr.labels, labels)
	}
	defer gr.vm.Reset()
	if err := gr.vm.RunAll(); err != nil {
		return fmt.Errorf("train: %w", err)
	}
	return nil
}

// gradOf returns the gradient accumulated for p by the last run.
func (gr *graph) gradOf(p *param) ([]float32, error) {
	v, err := p.node.Grad()
	if err != nil {
		return nil, fmt.Errorf("train: gradient of %s: %w", p.name, err)
	}
	return f32(v, len(p.data), "gradient of "+p.name)
}

// snapshot returns a new model holding the graph's current weights and running statistics.
func (gr *graph) snapshot() *nn.Model {
	m := gr.model.Clone()
	for i, l := range gr.model.Layers {
		if op, ok := gr.bns[l]; ok {
			m.Layers[i].Mean = append([]float32(nil), op.mean...)
			m.Layers[i].Var = append([]float32(nil), op.variance...)
		}
	}
	return m
}

func (gr *graph) close() {
	if gr.vm != nil {
		gr.vm.Close()
		gr.vm = nil
	}
}
