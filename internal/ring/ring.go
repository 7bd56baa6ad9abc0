// Package ring is a bounded FIFO in a circular buffer that holds no storage
// while empty: the hub's recent history, each subscriber's queue and the
// writers' run queue.
package ring

// Ring is a FIFO of at most max items in a circular buffer. Its storage
// starts empty and doubles (from minRing) up to max as needed, so an idle ring
// holds nothing. The hub's recent history and each subscriber's queue are rings
// of frames.
type Ring[T any] struct {
	items   []T
	head, n int
	max     int
}

const minRing = 8

// New returns an empty ring of at most max items.
func New[T any](max int) Ring[T] { return Ring[T]{max: max} }

// Len returns the number of items.
func (r *Ring[T]) Len() int { return r.n }

// Full reports whether the ring holds max items.
func (r *Ring[T]) Full() bool { return r.n == r.max }

// Push appends v, or reports false when the ring holds max items.
func (r *Ring[T]) Push(v T) bool {
	if r.n == r.max {
		return false
	}
	if r.n == len(r.items) {
		items := make([]T, min(r.max, max(minRing, 2*len(r.items))))
		for i := 0; i < r.n; i++ {
			items[i] = r.items[(r.head+i)%len(r.items)]
		}
		r.items, r.head = items, 0
	}
	r.items[(r.head+r.n)%len(r.items)] = v
	r.n++
	return true
}

// Pop removes and returns the oldest item; the ring must not be empty.
func (r *Ring[T]) Pop() T {
	var zero T
	v := r.items[r.head]
	r.items[r.head] = zero // let it go
	r.head = (r.head + 1) % len(r.items)
	r.n--
	return v
}

// At returns the i-th oldest item.
func (r *Ring[T]) At(i int) T { return r.items[(r.head+i)%len(r.items)] }

// Drain moves every item, oldest first, to the end of dst. Storage larger
// than keep items is let go: a burst's buffer is not kept by an idle ring.
func (r *Ring[T]) Drain(dst []T, keep int) []T {
	var zero T
	for i := 0; i < r.n; i++ {
		j := (r.head + i) % len(r.items)
		dst = append(dst, r.items[j])
		r.items[j] = zero
	}
	r.head, r.n = 0, 0
	if len(r.items) > keep {
		r.items = nil
	}
	return dst
}
