package stream_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"pgsse/event"
	"pgsse/hub"
	"pgsse/stream"
)

// takeoverServer is a hub and a handler, with metrics, behind a test server.
type takeoverServer struct {
	hub     *hub.Hub
	metrics *stream.Metrics
	srv     *httptest.Server
}

// serveTakeover starts a hub at 0 and a handler without history; tlsH2 serves
// HTTP/2 over TLS instead of plain HTTP/1.1.
func serveTakeover(t *testing.T, hubCfg hub.HubConfig, cfg stream.HandlerConfig, tlsH2 bool) *takeoverServer {
	t.Helper()
	return serveTakeoverWith(t, hubCfg, cfg, tlsH2, noHistory{}, 0)
}

// serveTakeoverWith is serveTakeover over history, the hub started at cursor.
func serveTakeoverWith(t *testing.T, hubCfg hub.HubConfig, cfg stream.HandlerConfig, tlsH2 bool, history stream.History, cursor int64) *takeoverServer {
	t.Helper()
	s := &takeoverServer{hub: hub.NewHub(hubCfg), metrics: stream.NewMetrics(prometheus.NewRegistry())}
	s.hub.Start(cursor)
	cfg.Metrics = s.metrics
	e := echo.New()
	h := stream.NewHandler(s.hub, history, cfg)
	h.Register(e)
	s.srv = httptest.NewUnstartedServer(e)
	if tlsH2 {
		s.srv.EnableHTTP2 = true
		s.srv.StartTLS()
	} else {
		s.srv.Start()
	}
	t.Cleanup(func() {
		s.hub.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for range 2 { // idempotent
			if err := h.Close(ctx); err != nil {
				t.Error(err)
			}
		}
		s.srv.Close()
	})
	return s
}

// noHistory is a log with no events and no videos.
type noHistory struct{}

func (noHistory) LogBounds(context.Context) (int64, int64, error) { return 0, 0, nil }
func (noHistory) TopicEvents(context.Context, int64, int64, []string, []string, int) ([]event.Raw, bool, int64, error) {
	return nil, false, 0, nil
}
func (noHistory) Stateful(string) bool { return false }
func (noHistory) Snapshot(context.Context, []string) (int64, []event.Event, error) {
	return 0, nil, nil
}

// closed returns how many streams ended for reason.
func (s *takeoverServer) closed(reason stream.EndReason) float64 {
	return testutil.ToFloat64(s.metrics.StreamsClosed.WithLabelValues(string(reason)))
}

// waitClosed waits up to 5 s for one stream to have ended for reason and
// none to be open.
func (s *takeoverServer) waitClosed(t *testing.T, reason stream.EndReason) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if s.closed(reason) == 1 && testutil.ToFloat64(s.metrics.StreamsOpen) == 0 && s.hub.Len() == 0 {
			return
		}
	}
	t.Fatalf("after 5s: %v streams ended for %s, %v open, %d subscribers; want 1, 0, 0",
		s.closed(reason), reason, testutil.ToFloat64(s.metrics.StreamsOpen), s.hub.Len())
}

// rawStream sends a raw request for target in proto, and returns the
// connection and a reader past the response head, which it returns too.
func (s *takeoverServer) rawStream(t *testing.T, target, proto string) (net.Conn, *bufio.Reader, string) {
	t.Helper()
	conn, err := net.Dial("tcp", s.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "GET %s %s\r\nHost: pgsse\r\n\r\n", target, proto)
	r := bufio.NewReader(conn)
	var head strings.Builder
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("response head: %v (so far %q)", err, head.String())
		}
		head.WriteString(line)
		if line == "\r\n" {
			return conn, r, head.String()
		}
	}
}

// live opens a stream on videos/a and returns once it is live (and parked):
// its first event read.
func (s *takeoverServer) live(t *testing.T) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, r, _ := s.rawStream(t, "/events?topic=videos/a", "HTTP/1.1")
	s.publish(1, 1)
	readUntil(t, conn, r, "id: 1")
	return conn, r
}

// publish publishes status events from..through of video a.
func (s *takeoverServer) publish(from, through int64) {
	var evs []event.Event
	for id := from; id <= through; id++ {
		evs = append(evs, event.Event{ID: id, Kind: event.KindVideoStatus, Topic: "videos/a", Time: time.Now(),
			Data: &event.VideoStatus{VideoID: "a", Status: "processed"}})
	}
	s.hub.Publish(evs)
}

// readUntil reads lines until one equals want; it fails at the end of the
// body or after 5 s.
func readUntil(t *testing.T, conn net.Conn, r *bufio.Reader, want string) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading for %q: %v", want, err)
		}
		if strings.TrimRight(line, "\r\n") == want {
			return
		}
	}
}

