package sse

// ring is a FIFO of at most max items in a circular buffer. Its storage
// starts empty and doubles (from minRing) up to max as needed, so an idle ring
// holds nothing. The hub's recent history and each subscriber's queue are rings
// of frames.
type ring[T any] struct {
	items   []T
	head, n int
	max     int
}

const minRing = 8

func newRing[T any](max int) ring[T] { return ring[T]{max: max} }

func (r *ring[T]) len() int   { return r.n }
func (r *ring[T]) full() bool { return r.n == r.max }

// push appends v, or reports false when the ring holds max items.
func (r *ring[T]) push(v T) bool {
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

// pop removes and returns the oldest item; the ring must not be empty.
func (r *ring[T]) pop() T {
	var zero T
	v := r.items[r.head]
	r.items[r.head] = zero // let it go
	r.head = (r.head + 1) % len(r.items)
	r.n--
	return v
}

// at returns the i-th oldest item.
func (r *ring[T]) at(i int) T { return r.items[(r.head+i)%len(r.items)] }

// drain moves every item, oldest first, to the end of dst. Storage larger
// than keep items is let go: a burst's buffer is not kept by an idle ring.
func (r *ring[T]) drain(dst []T, keep int) []T {
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
