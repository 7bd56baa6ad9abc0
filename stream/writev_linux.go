package stream

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// maxIovecs is the most buffers one writev takes (IOV_MAX).
const maxIovecs = 1024

// vectorWriter writes buffers with writev, never waiting: what the socket's
// buffer cannot take at once is reported, not waited for. One per writer; its
// storage is reused, so a write allocates nothing.
type vectorWriter struct {
	iov  []unix.Iovec
	n    int
	err  error
	call func(fd uintptr) bool // w.writev, bound once
}

func newVectorWriter() *vectorWriter {
	w := &vectorWriter{iov: make([]unix.Iovec, 0, maxIovecs)}
	w.call = w.writev
	return w
}

// write writes as much of bufs as the socket takes now; left is a copy of
// what it did not take (nil: everything was written). A full socket buffer is
// not an error.
func (w *vectorWriter) write(raw syscall.RawConn, bufs [][]byte) (left [][]byte, err error) {
	for len(bufs) > 0 {
		chunk := bufs[:min(len(bufs), maxIovecs)]
		want := 0
		for _, b := range chunk {
			if len(b) == 0 {
				continue
			}
			v := unix.Iovec{Base: &b[0]}
			v.SetLen(len(b))
			w.iov = append(w.iov, v)
			want += len(b)
		}
		w.n, w.err = 0, nil
		if len(w.iov) > 0 {
			if err := raw.Write(w.call); err != nil {
				w.err = err
			}
		}
		clear(w.iov) // let the buffers go
		w.iov = w.iov[:0]
		if w.err != nil || w.n < want {
			return rest(bufs, w.n), w.err
		}
		bufs = bufs[len(chunk):]
	}
	return nil, nil
}

// rest returns a copy of bufs without its first n bytes.
func rest(bufs [][]byte, n int) [][]byte {
	var out [][]byte
	for _, b := range bufs {
		if n >= len(b) {
			n -= len(b)
			continue
		}
		out = append(out, b[n:])
		n = 0
	}
	return out
}

func (w *vectorWriter) writev(fd uintptr) bool {
	for {
		n, _, errno := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&w.iov[0])), uintptr(len(w.iov)))
		switch errno {
		case 0:
			w.n = int(n)
		case unix.EINTR:
			continue
		case unix.EAGAIN:
		default:
			w.err = errno
		}
		return true // never wait for the socket: the caller hands the rest on
	}
}
