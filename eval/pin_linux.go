package eval

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// PinToCPU locks the calling goroutine to its OS thread and restricts that thread to one
// logical CPU (numbered from 0, as in /proc/cpuinfo), so a measurement is not moved between
// cores and, on a phone with big and little cores, runs on the kind of core asked for. Call
// the returned release function, on the same goroutine, to restore the thread's previous
// CPU set and unlock it. Only the calling thread is pinned: use it with one engine thread.
func PinToCPU(cpu int) (release func(), err error) {
	if cpu < 0 || cpu >= runtime.NumCPU() {
		return nil, fmt.Errorf("pin to CPU %d: this machine has CPUs 0..%d", cpu, runtime.NumCPU()-1)
	}
	runtime.LockOSThread()
	var old, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("pin to CPU %d: %w", cpu, err)
	}
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("pin to CPU %d: %w", cpu, err)
	}
	return func() {
		unix.SchedSetaffinity(0, &old)
		runtime.UnlockOSThread()
	}, nil
}
