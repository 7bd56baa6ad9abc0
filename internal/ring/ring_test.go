package ring

import (
	"slices"
	"testing"
)

// TestRing: FIFO order across growth and wrap-around, refusal when full, and
// storage let go by drain beyond keep.
func TestRing(t *testing.T) {
	r := New[int](20)
	var want []int
	next := 0
	for round := range 5 {
		for range 7 + round%2 {
			if !r.Push(next) {
				t.Fatalf("push %d refused with %d of 20", next, r.Len())
			}
			want = append(want, next)
			next++
		}
		for range 5 {
			if got := r.Pop(); got != want[0] {
				t.Fatalf("pop = %d, want %d", got, want[0])
			}
			want = want[1:]
		}
	}
	for r.Len() < 20 {
		r.Push(next)
		want = append(want, next)
		next++
	}
	if r.Push(-1) || !r.Full() {
		t.Fatal("a full ring took another item")
	}
	for i := range r.Len() {
		if r.At(i) != want[i] {
			t.Fatalf("at(%d) = %d, want %d", i, r.At(i), want[i])
		}
	}
	if got := r.Drain(nil, 8); !slices.Equal(got, want) || r.Len() != 0 || r.items != nil {
		t.Fatalf("drain = %v (len %d, storage %d), want %v and no storage", got, r.Len(), len(r.items), want)
	}
}
