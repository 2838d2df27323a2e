package train

import (
	"fmt"
	"math"
	"math/rand"

	"github.com/autoprune/autoprune/nn"
)

// A float64 reference implementation of the forward pass and loss, written directly from
// the PyTorch definitions, used to check the graph's outputs and (by central finite
// differences) its gradients.

// refParams holds a model's parameters in float64, keyed "<layer>.<param>" (weight, bias,
// gamma, beta, mean, var, mask).
type refParams map[string][]float64

func toRef(m *nn.Model) refParams {
	p := refParams{}
	put := func(l *nn.Layer, name string, v []float32) {
		if v == nil {
			return
		}
		d := make([]float64, len(v))
		for i, x := range v {
			d[i] = float64(x)
		}
		p[l.Name+"."+name] = d
	}
	for _, l := range m.Layers {
		put(l, "weight", l.Weight)
		put(l, "bias", l.Bias)
		put(l, "mask", l.Mask)
		put(l, "gamma", l.Gamma)
		put(l, "beta", l.Beta)
		put(l, "mean", l.Mean)
		put(l, "var", l.Var)
	}
	return p
}

type refTensor struct {
	n, c, h, w int
	d          []float64
}

func (t *refTensor) at(n, c, y, x int) float64 { return t.d[((n*t.c+c)*t.h+y)*t.w+x] }

