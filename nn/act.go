package nn

import (
	"math"

	"github.com/autoprune/autoprune/internal/kernel"
)

// The element-wise activations, in one place for the inference engine and for training:
// Activate is the forward pass, ActivateGrad the backward pass (ReLU and ReLU6 run on the
// vector kernels of internal/kernel). They follow PyTorch: NaN passes through the forward
// pass; ReLU's and ReLU6's gradients flow where the input is strictly inside (0, top) (the
// hardtanh rule); LeakyReLU's gradient at 0 is its Slope; HardSigmoid's and HardSwish's are
// those of their pieces, 0 where the clamp is active.

// IsActivation tells whether k is an element-wise activation.
func IsActivation(k Kind) bool {
	switch k {
	case ReLU, ReLU6, LeakyReLU, Sigmoid, HardSigmoid, HardSwish:
		return true
	}
	return false
}

// Activate writes the layer's activation of src into dst (of the same length). A kind that
// is not an activation copies src.
func (l *Layer) Activate(dst, src []float32) {
	switch l.Kind {
	case ReLU:
		kernel.Clamp(dst, src, 0, float32(math.Inf(1)))
	case ReLU6:
		kernel.Clamp(dst, src, 0, 6)
	case LeakyReLU:
		a := l.Slope
		for i, x := range src {
			if x > 0 {
				dst[i] = x
			} else {
				dst[i] = a * x
			}
		}
	case Sigmoid:
		for i, x := range src {
			dst[i] = float32(1 / (1 + math.Exp(-float64(x))))
		}
	case HardSigmoid:
		a, b := l.Slope, l.Offset
		for i, x := range src {
			dst[i] = min(max(a*x+b, 0), 1)
		}
	case HardSwish:
		for i, x := range src {
			dst[i] = x * min(max(x/6+0.5, 0), 1)
		}
	default:
		copy(dst, src)
	}
}

// ActivateGrad writes into dx the gradient through the layer's activation, given its
// inputs x and the gradient dy of its outputs (all of the same length).
func (l *Layer) ActivateGrad(dx, x, dy []float32) {
	switch l.Kind {
	case ReLU:
		kernel.ReLUGrad(dx, x, dy, float32(math.Inf(1)))
	case ReLU6:
		kernel.ReLUGrad(dx, x, dy, 6)
	case LeakyReLU:
		a := l.Slope
		for i, v := range x {
			if v > 0 {
				dx[i] = dy[i]
			} else {
				dx[i] = a * dy[i]
			}
		}
	case Sigmoid:
		for i, v := range x {
			s := 1 / (1 + math.Exp(-float64(v)))
			dx[i] = dy[i] * float32(s*(1-s))
		}
	case HardSigmoid:
		a, b := l.Slope, l.Offset
		for i, v := range x {
			if z := a*v + b; z > 0 && z < 1 {
				dx[i] = a * dy[i]
			} else {
				dx[i] = 0
			}
		}
	case HardSwish:
		for i, v := range x {
			switch {
			case v < -3:
				dx[i] = 0
			case v <= 3:
				dx[i] = dy[i] * (v/3 + 0.5)
			default:
				dx[i] = dy[i]
			}
		}
	default:
		copy(dx, dy)
	}
}
