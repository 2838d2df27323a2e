package main

import (
	"context"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// softMemory is the heap size the command aims to stay under while its live heap is
// small: a search on Fashion-MNIST holds about 600 MB live, and Go's default collector
// (GOGC=100) would let the heap grow to twice that between collections.
const softMemory = 900 << 20

// limitMemory keeps the heap near softMemory, or a quarter above the live heap when that is
// larger (a big model then collects every time its garbage reaches a quarter of what it
// keeps, instead of all the time: a training step allocates little, trials and rounds
// most), checking every interval until ctx ends. GOMEMLIMIT in the environment overrides
// it.
func limitMemory(ctx context.Context, interval time.Duration) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	set := func() {
		metrics.Read(sample)
		limit := int64(softMemory)
		if sample[0].Value.Kind() == metrics.KindUint64 {
			limit = max(limit, int64(sample[0].Value.Uint64())*5/4)
		}
		debug.SetMemoryLimit(limit)
	}
	set()
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				set()
			}
		}
	}()
}
