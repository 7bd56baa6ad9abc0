package e2e

import (
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pgsse/internal/dbtest"
)

// proxy is a round-robin TCP proxy standing in for a load balancer: each new
// connection goes to the next backend that accepts it.
type proxy struct {
	ln       net.Listener
	backends []string
	next     atomic.Uint64
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
}

func startProxy(t *testing.T, backends ...string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, backends: backends, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) URL() string { return "http://" + p.ln.Addr().String() }

func (p *proxy) serve() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.relay(client)
		}()
	}
}

func (p *proxy) relay(client net.Conn) {
	defer client.Close()
	var backend net.Conn
	for range p.backends {
		addr := p.backends[p.next.Add(1)%uint64(len(p.backends))]
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			backend = c
			break
		}
	}
	if backend == nil {
		return
	}
	defer backend.Close()
	if !p.track(client, backend) {
		return
	}
	done := make(chan struct{}, 2)
	go func() { io.Copy(backend, client); done <- struct{}{} }()
	go func() { io.Copy(client, backend); done <- struct{}{} }()
	<-done // either side closing ends both
	client.Close()
	backend.Close()
	<-done
	p.untrack(client, backend)
}

func (p *proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		return false // closing
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
	}
}

func (p *proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}

// TestRollingUpdate: three replicas behind a round-robin proxy are restarted
// one at a time (SIGTERM, drain, start) while a writer commits and 200 clients
// stay subscribed through the proxy; every client ends with every committed
// event exactly once, in order.
func TestRollingUpdate(t *testing.T) {
	url := dbtest.New(t)
	sqlDB := dbtest.Open(t, url)
	ports := []int{freePort(t), freePort(t), freePort(t)}
	var backends []string
	procs := make([]*proc, len(ports))
	for i, port := range ports {
		procs[i] = startPgsseOn(t, port, url, "PGSSE_DRAIN=1s")
		backends = append(backends, fmt.Sprintf("127.0.0.1:%d", port))
	}
	lb := startProxy(t, backends...)

	head := logHead(t, sqlDB)
	clients := make([]*follower, 200)
	for i := range clients {
		clients[i] = follow(t, fmt.Sprint(head), lb.URL()+"/events?topic=videos/*")
	}
	time.Sleep(500 * time.Millisecond)
	stopWriter := startWriter(t, sqlDB, "roll", 20*time.Millisecond)

	start := time.Now()
	drained := 0
	for i, port := range ports {
		time.Sleep(500 * time.Millisecond)
		procs[i].stop()
		if procs[i].err != nil {
			t.Errorf("replica %d exited with %v", i, procs[i].err)
		}
		drained += countLines(procs[i].logs.String(), `"reason":"draining"`)
		procs[i] = startPgsseOn(t, port, url, "PGSSE_DRAIN=1s")
	}
	time.Sleep(500 * time.Millisecond)
	stopWriter()
	t.Logf("rolled 3 replicas in %v", time.Since(start))
	if drained == 0 {
		t.Error("no stream was drained: the clients were not on the replicas that stopped")
	}

	want := logIDs(t, sqlDB, head, "videos/%")
	if len(want) < 50 {
		t.Fatalf("only %d events committed during the roll", len(want))
	}
	waitAllIDs(t, clients, want)
	t.Logf("%d events, %d clients (%d streams drained), all complete and in order after %v", len(want), len(clients), drained, time.Since(start))
}