// expectEOF reads the rest of the body and fails unless the server closes the
// connection within 5 s.
func expectEOF(t *testing.T, conn net.Conn, r *bufio.Reader) string {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	rest, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("want the connection closed, got %v after %q", err, rest)
	}
	return string(rest)
}

// TestTakeover_Response: an HTTP/1.1 stream is answered by pgsse itself, the
// body delimited by the connection's end: no chunked framing, Connection:
// close, the stream's headers, and events as written.
func TestTakeover_Response(t *testing.T) {
	s := serveTakeover(t, hub.HubConfig{}, stream.HandlerConfig{}, false)
	conn, r, head := s.rawStream(t, "/events?topic=videos/*", "HTTP/1.1")
	for _, want := range []string{"HTTP/1.1 200 OK\r\n", "\r\nContent-Type: text/event-stream\r\n", "\r\nConnection: close\r\n", "\r\nCache-Control: no-cache\r\n"} {
		if !strings.Contains(head, want) {
			t.Errorf("response head lacks %q:\n%s", want, head)
		}
	}
	if strings.Contains(strings.ToLower(head), "transfer-encoding") {
		t.Errorf("response head has a transfer encoding:\n%s", head)
	}
	first, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(first, "retry: ") {
		t.Fatalf("first body line %q, %v; want the retry field (unframed)", first, err)
	}
	s.publish(1, 3)
	readUntil(t, conn, r, "id: 3")
	s.hub.Close()
	if rest := expectEOF(t, conn, r); rest != "" && !strings.HasPrefix(rest, "\n") && !strings.HasPrefix(rest, "event:") {
		t.Logf("after the last event: %q", rest)
	}
	s.waitClosed(t, stream.EndShutdown)
}

// TestTakeover_HTTP10: a proxy speaking HTTP/1.0 gets an HTTP/1.0 answer,
// the events, and the end of the stream as the connection's close.
func TestTakeover_HTTP10(t *testing.T) {
	s := serveTakeover(t, hub.HubConfig{}, stream.HandlerConfig{}, false)
	conn, r, head := s.rawStream(t, "/events?topic=videos/a", "HTTP/1.0")
	if !strings.HasPrefix(head, "HTTP/1.0 200 OK\r\n") || strings.Contains(strings.ToLower(head), "chunked") {
		t.Fatalf("response head:\n%s", head)
	}
	s.publish(1, 2)
	readUntil(t, conn, r, "id: 2")
	s.hub.Close()
	expectEOF(t, conn, r)
	s.waitClosed(t, stream.EndShutdown)
}

// TestTakeover_ClientCloses: a parked stream whose client closes is ended and
// counted at once, long before a heartbeat would have found out.
func TestTakeover_ClientCloses(t *testing.T) {
	s := serveTakeover(t, hub.HubConfig{}, stream.HandlerConfig{Heartbeat: 50 * time.Second}, false)
	conn, _ := s.live(t) // live, and parked
	conn.Close()
	s.waitClosed(t, stream.EndClientGone)
}

