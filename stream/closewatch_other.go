//go:build !linux

package stream

import (
	"errors"
	"syscall"
)

// Elsewhere than Linux there is no close watch (epoll), so streams stay on
// net/http's path.
type closeWatch struct{}

func newCloseWatch() (*closeWatch, error) {
	return nil, errors.New("taking streams over needs epoll (Linux)")
}

func (*closeWatch) add(syscall.RawConn, *stream) (uint64, error) { return 0, errors.ErrUnsupported }
func (*closeWatch) remove(syscall.RawConn, uint64)               {}
func (*closeWatch) close()                                       {}

type vectorWriter struct{}

func newVectorWriter() *vectorWriter { return &vectorWriter{} }

func (*vectorWriter) write(syscall.RawConn, [][]byte) ([][]byte, error) {
	return nil, errors.ErrUnsupported
}
