package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// latency is a histogram of commit→receipt latencies, shared by all streams of
// a process: 50 µs buckets up to 5 s, then one overflow bucket.
type latency struct {
	counts [100001]atomic.Int64
}

const bucket = 50 * time.Microsecond

func (h *latency) add(d time.Duration) {
	h.addN(int(d/bucket), 1)
}

func (h *latency) addN(i int, n int64) {
	i = max(0, min(i, len(h.counts)-1))
	h.counts[i].Add(n)
}

func (h *latency) total() int64 {
	var n int64
	for i := range h.counts {
		n += h.counts[i].Load()
	}
	return n
}

// quantile returns the upper edge of the bucket holding quantile q.
func (h *latency) quantile(q float64) time.Duration {
	n := h.total()
	if n == 0 {
		return 0
	}
	rank := int64(q * float64(n))
	var seen int64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen > rank {
			return time.Duration(i+1) * bucket
		}
	}
	return time.Duration(len(h.counts)) * bucket
}

// streams is a set of SSE clients, each on one topic, resuming with
// Last-Event-ID whenever the server ends its stream.
type streams struct {
	base      string
	topics    []string
	client    *http.Client
	hist      *latency
	received  []atomic.Int64 // per stream: events received
	dups      atomic.Int64
	resumes   atomic.Int64
	connected atomic.Int64
	wg        sync.WaitGroup
}

// newStreams prepares n clients spread over topics; their connections come from
// 127.0.0.1…127.0.0.250 in turn, so more than one port range is available.
func newStreams(base string, n int, topics []string, token string) *streams {
	var next atomic.Uint32
	dialer := func(ctx context.Context, network, addr string) (net.Conn, error) {
		ip := net.IPv4(127, 0, 0, byte(1+next.Add(1)%250))
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 10 * time.Second}
		return d.DialContext(ctx, network, addr)
	}
	return &streams{
		base:     base,
		topics:   topics,
		received: make([]atomic.Int64, n),
		hist:     new(latency),
		client: &http.Client{Transport: &http.Transport{
			DialContext:         dialer,
			MaxIdleConnsPerHost: -1,
			DisableCompression:  true,
			ReadBufferSize:      4 << 10,
		}},
	}
}

// run opens every stream and returns once each has its first frame (or ctx
// ends); the streams read until ctx ends. Their topics' videos must exist, so
// that each starts with a snapshot.
func (s *streams) run(ctx context.Context, token string) {
	ready := make(chan struct{}, len(s.received))
	for i := range s.received {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.follow(ctx, i, token, ready)
		}()
		if i%200 == 199 {
			time.Sleep(20 * time.Millisecond) // do not trip the server's accept backlog
		}
	}
	for range s.received {
		select {
		case <-ready:
		case <-ctx.Done():
			return
		}
	}
}

func (s *streams) wait() { s.wg.Wait() }

func (s *streams) follow(ctx context.Context, i int, token string, ready chan<- struct{}) {
	topic := s.topics[i%len(s.topics)]
	var last int64
	first := true
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.base+"/events?topic="+topic, nil)
		if last > 0 {
			req.Header.Set("Last-Event-ID", strconv.FormatInt(last, 10))
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := s.client.Do(req)
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if !first {
			s.resumes.Add(1)
		}
		// Ready once the first frame (its snapshot) arrives: only then is the
		// stream surely subscribed, so every later event is one it must get.
		onFirst := func() {
			if first {
				first = false
				s.connected.Add(1)
				ready <- struct{}{}
			}
		}
		last = s.read(resp, i, last, onFirst)
		resp.Body.Close()
	}
}

var (
	idPrefix   = []byte("id: ")
	timeMarker = []byte(`"time":"`)
)

// read consumes one response; it returns the last id seen.
func (s *streams) read(resp *http.Response, i int, last int64, onFirst func()) int64 {
	r := bufio.NewReaderSize(resp.Body, 4<<10)
	var id int64
	for {
		line, err := r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			for err == bufio.ErrBufferFull { // a long data line: not one we read
				_, err = r.ReadSlice('\n')
			}
			continue
		}
		if err != nil {
			return last
		}
		switch {
		case bytes.HasPrefix(line, idPrefix):
			id, _ = strconv.ParseInt(string(bytes.TrimSpace(line[len(idPrefix):])), 10, 64)
		case bytes.HasPrefix(line, []byte("data: ")) && id > 0:
			onFirst()
			if id <= last {
				s.dups.Add(1)
				continue
			}
			if bytes.Contains(line, []byte(`"snapshot":true`)) {
				last = id // a position, not an event of the run
				continue
			}
			last = id
			s.received[i].Add(1)
			if j := bytes.Index(line, timeMarker); j >= 0 {
				rest := line[j+len(timeMarker):]
				if k := bytes.IndexByte(rest, '"'); k > 0 {
					if t, err := time.Parse(time.RFC3339Nano, string(rest[:k])); err == nil {
						s.hist.add(time.Since(t))
					}
				}
			}
		}
	}
}

// missing compares what each stream received with what the log holds for its
// topic in the run.
func (s *streams) missing(expected map[string]int64) (missing int64) {
	for i := range s.received {
		if d := expected[s.topics[i%len(s.topics)]] - s.received[i].Load(); d > 0 {
			missing += d
		}
	}
	return missing
}

func (s *streams) total() int64 {
	var n int64
	for i := range s.received {
		n += s.received[i].Load()
	}
	return n
}

func topicsN(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("videos/bench%d", i)
	}
	return out
}
