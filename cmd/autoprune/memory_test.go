package main

import (
	"context"
	"math"
	"runtime/debug"
	"testing"
	"time"
)

func TestLimitMemory(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	t.Setenv("GOMEMLIMIT", "")
	debug.SetMemoryLimit(math.MaxInt64)
	limitMemory(ctx, time.Hour)
	if got := debug.SetMemoryLimit(-1); got < softMemory || got == math.MaxInt64 {
		t.Errorf("memory limit %d, want at least %d and set", got, softMemory)
	}

	t.Setenv("GOMEMLIMIT", "3GiB")
	debug.SetMemoryLimit(math.MaxInt64)
	limitMemory(ctx, time.Hour)
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("memory limit %d with GOMEMLIMIT set, want it left alone", got)
	}
}
