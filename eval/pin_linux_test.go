package eval

import (
	"fmt"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// threadCPUs returns the logical CPUs the calling thread may run on.
func threadCPUs(t *testing.T) string {
	t.Helper()
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	var cpus []int
	for i := 0; len(cpus) < set.Count(); i++ {
		if set.IsSet(i) {
			cpus = append(cpus, i)
		}
	}
	return fmt.Sprint(cpus)
}

func TestPinToCPU(t *testing.T) {
	runtime.LockOSThread() // so the thread checked before and after is the pinned one
	defer runtime.UnlockOSThread()
	before := threadCPUs(t)
	cpu := runtime.NumCPU() - 1
	release, err := PinToCPU(cpu)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := threadCPUs(t), fmt.Sprint([]int{cpu}); got != want {
		t.Errorf("pinned thread may run on CPUs %s, want %s", got, want)
	}
	release()
	if got := threadCPUs(t); got != before {
		t.Errorf("after release the thread may run on CPUs %s, want %s as before", got, before)
	}
	for _, bad := range []int{-1, runtime.NumCPU()} {
		if _, err := PinToCPU(bad); err == nil {
			t.Errorf("PinToCPU(%d) succeeded, want an error", bad)
		}
	}
}
