package train

import (
	"math"
	"math/rand"
	"testing"
)

// TestMaxPool2x2 checks the branch-free 2x2 max pool against the scan-order rule of the
// general loop: the first maximum of each window, the last NaN when there is one, on odd
// plane sizes, ties (ReLU zeros), signed zeros and NaN.
func TestMaxPool2x2(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	nan, negz := float32(math.NaN()), float32(math.Copysign(0, -1))
	for _, hw := range [][2]int{{2, 2}, {5, 7}, {8, 8}, {24, 24}, {6, 40}, {9, 35}, {4, 64}} {
		h, w := hw[0], hw[1]
		oh, ow := h/2, w/2
		x := make([]float32, h*w)
		for i := range x {
			switch r := rng.Intn(10); {
			case r < 3:
				x[i] = 0 // ties, as after a ReLU
			case r == 3:
				x[i] = negz
			case r == 4 && i%5 == 0 && h != 4: // 4 x 64: no NaN, every window on vector registers
				x[i] = nan
			default:
				x[i] = rng.Float32()*2 - 1
			}
		}
		y, a := make([]float32, oh*ow), make([]int32, oh*ow)
		maxPool2x2(x, y, a, w, oh, ow)
		for oy := 0; oy < oh; oy++ {
			for ox := 0; ox < ow; ox++ {
				best, bi := float32(math.Inf(-1)), 2*oy*w+2*ox
				for _, i := range []int{2*oy*w + 2*ox, 2*oy*w + 2*ox + 1, (2*oy+1)*w + 2*ox, (2*oy+1)*w + 2*ox + 1} {
					if v := x[i]; v > best || v != v {
						best, bi = v, i
					}
				}
				o := oy*ow + ox
				same := y[o] == best && math.Signbit(float64(y[o])) == math.Signbit(float64(best)) || y[o] != y[o] && best != best
				if int(a[o]) != bi || !same {
					t.Fatalf("%dx%d window (%d, %d): got %v at %d, want %v at %d", h, w, oy, ox, y[o], a[o], best, bi)
				}
			}
		}
	}
}
