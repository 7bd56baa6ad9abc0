package stream

import (
	"sync"
	"time"
)

// wheel times the heartbeats of parked streams: one ticker for all of them
// instead of a timer per stream. A stream is put in the slot of the tick at
// after its beat is due; each tick wakes the streams of one slot.
type wheel struct {
	tick time.Duration
	stop chan struct{}
	done chan struct{}

	mu    sync.Mutex
	slots [][]*stream // a stream is in at most one slot (wheelSlot, wheelPos)
	now   int         // the slot the next tick wakes
}

// wheelTick is the wheel's resolution for a heartbeat interval: beats come at
// most this late.
func wheelTick(heartbeat time.Duration) time.Duration {
	return min(max(heartbeat/8, 10*time.Millisecond), time.Second)
}

func newWheel(heartbeat time.Duration) *wheel {
	tick := wheelTick(heartbeat)
	w := &wheel{
		tick:  tick,
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
		slots: make([][]*stream, int(heartbeat/tick)+2),
	}
	go w.run()
	return w
}

// add puts st in the wheel to be woken after about d; it is a no-op when st is
// in it already.
func (w *wheel) add(st *stream, d time.Duration) {
	ticks := int((d + w.tick - 1) / w.tick)
	ticks = min(max(ticks, 0), len(w.slots)-1)
	w.mu.Lock()
	defer w.mu.Unlock()
	if st.wheelSlot >= 0 {
		return
	}
	// Slot now+k is woken k+1 ticks from now: never before d.
	slot := (w.now + ticks) % len(w.slots)
	st.wheelSlot, st.wheelPos = slot, len(w.slots[slot])
	w.slots[slot] = append(w.slots[slot], st)
}

// remove takes st out of the wheel, if it is in it.
func (w *wheel) remove(st *stream) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if st.wheelSlot < 0 {
		return
	}
	slot := w.slots[st.wheelSlot]
	last := slot[len(slot)-1]
	slot[st.wheelPos], last.wheelPos = last, st.wheelPos
	slot[len(slot)-1] = nil
	w.slots[st.wheelSlot] = slot[:len(slot)-1]
	st.wheelSlot = -1
}

func (w *wheel) run() {
	defer close(w.done)
	t := time.NewTicker(w.tick)
	defer t.Stop()
	var due []*stream
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
		w.mu.Lock()
		slot := w.slots[w.now]
		due = append(due[:0], slot...)
		for _, st := range slot {
			st.wheelSlot = -1
		}
		clear(slot)
		w.slots[w.now] = slot[:0]
		if cap(slot) > 1024 && len(due) < cap(slot)/4 {
			w.slots[w.now] = nil // a burst of streams has gone: let its storage go
		}
		w.now = (w.now + 1) % len(w.slots)
		w.mu.Unlock()
		for _, st := range due {
			st.wheelBeat()
		}
		clear(due)
	}
}

func (w *wheel) close() {
	close(w.stop)
	<-w.done
}
