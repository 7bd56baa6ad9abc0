// Package stream serves event streams over HTTP: request parsing, limits
// and auth, each stream's lifecycle (snapshot, resume, catch-up, reset, live),
// and, for streams taken over from net/http, the writers that run them.
package stream

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/rs/zerolog"
	"golang.org/x/sync/semaphore"

	"pgsse/db"
	"pgsse/event"
	"pgsse/hub"
)

// History is the log the handler reads snapshots and missed events from. It must
// be safe for concurrent use.
type History interface {
	// LogBounds returns the horizon (events at or below it may be pruned) and the
	// newest id ever handed out.
	LogBounds(ctx context.Context) (horizon, newest int64, err error)
	// TopicEvents returns up to limit events in (after, through] whose topic is in
	// topics or starts with one of prefixes, in id order (fewer when they are
	// large), whether more may follow, and the horizon as of the same read
	// (above after: some of those events may have been pruned unread).
	TopicEvents(ctx context.Context, after, through int64, topics, prefixes []string, limit int) (events []event.Raw, more bool, horizon int64, err error)
	// Stateful reports whether topic has a current state the store can read
	// (a snapshot), without reading anything.
	Stateful(topic string) bool
	// Snapshot returns the log position and, for each of topics (all
	// stateful) whose state exists, a snapshot event with that position as its
	// id, read together.
	Snapshot(ctx context.Context, topics []string) (int64, []event.Event, error)
}

// Authorizer decides who may stream which topics. It must be safe for
// concurrent use.
type Authorizer interface {
	// Authorize checks r's credentials against the requested topics (topics or
	// patterns). Its error should be a *RequestError (401 or 403).
	Authorize(r *http.Request, topics []string) (Access, error)
}

// Access is what an authorized request may do.
type Access struct {
	Subject string    // counted against Limits.PerSubject; may be empty
	Expires time.Time // the stream ends then, with auth.expired; zero: never
}

// HandlerConfig tunes a Handler.
type HandlerConfig struct {
	// Authorizer checks every stream request; nil lets everyone stream anything
	// (PGSSE_AUTH_MODE=none).
	Authorizer Authorizer
	Limits     Limits

	MaxTopics    int           // topics per stream
	Heartbeat    time.Duration // idle time before a comment frame
	WriteTimeout time.Duration // per write; a peer slower than this is dropped
	Retry        time.Duration // reconnection delay sent to clients, jittered per stream
	ReplayBatch  int           // events per log read when replaying
	// MaxReplays bounds the log reads of replaying streams at once
	// (defaultMaxReplays if zero): a herd of resuming clients waits here, with
	// heartbeats, and leaves the rest of the pool to snapshots and live work.
	MaxReplays  int
	MaxQueryLen int // bytes of query string
	Logger      zerolog.Logger
	Metrics     *Metrics // nil: kept, not exported
}

// Handler serves event streams. Mount it with Register.
type Handler struct {
	hub         *hub.Hub
	history     History
	cfg         HandlerConfig
	admission   *admission
	capacityLog capacityLog
	replays     *semaphore.Weighted
	dbFault     atomic.Pointer[opFault] // the last fault a stream's database read met

	poolOnce sync.Once
	pool     *writers // nil until a stream is taken over, or where there are none
	stopPool sync.Once
	mu       sync.Mutex
	closed   bool // by Close: no more streams are taken over
	takenN   int  // streams taken over and not yet ended
}

// opFault is a fault and the read (snapshot, replay…) that met it.
type opFault struct {
	op string
	db.Fault
}

// Failure reports the fault (not an outage) the last failing database read of
// a stream met, until that read succeeds again; nil while reads work.
func (h *Handler) Failure() *db.Fault {
	if f := h.dbFault.Load(); f != nil {
		return &f.Fault
	}
	return nil
}

// defaultMaxReplays is half the pool: replays never hold all of it.
const defaultMaxReplays = db.DefaultMaxConns / 2

// The handler's defaults, for the HandlerConfig fields left zero (and the
// settings of the same names).
const (
	DefaultMaxTopics    = 100
	DefaultHeartbeat    = 15 * time.Second // under the 60 s idle timeout of common proxies
	DefaultWriteTimeout = 10 * time.Second
	DefaultRetry        = 2 * time.Second
	DefaultReplayBatch  = 1000
	DefaultMaxQueryLen  = 8 << 10
)

