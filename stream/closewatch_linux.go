package stream

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// closeWatch notices, at once, the peers of taken-over streams that close
// their end (EPOLLRDHUP) or reset it (EPOLLHUP, EPOLLERR), with one epoll set
// and one goroutine for every stream instead of a blocked read per stream. A
// stream's descriptor is also in Go's own poller; a descriptor may be in
// several epoll sets.
type closeWatch struct {
	epfd int
	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex
	streams map[uint64]*stream // by registration id: one per open stream
	next    uint64
}

func newCloseWatch() (*closeWatch, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	w := &closeWatch{epfd: epfd, stop: make(chan struct{}), done: make(chan struct{}), streams: map[uint64]*stream{}}
	go w.run()
	return w, nil
}

// add watches raw's descriptor for st and returns the registration's id. Ids
// are never reused, so an event for a descriptor closed and reused meanwhile
// is not taken for the new stream's.
func (w *closeWatch) add(raw syscall.RawConn, st *stream) (uint64, error) {
	w.mu.Lock()
	w.next++
	id := w.next
	w.streams[id] = st
	w.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(uint32(id)), Pad: int32(uint32(id >> 32))}
	var err error
	if cerr := raw.Control(func(fd uintptr) { err = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev) }); cerr != nil {
		err = cerr
	}
	if err != nil {
		w.forget(id)
		return 0, fmt.Errorf("epoll_ctl add: %w", err)
	}
	return id, nil
}

// remove stops watching; call it before the connection is closed.
func (w *closeWatch) remove(raw syscall.RawConn, id uint64) {
	_ = raw.Control(func(fd uintptr) { _ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, int(fd), nil) })
	w.forget(id)
}

func (w *closeWatch) forget(id uint64) {
	w.mu.Lock()
	delete(w.streams, id)
	w.mu.Unlock()
}

// closeWatchPoll is how long one wait lasts, so that close is seen.
const closeWatchPoll = 100 * time.Millisecond

func (w *closeWatch) run() {
	defer close(w.done)
	events := make([]unix.EpollEvent, 256)
	for {
		select {
		case <-w.stop:
			return
		default:
		}
		n, err := unix.EpollWait(w.epfd, events, int(closeWatchPoll/time.Millisecond))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return // only a bad epfd fails: closed
		}
		for _, ev := range events[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			w.mu.Lock()
			st := w.streams[id]
			delete(w.streams, id)
			w.mu.Unlock()
			if st != nil {
				st.peerClosed()
			}
		}
	}
}

// close stops the watch; streams still open are no longer watched.
func (w *closeWatch) close() {
	close(w.stop)
	<-w.done
	unix.Close(w.epfd)
}
