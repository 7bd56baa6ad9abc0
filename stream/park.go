package stream

import (
	"errors"
	"time"
)

// A stream taken over from net/http is run, at any moment, by exactly one
// owner: its own goroutine, or, while parked, the writers (see writers). st.mu
// guards the hand-over; what it hands over (the stream's state) needs no lock.

// errParked unwinds a stream's goroutine once the stream is parked: the
// stream lives on, run by the writers.
var errParked = errors.New("stream parked")

// parkable says whether the live loop may hand the stream to the writers.
func (st *stream) parkable() bool {
	return st.conn != nil && st.conn.raw != nil && !st.noPark
}

// park hands the stream to the writers. The caller's goroutine must return
// errParked at once, touching the stream no more.
func (st *stream) park() error {
	st.heartbeat.Stop()
	st.heartbeat = nil
	// Writers never wait on the socket, so no deadline while parked.
	st.deadline = time.Time{}
	_ = st.sink.setWriteDeadline(st.deadline)
	st.buf, st.frames = nil, nil // writers use their own; a parked stream holds no buffer
	p := st.h.pool
	p.wheel.add(st, st.h.cfg.Heartbeat-time.Since(st.lastWrite))
	st.mu.Lock()
	st.parked, st.scheduled = true, true
	st.mu.Unlock()
	p.schedule(st) // for whatever was queued since the loop last looked
	return errParked
}

// wake has a writer serve the stream if it is parked; it is called by the hub
// (a frame queued, the subscriber ended), the wheel, the close watch and the
// token's expiry, and never waits.
func (st *stream) wake() {
	st.mu.Lock()
	switch {
	case !st.parked:
	case st.scheduled:
		st.rerun = true // being served: serve it again after
	default:
		st.scheduled = true
		st.mu.Unlock()
		st.h.pool.schedule(st)
		return
	}
	st.mu.Unlock()
}

// wheelBeat is the wheel's: the stream's heartbeat may be due.
func (st *stream) wheelBeat() {
	st.mu.Lock()
	st.beatPending = true
	st.mu.Unlock()
	st.wake()
}

// peerClosed is the close watch's: the client has closed its end.
func (st *stream) peerClosed() {
	st.cancel()
	st.wake()
}

// ending says whether the parked stream must end (or start over): its client
// left, its token expired, or the hub ended its subscriber.
func (st *stream) ending() bool {
	if st.ctx.Err() != nil {
		return true
	}
	select {
	case <-st.expired:
		return true
	case <-st.sub.Done():
		return true
	default:
		return false
	}
}

// beatDue returns what a parked stream's heartbeat sends, if it is due, and
// puts the stream back in the wheel for its next one. writing says frames are
// being written anyway. The beat is that of the live loop (idleBeat).
func (st *stream) beatDue(writing bool) []byte {
	st.mu.Lock()
	pending := st.beatPending
	st.beatPending = false
	st.mu.Unlock()
	if !pending {
		return nil
	}
	hb := st.h.cfg.Heartbeat
	idle := time.Since(st.lastWrite)
	if writing || idle < hb {
		st.h.pool.wheel.add(st, hb-idle)
		return nil
	}
	st.h.pool.wheel.add(st, hb)
	return st.idleBeat()
}

// resume gives the stream back a goroutine of its own, which writes pending
// (what the socket did not take), or fails with werr, then runs the live loop;
// ending says the stream is ending, so the loop must not park it again.
func (st *stream) resume(pending [][]byte, werr error, ending bool) {
	st.mu.Lock()
	st.parked, st.scheduled, st.rerun = false, false, false
	st.mu.Unlock()
	st.h.pool.wheel.remove(st)
	go st.run(func() error {
		st.heartbeat = time.NewTimer(max(st.h.cfg.Heartbeat-time.Since(st.lastWrite), 0))
		var err error
		if werr != nil {
			err = st.writeFailed(werr)
		}
		// The socket refused more just now: the client has the write timeout
		// from now to take the rest.
		st.deadline = time.Now().Add(st.h.cfg.WriteTimeout)
		_ = st.sink.setWriteDeadline(st.deadline)
		for _, b := range pending {
			if err != nil {
				break
			}
			if werr := st.sink.write(b); werr != nil {
				err = st.writeFailed(werr)
			}
		}
		if len(pending) > 0 && err == nil {
			st.lastWrite = time.Now()
		}
		if err == nil {
			st.noPark = ending
			err = st.live()
		}
		return st.restarts(err)
	})
}
