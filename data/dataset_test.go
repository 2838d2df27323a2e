package data

import (
	"math"
	"slices"
	"strings"
	"testing"
)

// idDataset returns a dataset of n 1x1x2 images whose pixels both hold the
// sample index, with label index%10.
func idDataset(n int) *Dataset {
	d := &Dataset{Name: "ids", N: n, C: 1, H: 1, W: 2, Classes: 10,
		Images: make([]float32, 2*n), Labels: make([]uint8, n)}
	for i := range n {
		d.Images[2*i] = float32(i)
		d.Images[2*i+1] = float32(i)
		d.Labels[i] = uint8(i % 10)
	}
	return d
}

// ids returns the sample index stored in each image of d, checking that the
// label agrees with it.
func ids(t *testing.T, images []float32, labels []uint8) []int {
	t.Helper()
	out := make([]int, len(labels))
	for j := range labels {
		id := int(images[2*j])
		if images[2*j+1] != images[2*j] || labels[j] != uint8(id%10) {
			t.Fatalf("sample %d: pixels %v and label %d disagree", j, images[2*j:2*j+2], labels[j])
		}
		out[j] = id
	}
	return out
}

func TestSampleSubsetHead(t *testing.T) {
	d := idDataset(10)
	s := d.Sample(3)
	if !slices.Equal(s, []float32{3, 3}) || cap(s) != 2 {
		t.Errorf("Sample(3) = %v (cap %d)", s, cap(s))
	}
	s[0] = 42 // Sample is a view.
	if d.Images[6] != 42 {
		t.Errorf("Sample did not return a view")
	}
	d.Images[6] = 3

	sub := d.Subset([]int{7, 2, 7})
	if sub.N != 3 || !slices.Equal(ids(t, sub.Images, sub.Labels), []int{7, 2, 7}) {
		t.Errorf("Subset = %+v", *sub)
	}
	sub.Images[0] = -1 // Subset copies.
	if d.Images[14] != 7 {
		t.Errorf("Subset shares memory with the original")
	}

	for _, tt := range []struct{ n, want int }{{-1, 0}, {0, 0}, {4, 4}, {10, 10}, {11, 10}} {
		h := d.Head(tt.n)
		if h.N != tt.want || len(h.Labels) != tt.want || len(h.Images) != 2*tt.want {
			t.Errorf("Head(%d): N=%d, %d labels, %d pixels; want N=%d", tt.n, h.N, len(h.Labels), len(h.Images), tt.want)
		}
		if tt.want > 0 && !slices.Equal(ids(t, h.Images, h.Labels), []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}[:tt.want]) {
			t.Errorf("Head(%d) has the wrong samples", tt.n)
		}
	}
}

func TestSamplePanicsOutOfRange(t *testing.T) {
	defer func() {
		if r := recover(); r == nil || !strings.Contains(r.(string), "out of range") {
			t.Errorf("recovered %v, want an out of range panic", r)
		}
	}()
	idDataset(3).Sample(3)
}

func TestSplit(t *testing.T) {
	tests := []struct {
		n       int
		frac    float64
		wantVal int
	}{
		{100, 0.1, 10},
		{103, 0.25, 25},
		{10, 0, 0},
		{7, 0.99, 6},
		{1, 0.5, 0},
		{0, 0.5, 0},
	}
	for _, tt := range tests {
		d := idDataset(tt.n)
		train, val, err := d.Split(tt.frac, 1)
		if err != nil {
			t.Fatalf("Split(%v) of %d: %v", tt.frac, tt.n, err)
		}
		if val.N != tt.wantVal || train.N != tt.n-tt.wantVal {
			t.Errorf("Split(%v) of %d: train %d, val %d; want val %d", tt.frac, tt.n, train.N, val.N, tt.wantVal)
		}
		if train.Name != "ids:train" || val.Name != "ids:val" {
			t.Errorf("names %q, %q", train.Name, val.Name)
		}
		all := append(ids(t, val.Images, val.Labels), ids(t, train.Images, train.Labels)...)
		slices.Sort(all)
		for i, id := range all {
			if id != i {
				t.Fatalf("Split(%v) of %d: parts are not disjoint and complete: %v", tt.frac, tt.n, all)
			}
		}
	}
}

func TestSplitDeterminism(t *testing.T) {
	d := idDataset(1000)
	order := func(seed int64) []int {
		train, val, err := d.Split(0.2, seed)
		if err != nil {
			t.Fatal(err)
		}
		return append(ids(t, val.Images, val.Labels), ids(t, train.Images, train.Labels)...)
	}
	a, b, c := order(7), order(7), order(8)
	if !slices.Equal(a, b) {
		t.Error("same seed gave different splits")
	}
	if slices.Equal(a, c) {
		t.Error("different seeds gave the same split")
	}
	if slices.IsSorted(a) {
		t.Error("split is not shuffled")
	}
}

