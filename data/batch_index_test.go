package data

import "testing"

func TestBatchIndex(t *testing.T) {
	d := &Dataset{Name: "t", N: 10, C: 1, H: 1, W: 2, Classes: 10, Images: make([]float32, 20), Labels: make([]uint8, 10)}
	for i := 0; i < 10; i++ {
		d.Labels[i] = uint8(i)
		d.Images[2*i] = float32(i)
	}
	for _, shuffle := range []bool{false, true} {
		b := NewBatcher(d, 3, shuffle, 7, false)
		seen := 0
		for batch, ok := b.Next(); ok; batch, ok = b.Next() {
			if len(batch.Index) != batch.N {
				t.Fatalf("shuffle=%v: %d indices for %d samples", shuffle, len(batch.Index), batch.N)
			}
			for j, i := range batch.Index {
				if batch.Labels[j] != uint8(i) || batch.Images[2*j] != float32(i) {
					t.Fatalf("shuffle=%v: index %d does not match sample %d", shuffle, i, j)
				}
				seen++
			}
		}
		if seen != 10 {
			t.Errorf("shuffle=%v: saw %d samples", shuffle, seen)
		}
	}
}
