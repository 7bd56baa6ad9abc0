package sse

import (
	"slices"
	"testing"
)

// TestRing: FIFO order across growth and wrap-around, refusal when full, and
// storage let go by drain beyond keep.
func TestRing(t *testing.T) {
	r := newRing[int](20)
	var want []int
	next := 0
	for round := range 5 {
		for range 7 + round%2 {
			if !r.push(next) {
				t.Fatalf("push %d refused with %d of 20", next, r.len())
			}
			want = append(want, next)
			next++
		}
		for range 5 {
			if got := r.pop(); got != want[0] {
				t.Fatalf("pop = %d, want %d", got, want[0])
			}
			want = want[1:]
		}
	}
	for r.len() < 20 {
		r.push(next)
		want = append(want, next)
		next++
	}
	if r.push(-1) || !r.full() {
		t.Fatal("a full ring took another item")
	}
	for i := range r.len() {
		if r.at(i) != want[i] {
			t.Fatalf("at(%d) = %d, want %d", i, r.at(i), want[i])
		}
	}
	if got := r.drain(nil, 8); !slices.Equal(got, want) || r.len() != 0 || r.items != nil {
		t.Fatalf("drain = %v (len %d, storage %d), want %v and no storage", got, r.len(), len(r.items), want)
	}
}
