// Package zoo builds the reference networks of autoprune, each for any small image input
// (28x28x1 by default) and any number of classes, with weights initialised from a seed.
package zoo

import (
	"fmt"
	"strings"

	"github.com/autoprune/autoprune/nn"
)

// Names lists the models the zoo can build.
var Names = []string{"mlp", "lenet5", "vgg-small", "resnet-small", "mobilenet-small"}

// Describe gives a one-line description of each zoo model.
var Describe = map[string]string{
	"mlp":             "LeNet-300-100: 784-300-100-10 fully connected, ReLU",
	"lenet5":          "LeNet-5: conv 6@5x5, pool, conv 16@5x5, pool, FC 120-84-10",
	"vgg-small":       "4 conv3x3-BN-ReLU (32-32-64-64), two max-pools, FC 128",
	"resnet-small":    "stem + 3 residual stages (16, 32, 64 channels) with BN, global pool",
	"mobilenet-small": "depthwise-separable blocks with BN and ReLU6, global pool",
}

// Build returns the named model for inputs of the given shape and the given number of
// classes, with weights initialised from seed.
func Build(name string, input nn.Shape, classes int, seed int64) (*nn.Model, error) {
	if classes < 2 {
		return nil, fmt.Errorf("zoo: %d classes: need at least 2", classes)
	}
	b := &builder{m: &nn.Model{Name: name, Input: input}, last: nn.InputName, c: input.C}
	switch name {
	case "mlp":
		b.flatten("flatten")
		b.linear("fc1", 300, true)
		b.linear("fc2", 100, true)
		b.linear("fc3", classes, false)
	case "lenet5":
		b.conv("conv1", 6, 5, 1, 2, 1, true)
		b.act("relu1", nn.ReLU)
		b.pool("pool1", nn.MaxPool, 2, 2)
		b.conv("conv2", 16, 5, 1, 0, 1, true)
		b.act("relu2", nn.ReLU)
		b.pool("pool2", nn.MaxPool, 2, 2)
		b.flatten("flatten")
		b.linear("fc1", 120, true)
		b.linear("fc2", 84, true)
		b.linear("fc3", classes, false)
	case "vgg-small":
		b.convBN("conv1", 32, 3, 1, nn.ReLU)
		b.convBN("conv2", 32, 3, 1, nn.ReLU)
		b.pool("pool1", nn.MaxPool, 2, 2)
		b.convBN("conv3", 64, 3, 1, nn.ReLU)
		b.convBN("conv4", 64, 3, 1, nn.ReLU)
		b.pool("pool2", nn.MaxPool, 2, 2)
		b.flatten("flatten")
		b.linear("fc1", 128, true)
		b.linear("fc2", classes, false)
	case "resnet-small":
		b.convBN("stem", 16, 3, 1, nn.ReLU)
		b.residual("layer1", 16, 1)
		b.residual("layer2", 32, 2)
		b.residual("layer3", 64, 2)
		b.add(&nn.Layer{Name: "pool", Kind: nn.GlobalAvgPool})
		b.linear("fc", classes, false)
	case "mobilenet-small":
		b.convBN("stem", 16, 3, 2, nn.ReLU6)
		b.separable("block1", 32, 1)
		b.separable("block2", 64, 2)
		b.separable("block3", 64, 1)
		b.separable("block4", 128, 2)
		b.add(&nn.Layer{Name: "pool", Kind: nn.GlobalAvgPool})
		b.linear("fc", classes, false)
	default:
		return nil, fmt.Errorf("zoo: unknown model %q (known: %s)", name, strings.Join(Names, ", "))
	}
	if err := b.m.Init(seed); err != nil {
		return nil, fmt.Errorf("zoo: %s for input %v: %w", name, input, err)
	}
	return b.m, nil
}

// builder appends layers one after another, tracking the current output and its channels.
type builder struct {
	m    *nn.Model
	last string
	c    int
}

func (b *builder) add(l *nn.Layer) {
	if l.Inputs == nil {
		l.Inputs = []string{b.last}
	}
	b.m.Layers = append(b.m.Layers, l)
	b.last = l.Name
}

func (b *builder) conv(name string, out, k, stride, pad, groups int, bias bool) {
	b.add(&nn.Layer{Name: name, Kind: nn.Conv2D, In: b.c, Out: out, Kernel: k, Stride: stride,
		Pad: pad, Groups: groups, HasBias: bias})
	b.c = out
}

func (b *builder) bn(name string) { b.add(&nn.Layer{Name: name, Kind: nn.BatchNorm}) }

func (b *builder) act(name string, k nn.Kind) { b.add(&nn.Layer{Name: name, Kind: k}) }

func (b *builder) pool(name string, k nn.Kind, size, stride int) {
	b.add(&nn.Layer{Name: name, Kind: k, Kernel: size, Stride: stride})
}

func (b *builder) flatten(name string) {
	b.add(&nn.Layer{Name: name, Kind: nn.Flatten})
	shapes, err := b.m.Shapes()
	if err == nil {
		b.c = shapes[len(shapes)-1].C
	}
}

// linear adds a fully connected layer, followed by a ReLU when relu is set.
func (b *builder) linear(name string, out int, relu bool) {
	b.add(&nn.Layer{Name: name, Kind: nn.Linear, In: b.c, Out: out, HasBias: true})
	b.c = out
	if relu {
		b.act(name+".relu", nn.ReLU)
	}
}

// convBN adds conv (no bias, same padding) -> batch norm -> activation.
func (b *builder) convBN(name string, out, k, stride int, act nn.Kind) {
	b.conv(name, out, k, stride, k/2, 1, false)
	b.bn(name + ".bn")
	b.act(name+"."+string(act), act)
}

// residual adds a basic block: conv-BN-ReLU, conv-BN, plus a shortcut (identity, or a
// strided 1x1 conv-BN when the shape changes), then ReLU.
func (b *builder) residual(name string, out, stride int) {
	in, inC := b.last, b.c
	b.conv(name+".conv1", out, 3, stride, 1, 1, false)
	b.bn(name + ".bn1")
	b.act(name+".relu1", nn.ReLU)
	b.conv(name+".conv2", out, 3, 1, 1, 1, false)
	b.bn(name + ".bn2")
	main := b.last
	short := in
	if stride != 1 || inC != out {
		b.last, b.c = in, inC
		b.conv(name+".down", out, 1, stride, 0, 1, false)
		b.bn(name + ".down.bn")
		short = b.last
	}
	b.add(&nn.Layer{Name: name + ".add", Kind: nn.Add, Inputs: []string{main, short}})
	b.c = out
	b.act(name+".relu2", nn.ReLU)
}

// separable adds a depthwise 3x3 conv-BN-ReLU6 and a pointwise 1x1 conv-BN-ReLU6.
func (b *builder) separable(name string, out, stride int) {
	b.conv(name+".dw", b.c, 3, stride, 1, b.c, false)
	b.bn(name + ".dw.bn")
	b.act(name+".dw.relu6", nn.ReLU6)
	b.conv(name+".pw", out, 1, 1, 0, 1, false)
	b.bn(name + ".pw.bn")
	b.act(name+".pw.relu6", nn.ReLU6)
}
