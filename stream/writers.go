package stream

import (
	"math"
	"sync"
	"time"

	"pgsse/internal/ring"
	"pgsse/sse"
)

// writers write the live frames of parked streams: a stream taken over from
// net/http that has nothing to wait for (no database read, no client slower
// than its socket buffer) has no goroutine of its own. It is parked; its hub
// queue, its heartbeat (the wheel), its token's expiry and its peer's close
// (the close watch) wake it, and one of a few writer goroutines, as many as
// the cores, writes what is due in one writev without ever waiting on a
// socket. Whatever would wait goes back to a goroutine of the stream's own
// (resume), which runs the same code as a stream on net/http's path.
type writers struct {
	heartbeat time.Duration
	wheel     *wheel
	watch     *closeWatch

	mu     sync.Mutex
	cond   sync.Cond
	ready  ring.Ring[*stream] // streams to serve; each at most once, so bounded by the open streams
	closed bool
	wg     sync.WaitGroup
}

func newWriters(n int, heartbeat time.Duration) (*writers, error) {
	watch, err := newCloseWatch()
	if err != nil {
		return nil, err
	}
	p := &writers{heartbeat: heartbeat, wheel: newWheel(heartbeat), watch: watch, ready: ring.New[*stream](math.MaxInt)}
	p.cond.L = &p.mu
	for range n {
		p.wg.Add(1)
		go p.run()
	}
	return p, nil
}

// schedule hands st to a writer.
func (p *writers) schedule(st *stream) {
	p.mu.Lock()
	p.ready.Push(st)
	p.mu.Unlock()
	p.cond.Signal()
}

func (p *writers) run() {
	defer p.wg.Done()
	w := &writer{vw: newVectorWriter()}
	for {
		p.mu.Lock()
		for p.ready.Len() == 0 && !p.closed {
			p.cond.Wait()
		}
		if p.ready.Len() == 0 {
			p.mu.Unlock()
			return
		}
		st := p.ready.Pop()
		p.mu.Unlock()
		w.serve(st)
	}
}

// close stops the writers once the streams scheduled are served, then the
// wheel and the close watch.
func (p *writers) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.cond.Broadcast()
	p.wg.Wait()
	p.wheel.close()
	p.watch.close()
}

// writer is one writer goroutine's reusable storage: serving a stream
// allocates nothing.
type writer struct {
	vw     *vectorWriter
	frames []*sse.Frame
	bufs   [][]byte
}

// serve serves st until nothing wakes it meanwhile, or it is resumed.
func (w *writer) serve(st *stream) {
	for {
		st.mu.Lock()
		st.rerun = false
		st.mu.Unlock()
		if !w.write(st) {
			return // resumed: st is its goroutine's now
		}
		st.mu.Lock()
		again := st.rerun
		if !again {
			st.scheduled = false
		}
		st.mu.Unlock()
		if !again {
			return
		}
	}
}

// write writes what st has due without waiting, and reports whether st stays
// parked; else it has been resumed, with what the socket did not take.
func (w *writer) write(st *stream) bool {
	if st.ending() {
		st.resume(nil, nil, true)
		return false
	}
	select {
	case <-st.sub.Ready(): // taken below
	default:
	}
	w.frames = st.sub.Take(w.frames[:0])
	for _, f := range w.frames {
		if st.accept(f) {
			w.bufs = append(w.bufs, f.Wire)
		}
	}
	clear(w.frames)
	w.frames = w.frames[:0]
	if b := st.beatDue(len(w.bufs) > 0); b != nil {
		w.bufs = append(w.bufs, b)
	}
	defer func() {
		clear(w.bufs) // let the frames go
		w.bufs = w.bufs[:0]
	}()
	if len(w.bufs) == 0 {
		return true
	}
	left, err := w.vw.write(st.conn.raw, w.bufs)
	if err == nil && left == nil {
		st.lastWrite = time.Now()
		return true
	}
	st.resume(left, err, false)
	return false
}