// TestTakeover_SlowClientEvicted: a client that stops reading is dropped
// within the write timeout of the write it refused, its subscriber and stream
// released; its queue overflowing meanwhile does not buy it more catch-ups
// (each used to wait out the timeout again, three times over).
func TestTakeover_SlowClientEvicted(t *testing.T) {
	const writeTimeout = time.Second
	s := serveTakeover(t, hub.HubConfig{QueueLen: 64}, stream.HandlerConfig{WriteTimeout: writeTimeout, Heartbeat: 50 * time.Second}, false)
	conn, r, _ := s.rawStream(t, "/events?topic=videos/*", "HTTP/1.1")
	conn.(*net.TCPConn).SetReadBuffer(4 << 10)
	s.publish(1, 1)
	readUntil(t, conn, r, "id: 1")
	// Then stop reading, while events keep coming (40 MB/s).
	stop := make(chan struct{})
	published := make(chan struct{})
	go func() {
		defer close(published)
		big := strings.Repeat("x", 4000)
		for id := int64(2); ; id += 50 {
			var evs []event.Event
			for i := range int64(50) {
				evs = append(evs, event.Event{ID: id + i, Kind: event.KindVideoStatus, Topic: "videos/a", Time: time.Now(),
					Data: &event.VideoStatus{VideoID: "a", Status: big}})
			}
			s.hub.Publish(evs)
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	defer func() { close(stop); <-published }()
	stopped := time.Now()
	s.waitClosed(t, stream.EndWriteFailed)
	if took := time.Since(stopped); took > 5*writeTimeout {
		t.Errorf("dropped %v after the client stopped reading, want about the write timeout (%v)", took, writeTimeout)
	}
}

// TestTakeover_Drain: draining ends a parked stream with a fresh retry delay,
// then the connection's close.
func TestTakeover_Drain(t *testing.T) {
	s := serveTakeover(t, hub.HubConfig{}, stream.HandlerConfig{}, false)
	conn, r := s.live(t)
	s.hub.Drain(nil, 0)
	if rest := expectEOF(t, conn, r); !strings.Contains(rest, "retry: ") {
		t.Errorf("after the drain: %q, want a retry field then the end", rest)
	}
	s.waitClosed(t, stream.EndDraining)
}

// expiring grants every stream until a fixed time.
type expiring time.Time

func (e expiring) Authorize(*http.Request, []string) (stream.Access, error) {
	return stream.Access{Subject: "s", Expires: time.Time(e)}, nil
}

// TestTakeover_AuthExpired: a parked stream gets auth.expired at its token's
// expiry, then the end.
func TestTakeover_AuthExpired(t *testing.T) {
	s := serveTakeover(t, hub.HubConfig{}, stream.HandlerConfig{Authorizer: expiring(time.Now().Add(500 * time.Millisecond)), Heartbeat: 50 * time.Second}, false)
	conn, r := s.live(t)
	readUntil(t, conn, r, "event: auth.expired")
	expectEOF(t, conn, r)
	s.waitClosed(t, stream.EndAuthExpired)
}

// TestTakeover_Heartbeats: a parked, idle stream still gets its heartbeats
// (from the wheel).
func TestTakeover_Heartbeats(t *testing.T) {
	s := serveTakeover(t, hub.HubConfig{}, stream.HandlerConfig{Heartbeat: 50 * time.Millisecond}, false)
	conn, r := s.live(t)
	for range 3 {
		readUntil(t, conn, r, ": ping")
	}
}

// TestTakeover_BurstCaughtUp: parked streams whose queue overflows in a burst
// get every event once, in order, over the same connection.
func TestTakeover_BurstCaughtUp(t *testing.T) {
	s := serveTakeover(t, hub.HubConfig{QueueLen: 16}, stream.HandlerConfig{}, false)
	const streams, events = 10, 3000
	type client struct {
		conn net.Conn
		r    *bufio.Reader
	}
	var cs []client
	for range streams {
		conn, r, _ := s.rawStream(t, "/events?topic=videos/*", "HTTP/1.1")
		cs = append(cs, client{conn, r})
	}
	s.publish(1, 1)
	for _, c := range cs {
		readUntil(t, c.conn, c.r, "id: 1")
	}
	s.publish(2, events)
	for i, c := range cs {
		c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		next := int64(2)
		for next <= events {
			line, err := c.r.ReadString('\n')
			if err != nil {
				t.Fatalf("stream %d: %v before id %d", i, err, next)
			}
			if id, ok := strings.CutPrefix(strings.TrimRight(line, "\n"), "id: "); ok {
				if id != fmt.Sprint(next) {
					t.Fatalf("stream %d: id %s, want %d", i, id, next)
				}
				next++
			}
		}
	}
	if got := testutil.ToFloat64(s.metrics.StreamsOpened); got != streams {
		t.Errorf("%v streams opened, want %d: none reconnected", got, streams)
	}
}

// TestTakeover_HTTP2PlainPath: HTTP/2 (TLS straight to pgsse) keeps net/http's
// path, and streams as before.
func TestTakeover_HTTP2PlainPath(t *testing.T) {
	s := serveTakeover(t, hub.HubConfig{}, stream.HandlerConfig{}, true)
	client := s.srv.Client()
	client.Transport.(*http.Transport).TLSClientConfig.NextProtos = []string{"h2"}
	client.Transport.(*http.Transport).ForceAttemptHTTP2 = true
	_ = tls.VersionTLS13
	resp, err := client.Get(s.srv.URL + "/events?topic=videos/a")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.Header.Get("Content-Type") != "text/event-stream" || resp.Header.Get("Connection") != "" {
		t.Fatalf("%s, Content-Type %q, Connection %q; want HTTP/2 on net/http's path", resp.Proto, resp.Header.Get("Content-Type"), resp.Header.Get("Connection"))
	}
	r := bufio.NewReader(resp.Body)
	s.publish(1, 2)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == "id: 2\n" {
			break
		}
	}
	resp.Body.Close()
	s.waitClosed(t, stream.EndClientGone)
}
