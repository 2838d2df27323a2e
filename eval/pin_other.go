//go:build !linux

package eval

import (
	"errors"
	"fmt"
)

// PinToCPU restricts the calling thread to one CPU; it is supported on Linux and Android
// only, and returns an error elsewhere.
func PinToCPU(cpu int) (release func(), err error) {
	return nil, fmt.Errorf("pin to CPU %d: %w", cpu, errors.ErrUnsupported)
}