// refForward returns the logits (n x classes) and, with labels, the mean cross-entropy.
func refForward(m *nn.Model, p refParams, x []float32, n int, labels []uint8, training bool) ([]float64, float64) {
	in := m.Input
	t0 := &refTensor{n, in.C, in.H, in.W, make([]float64, len(x))}
	for i, v := range x {
		t0.d[i] = float64(v)
	}
	acts := map[string]*refTensor{nn.InputName: t0}
	var last *refTensor
	for _, l := range m.Layers {
		a := acts[l.Inputs[0]]
		var o *refTensor
		switch l.Kind {
		case nn.Conv2D:
			w := append([]float64(nil), p[l.Name+".weight"]...)
			if mk := p[l.Name+".mask"]; mk != nil {
				for i := range w {
					w[i] *= mk[i]
				}
			}
			g, k, s, pad := l.GroupsOrOne(), l.Kernel, l.StrideOrOne(), l.Pad
			icg, ocg := a.c/g, l.Out/g
			oh, ow := (a.h+2*pad-k)/s+1, (a.w+2*pad-k)/s+1
			o = &refTensor{n, l.Out, oh, ow, make([]float64, n*l.Out*oh*ow)}
			for b := 0; b < n; b++ {
				for oc := 0; oc < l.Out; oc++ {
					grp := oc / ocg
					for oy := 0; oy < oh; oy++ {
						for ox := 0; ox < ow; ox++ {
							var sum float64
							if l.HasBias {
								sum = p[l.Name+".bias"][oc]
							}
							for ic := 0; ic < icg; ic++ {
								for ky := 0; ky < k; ky++ {
									for kx := 0; kx < k; kx++ {
										iy, ix := oy*s-pad+ky, ox*s-pad+kx
										if iy < 0 || iy >= a.h || ix < 0 || ix >= a.w {
											continue
										}
										sum += w[((oc*icg+ic)*k+ky)*k+kx] * a.at(b, grp*icg+ic, iy, ix)
									}
								}
							}
							o.d[((b*l.Out+oc)*oh+oy)*ow+ox] = sum
						}
					}
				}
			}
		case nn.Linear:
			w := append([]float64(nil), p[l.Name+".weight"]...)
			if mk := p[l.Name+".mask"]; mk != nil {
				for i := range w {
					w[i] *= mk[i]
				}
			}
			o = &refTensor{n, l.Out, 1, 1, make([]float64, n*l.Out)}
			for b := 0; b < n; b++ {
				for j := 0; j < l.Out; j++ {
					var sum float64
					if l.HasBias {
						sum = p[l.Name+".bias"][j]
					}
					for i := 0; i < l.In; i++ {
						sum += w[j*l.In+i] * a.d[b*l.In+i]
					}
					o.d[b*l.Out+j] = sum
				}
			}
		case nn.BatchNorm:
			o = &refTensor{a.n, a.c, a.h, a.w, make([]float64, len(a.d))}
			eps := float64(l.EpsOrDefault())
			hw := a.h * a.w
			for c := 0; c < a.c; c++ {
				mean, vr := p[l.Name+".mean"][c], p[l.Name+".var"][c]
				if training {
					var s, ss float64
					for b := 0; b < n; b++ {
						for i := 0; i < hw; i++ {
							s += a.d[(b*a.c+c)*hw+i]
						}
					}
					mean = s / float64(n*hw)
					for b := 0; b < n; b++ {
						for i := 0; i < hw; i++ {
							d := a.d[(b*a.c+c)*hw+i] - mean
							ss += d * d
						}
					}
					vr = ss / float64(n*hw)
				}
				g, be := p[l.Name+".gamma"][c], p[l.Name+".beta"][c]
				for b := 0; b < n; b++ {
					for i := 0; i < hw; i++ {
						j := (b*a.c+c)*hw + i
						o.d[j] = g*(a.d[j]-mean)/math.Sqrt(vr+eps) + be
					}
				}
			}
		case nn.ReLU, nn.ReLU6:
			o = &refTensor{a.n, a.c, a.h, a.w, make([]float64, len(a.d))}
			for i, v := range a.d {
				v = math.Max(v, 0)
				if l.Kind == nn.ReLU6 {
					v = math.Min(v, 6)
				}
				o.d[i] = v
			}
		case nn.Concat:
			c := 0
			for _, name := range l.Inputs {
				c += acts[name].c
			}
			o = &refTensor{a.n, c, a.h, a.w, make([]float64, a.n*c*a.h*a.w)}
			hw := a.h * a.w
			for b := 0; b < a.n; b++ {
				off := b * c * hw
				for _, name := range l.Inputs {
					x := acts[name]
					off += copy(o.d[off:], x.d[b*x.c*hw:(b+1)*x.c*hw])
				}
			}
		case nn.LeakyReLU, nn.Sigmoid, nn.HardSigmoid, nn.HardSwish:
			o = &refTensor{a.n, a.c, a.h, a.w, make([]float64, len(a.d))}
			hsig := func(v, slope, offset float64) float64 { return math.Min(math.Max(slope*v+offset, 0), 1) }
			for i, v := range a.d {
				switch l.Kind {
				case nn.LeakyReLU:
					if v < 0 {
						v *= float64(l.Slope)
					}
				case nn.Sigmoid:
					v = 1 / (1 + math.Exp(-v))
				case nn.HardSigmoid:
					v = hsig(v, float64(l.Slope), float64(l.Offset))
				case nn.HardSwish:
					v *= hsig(v, 1.0/6, 0.5)
				}
				o.d[i] = v
			}
		case nn.MaxPool, nn.AvgPool:
			k, s, pad := l.Kernel, l.StrideOrOne(), l.Pad
			oh, ow := (a.h+2*pad-k)/s+1, (a.w+2*pad-k)/s+1
			o = &refTensor{a.n, a.c, oh, ow, make([]float64, a.n*a.c*oh*ow)}
			for b := 0; b < a.n; b++ {
				for c := 0; c < a.c; c++ {
					for oy := 0; oy < oh; oy++ {
						for ox := 0; ox < ow; ox++ {
							best, sum := math.Inf(-1), 0.0
							for ky := 0; ky < k; ky++ {
								for kx := 0; kx < k; kx++ {
									iy, ix := oy*s-pad+ky, ox*s-pad+kx
									if iy < 0 || iy >= a.h || ix < 0 || ix >= a.w {
										continue
									}
									v := a.at(b, c, iy, ix)
									best = math.Max(best, v)
									sum += v
								}
							}
							v := best
							if l.Kind == nn.AvgPool {
								v = sum / float64(k*k)
							}
							o.d[((b*a.c+c)*oh+oy)*ow+ox] = v
						}
					}
				}
			}
		case nn.GlobalAvgPool:
			o = &refTensor{a.n, a.c, 1, 1, make([]float64, a.n*a.c)}
			hw := a.h * a.w
			for i := range o.d {
				var s float64
				for _, v := range a.d[i*hw : (i+1)*hw] {
					s += v
				}
				o.d[i] = s / float64(hw)
			}
		case nn.Flatten:
			o = &refTensor{a.n, a.c * a.h * a.w, 1, 1, a.d}
		case nn.Add:
			o = &refTensor{a.n, a.c, a.h, a.w, append([]float64(nil), a.d...)}
			for _, name := range l.Inputs[1:] {
				for i, v := range acts[name].d {
					o.d[i] += v
				}
			}
		default:
			panic(fmt.Sprintf("reference: kind %s", l.Kind))
		}
		acts[l.Name] = o
		last = o
	}
	if labels == nil {
		return last.d, 0
	}
	k := last.c
	var loss float64
	for b := 0; b < n; b++ {
		row := last.d[b*k : (b+1)*k]
		mx := math.Inf(-1)
		for _, v := range row {
			mx = math.Max(mx, v)
		}
		var s float64
		for _, v := range row {
			s += math.Exp(v - mx)
		}
		loss += mx + math.Log(s) - row[labels[b]]
	}
	return last.d, loss / float64(n)
}

// randomize gives m random weights, biases and non-trivial batch-norm parameters and
// statistics.
func randomize(m *nn.Model, seed int64) {
	if err := m.Init(seed); err != nil {
		panic(err)
	}
	rng := rand.New(rand.NewSource(seed + 1))
	u := func(lo, hi float64) float32 { return float32(lo + (hi-lo)*rng.Float64()) }
	for _, l := range m.Layers {
		for i := range l.Bias {
			l.Bias[i] = u(-0.3, 0.3)
		}
		for i := range l.Gamma {
			l.Gamma[i] = u(0.5, 1.5)
			l.Beta[i] = u(-0.5, 0.5)
			l.Mean[i] = u(-0.5, 0.5)
			l.Var[i] = u(0.5, 2)
		}
	}
}

// randomInput returns n random samples for m and random labels for k classes.
func randomInput(m *nn.Model, n, k int, seed int64) ([]float32, []uint8) {
	rng := rand.New(rand.NewSource(seed))
	x := make([]float32, n*m.Input.Size())
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	labels := make([]uint8, n)
	for i := range labels {
		labels[i] = uint8(rng.Intn(k))
	}
	return x, labels
}