func TestSplitBadFraction(t *testing.T) {
	for _, f := range []float64{-0.1, 1, 1.5, math.NaN(), math.Inf(1)} {
		if _, _, err := idDataset(10).Split(f, 0); err == nil || !strings.Contains(err.Error(), "not in [0,1)") {
			t.Errorf("Split(%v): err = %v", f, err)
		}
	}
}

// TestPermutationStable pins the permutation for a few seeds so that splits
// and batch orders stay reproducible across changes and Go releases.
func TestPermutationStable(t *testing.T) {
	tests := []struct {
		n    int
		seed int64
		want []int
	}{
		{10, 42, []int{8, 3, 6, 5, 4, 0, 9, 2, 1, 7}},
		{10, 0, []int{4, 9, 2, 5, 1, 7, 6, 0, 3, 8}},
		{5, -1, []int{1, 2, 0, 3, 4}},
	}
	for _, tt := range tests {
		if got := permutation(tt.n, tt.seed); !slices.Equal(got, tt.want) {
			t.Errorf("permutation(%d, %d) = %v, want %v", tt.n, tt.seed, got, tt.want)
		}
	}
}

// epoch collects the sample ids and batch sizes of one pass of b.
func epoch(t *testing.T, b *Batcher) (order, sizes []int) {
	t.Helper()
	for {
		batch, ok := b.Next()
		if !ok {
			break
		}
		if len(batch.Labels) != batch.N || len(batch.Images) != 2*batch.N {
			t.Fatalf("batch N=%d with %d labels and %d pixels", batch.N, len(batch.Labels), len(batch.Images))
		}
		order = append(order, ids(t, batch.Images, batch.Labels)...)
		sizes = append(sizes, batch.N)
	}
	if _, ok := b.Next(); ok {
		t.Fatal("Next returned a batch after the end of the epoch")
	}
	return order, sizes
}

func TestBatcher(t *testing.T) {
	tests := []struct {
		n, bs     int
		dropLast  bool
		wantLen   int
		wantSizes []int
	}{
		{10, 3, false, 4, []int{3, 3, 3, 1}},
		{10, 3, true, 3, []int{3, 3, 3}},
		{9, 3, false, 3, []int{3, 3, 3}},
		{9, 3, true, 3, []int{3, 3, 3}},
		{2, 5, false, 1, []int{2}},
		{2, 5, true, 0, nil},
		{0, 4, false, 0, nil},
		{7, 1, true, 7, []int{1, 1, 1, 1, 1, 1, 1}},
	}
	for _, tt := range tests {
		for _, shuffle := range []bool{false, true} {
			d := idDataset(tt.n)
			b := NewBatcher(d, tt.bs, shuffle, 3, tt.dropLast)
			if b.Len() != tt.wantLen {
				t.Errorf("n=%d bs=%d drop=%v: Len = %d, want %d", tt.n, tt.bs, tt.dropLast, b.Len(), tt.wantLen)
			}
			for e := range 2 {
				b.Reset(int64(e))
				order, sizes := epoch(t, b)
				if !slices.Equal(sizes, tt.wantSizes) {
					t.Errorf("n=%d bs=%d drop=%v shuffle=%v: batch sizes %v, want %v", tt.n, tt.bs, tt.dropLast, shuffle, sizes, tt.wantSizes)
				}
				if !shuffle && !slices.IsSorted(order) {
					t.Errorf("unshuffled order %v is not sequential", order)
				}
				seen := make(map[int]bool)
				for _, id := range order {
					if seen[id] {
						t.Fatalf("sample %d seen twice in one epoch", id)
					}
					seen[id] = true
				}
				if !tt.dropLast && len(seen) != tt.n {
					t.Errorf("n=%d bs=%d shuffle=%v: epoch covered %d samples", tt.n, tt.bs, shuffle, len(seen))
				}
			}
		}
	}
}

func TestBatcherDeterminism(t *testing.T) {
	d := idDataset(257)
	run := func(seed int64) []int {
		o, _ := epoch(t, NewBatcher(d, 16, true, seed, false))
		return o
	}
	a, b, c := run(11), run(11), run(12)
	if !slices.Equal(a, b) {
		t.Error("same seed gave different orders")
	}
	if slices.Equal(a, c) {
		t.Error("different seeds gave the same order")
	}
	bt := NewBatcher(d, 16, true, 12, false)
	epoch(t, bt)
	bt.Reset(11)
	if o, _ := epoch(t, bt); !slices.Equal(o, a) {
		t.Error("Reset(seed) differs from a new Batcher with that seed")
	}
	if !slices.Equal(a, permutation(d.N, 11)) {
		t.Error("shuffled order is not permutation(N, seed)")
	}
}

func TestNewBatcherPanics(t *testing.T) {
	for _, tt := range []struct {
		name string
		d    *Dataset
		bs   int
	}{{"nil dataset", nil, 1}, {"zero batch", idDataset(1), 0}, {"negative batch", idDataset(1), -2}} {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("NewBatcher did not panic")
				}
			}()
			NewBatcher(tt.d, tt.bs, false, 0, false)
		})
	}
}