// NewHandler returns a handler streaming from hub, replaying from history.
func NewHandler(hub *hub.Hub, history History, cfg HandlerConfig) *Handler {
	if cfg.MaxTopics <= 0 {
		cfg.MaxTopics = DefaultMaxTopics
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.Retry <= 0 {
		cfg.Retry = DefaultRetry
	}
	if cfg.ReplayBatch <= 0 {
		cfg.ReplayBatch = DefaultReplayBatch
	}
	if cfg.MaxReplays <= 0 {
		cfg.MaxReplays = defaultMaxReplays
	}
	if cfg.MaxQueryLen <= 0 {
		cfg.MaxQueryLen = DefaultMaxQueryLen
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	return &Handler{hub: hub, history: history, cfg: cfg, admission: newAdmission(cfg.Limits), replays: semaphore.NewWeighted(int64(cfg.MaxReplays))}
}

// writers returns the writer pool, started by the first stream taken over; nil
// when none may start (closed, or the platform has no close watch), so streams
// stay on net/http's path.
func (h *Handler) writers() *writers {
	h.poolOnce.Do(func() {
		p, err := newWriters(runtime.GOMAXPROCS(0), h.cfg.Heartbeat)
		if err != nil {
			h.cfg.Logger.Warn().Err(err).Msg("streams stay on net/http's path")
			return
		}
		h.pool = p
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil
	}
	return h.pool
}

func (h *Handler) streamStarted() {
	h.mu.Lock()
	h.takenN++
	h.mu.Unlock()
}

func (h *Handler) streamEnded() {
	h.mu.Lock()
	h.takenN--
	h.mu.Unlock()
}

// Close waits until the streams taken over from net/http have ended (end them
// first: Hub.Drain or Hub.Close; http.Server.Shutdown does not wait for them),
// or ctx is done, then stops the writers. Streams opened after it stay on
// net/http's path.
func (h *Handler) Close(ctx context.Context) error {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.poolOnce.Do(func() {}) // none starts after this
	for tick := time.NewTicker(10 * time.Millisecond); ; {
		h.mu.Lock()
		open := h.takenN
		h.mu.Unlock()
		if open == 0 {
			tick.Stop()
			break
		}
		select {
		case <-ctx.Done():
			tick.Stop()
			return fmt.Errorf("close stream handler: %d streams still open: %w", open, ctx.Err())
		case <-tick.C:
		}
	}
	if h.pool != nil {
		h.stopPool.Do(h.pool.close)
	}
	return nil
}

// Register mounts the stream endpoint, /events, on e.
func (h *Handler) Register(e *echo.Echo) {
	e.GET("/events", h.events)
}

// RequestError is a request refused before streaming: it becomes a 4xx (or a
// 503) with a JSON body naming the parameter at fault and how to fix it.
type RequestError struct {
	Status     int
	Param      string
	Reason     string
	Topics     []string      // the topics refused, for a 403
	RetryAfter time.Duration // sent as Retry-After when set
}

func (e *RequestError) Error() string { return e.Param + ": " + e.Reason }

func badRequest(param, format string, args ...any) *RequestError {
	return &RequestError{Status: http.StatusBadRequest, Param: param, Reason: fmt.Sprintf(format, args...)}
}

// HTTPErrorHandler renders every error Echo sees as the contract's JSON body.
func HTTPErrorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	body := map[string]any{}
	status := http.StatusInternalServerError
	var re *RequestError
	var he *echo.HTTPError
	switch {
	case errors.As(err, &re):
		status = re.Status
		body["error"], body["param"] = re.Reason, re.Param
		if len(re.Topics) > 0 {
			body["topics"] = re.Topics
		}
		if re.RetryAfter > 0 {
			c.Response().Header().Set("Retry-After", strconv.Itoa(int((re.RetryAfter+time.Second-1)/time.Second)))
		}
		if status == http.StatusUnauthorized {
			c.Response().Header().Set("WWW-Authenticate", `Bearer realm="pgsse"`)
		}
	case errors.As(err, &he):
		status = he.Code
		body["error"] = fmt.Sprint(he.Message)
	default:
		body["error"] = http.StatusText(status) // never the internal error text
	}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(status)
		return
	}
	_ = c.JSON(status, body)
}

// request is a validated stream request.
type request struct {
	topics []event.Topic
	names  []string // the topics as written, deduplicated
	resume bool     // a Last-Event-ID was given
	lastID int64    // valid when resume
}

func (h *Handler) events(c echo.Context) error {
	q, err := h.parseQuery(c, "topic", "last_event_id", "access_token")
	if err != nil {
		return err
	}
	if len(q["topic"]) == 0 {
		return badRequest("topic", "no topic: add one or more topic parameters, e.g. ?topic=videos/abc123")
	}
	req, err := h.parseRequest(c, q, q["topic"])
	if err != nil {
		return err
	}
	return h.stream(c, req)
}

// TopicStream returns a handler streaming the one topic topicOf reads from
// the request (a path alias such as /videos/{id}/events, registered by the
// wiring), with the query parameters last_event_id and access_token. An error
// of topicOf should be a *RequestError.
func (h *Handler) TopicStream(topicOf func(c echo.Context) (string, error)) echo.HandlerFunc {
	return func(c echo.Context) error {
		q, err := h.parseQuery(c, "last_event_id", "access_token")
		if err != nil {
			return err
		}
		topic, err := topicOf(c)
		if err != nil {
			return err
		}
		req, err := h.parseRequest(c, q, []string{topic})
		if err != nil {
			return err
		}
		return h.stream(c, req)
	}
}

// PathParam returns the named path parameter, decoded once: Echo routes the
// raw path when it holds escapes such as %2F, and then leaves them in the
// parameter.
func PathParam(c echo.Context, name string) (string, error) {
	v := c.Param(name)
	if c.Request().URL.RawPath == "" {
		return v, nil
	}
	decoded, err := url.PathUnescape(v)
	if err != nil {
		return "", badRequest(name, "%s %q is not valid URL encoding", name, truncate(v))
	}
	return decoded, nil
}

// parseQuery parses the query string strictly: a malformed one or an unknown
// parameter is refused rather than ignored, so typos surface at once.
func (h *Handler) parseQuery(c echo.Context, allowed ...string) (url.Values, error) {
	raw := c.Request().URL.RawQuery
	if len(raw) > h.cfg.MaxQueryLen {
		return nil, &RequestError{Status: http.StatusRequestURITooLong, Param: "query",
			Reason: fmt.Sprintf("query string is %d bytes, more than %d: subscribe to fewer topics", len(raw), h.cfg.MaxQueryLen)}
	}
	q, err := url.ParseQuery(raw)
	if err != nil {
		return nil, badRequest("query", "malformed query string: %v", err)
	}
	for name := range q {
		known := false
		for _, a := range allowed {
			known = known || name == a
		}
		if !known {
			return nil, badRequest(truncate(name), "unknown parameter %q: allowed are %v", truncate(name), allowed)
		}
	}
	return q, nil
}

func (h *Handler) parseRequest(c echo.Context, q url.Values, topics []string) (request, error) {
	var req request
	if len(topics) > h.cfg.MaxTopics {
		return req, badRequest("topic", "%d topics, more than the %d allowed: split them over several streams", len(topics), h.cfg.MaxTopics)
	}
	seen := make(map[string]bool, len(topics))
	for _, s := range topics {
		t, err := event.ParseTopic(s)
		if err != nil {
			return req, badRequest("topic", "topic %q: %v", truncate(s), err)
		}
		if !seen[s] {
			seen[s] = true
			req.topics = append(req.topics, t)
			req.names = append(req.names, s)
		}
	}

	// The header wins: EventSource reconnects to the same URL, so a query
	// parameter holds the first position and the header the latest.
	param, value := "Last-Event-ID", c.Request().Header.Get("Last-Event-ID")
	if value == "" {
		param = "last_event_id"
		switch v := q["last_event_id"]; {
		case len(v) > 1:
			return req, badRequest(param, "last_event_id given %d times: give it once", len(v))
		case len(v) == 1:
			value = v[0]
			if value == "" {
				return req, badRequest(param, "last_event_id is empty: give the id of the last event received, or leave it out")
			}
		}
	}
	if value != "" {
		id, ok := parseEventID(value)
		if !ok {
			return req, badRequest(param, "%s %q is not an event id: it must be a non-negative integer below 2^63", param, truncate(value))
		}
		req.resume, req.lastID = true, id
	}
	return req, nil
}

// parseEventID accepts only plain decimal digits.
func parseEventID(s string) (int64, bool) {
	if len(s) == 0 || len(s) > 19 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if n > (1<<63-1-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// truncate keeps echoed client input short in error bodies.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// admit applies the limits and the authorizer, cheapest first.
func (h *Handler) admit(c echo.Context, req request) (Access, func(), error) {
	ip := c.RealIP()
	if err := h.admission.allowConnect(ip, time.Now()); err != nil {
		return Access{}, nil, h.refused(c, err)
	}
	var access Access
	if h.cfg.Authorizer != nil {
		var err error
		if access, err = h.cfg.Authorizer.Authorize(c.Request(), req.names); err != nil {
			return Access{}, nil, h.refused(c, err)
		}
	}
	release, rerr := h.admission.acquire(ip, access.Subject)
	if rerr != nil {
		return Access{}, nil, h.refused(c, rerr)
	}
	return access, release, nil
}

// refused logs a stream refused for its credentials or a limit: one line, with
// the reason, never the credentials.
func (h *Handler) refused(c echo.Context, err error) error {
	ev := h.cfg.Logger.Info()
	var re *RequestError
	if errors.As(err, &re) {
		h.cfg.Metrics.StreamsRefused.WithLabelValues(strconv.Itoa(re.Status)).Inc()
		if isCapacity(re) {
			ok, suppressed := h.capacityLog.allow(re.Status, time.Now())
			if !ok {
				return err
			}
			ev = h.cfg.Logger.Warn().Int("not_logged_since_last", suppressed)
		}
		ev = ev.Int("status", re.Status).Str("param", re.Param).Str("reason", re.Reason)
	} else {
		ev = ev.Err(err)
	}
	ev.Str("remote", c.RealIP()).Msg("stream refused")
	return err
}

func (h *Handler) stream(c echo.Context, req request) error {
	access, release, err := h.admit(c, req)
	if err != nil {
		if re := (*RequestError)(nil); errors.As(err, &re) && isCapacity(re) && wantsEventStream(c.Request()) {
			return h.busy(c, re)
		}
		return err
	}

	w := c.Response()
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream

	st := &stream{
		h:            h,
		req:          req,
		remote:       c.RealIP(),
		subject:      access.Subject,
		start:        time.Now(),
		release:      release,
		heartbeat:    time.NewTimer(h.cfg.Heartbeat),
		caughtUpFrom: -1,
		wheelSlot:    -1,
	}
	if conn, head := h.takeOver(c); conn != nil {
		h.streamStarted()
		st.conn, st.sink, st.buf = conn, connSink{conn.conn}, head
		// Once taken over, nothing of net/http's watches the client: the
		// stream's context ends when the close watch sees it go. (Not derived
		// from the request's, which would keep net/http's contexts alive.)
		st.ctx, st.cancel = context.WithCancel(context.Background())
		if conn.raw != nil {
			id, err := h.pool.watch.add(conn.raw, st)
			if err != nil {
				st.logger().Warn().Err(err).Msg("close watch; the stream keeps a goroutine and notices a close when a write fails")
				conn.raw = nil
			}
			conn.watchID = id
		}
		// Echo pools its contexts, and a pooled one keeps its last request and
		// response, so net/http's connection and its buffers (8 KiB) until the
		// context is reused: let them go now.
		c.Reset(nil, nil)
	} else {
		w.WriteHeader(http.StatusOK)
		st.sink = responseSink{w: w, rc: http.NewResponseController(w)}
		st.ctx, st.cancel = c.Request().Context(), func() {}
	}
	if !access.Expires.IsZero() {
		expired := make(chan struct{})
		st.expired = expired
		st.expiry = time.AfterFunc(time.Until(access.Expires), func() {
			close(expired)
			st.wake()
		})
	}
	ev := st.logger().Info()
	if req.resume {
		ev = ev.Int64("last_event_id", req.lastID)
	}
	ev.Msg("stream started")
	m := h.cfg.Metrics
	m.StreamsOpened.Inc()
	m.StreamsOpen.Inc()
	st.run(st.steps)
	return nil
}

// jitter returns d scaled by a random factor in [0.5, 1.5), so that clients
// dropped together do not come back together.
func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d)
}
