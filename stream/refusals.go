package stream

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"pgsse/sse"
)

var kindRefused = sse.MustEventType("stream.refused")

// refusalLogInterval: capacity refusals (429, 503) are logged at most once per
// interval per status, with how many were not logged since; a flood from one
// address is one line every few seconds, not one per request. The metric counts
// every one.
const refusalLogInterval = 10 * time.Second

// capacityLog rate-limits the log lines of capacity refusals. Its map is keyed
// by status code: two entries at most.
type capacityLog struct {
	mu   sync.Mutex
	last map[int]time.Time
	held map[int]int
}

// allow reports whether a refusal with status may be logged now, and how many
// were held back since the last line.
func (l *capacityLog) allow(status int, now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last, l.held = map[int]time.Time{}, map[int]int{}
	}
	if now.Sub(l.last[status]) < refusalLogInterval {
		l.held[status]++
		return false, 0
	}
	suppressed = l.held[status]
	l.last[status], l.held[status] = now, 0
	return true, suppressed
}

// isCapacity reports whether re refuses for want of room (retrying later
// helps), not for the request or its credentials (retrying cannot).
func isCapacity(re *RequestError) bool {
	return re.Status == http.StatusTooManyRequests || re.Status == http.StatusServiceUnavailable
}

// wantsEventStream reports whether the client asked for an event stream, as
// EventSource always does: it gives up for good on any answer but a 200
// text/event-stream, so capacity refusals go to it in that form.
func wantsEventStream(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "text/event-stream")
}

// busy answers a capacity refusal as an event stream that ends at once: a
// jittered retry: from the back-off, and a stream.refused event (no id, so the
// client keeps its position) saying why. The client reconnects by itself.
func (h *Handler) busy(c echo.Context, re *RequestError) error {
	retry := jitter(re.RetryAfter)
	data, _ := json.Marshal(map[string]any{
		"kind": kindRefused.String(),
		"data": map[string]any{"status": re.Status, "param": re.Param, "reason": re.Reason, "retry_ms": retry.Milliseconds()},
	})
	w := c.Response()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	_, err := w.Write((&sse.Message{Retry: retry, Type: kindRefused, Data: data}).AppendTo(nil))
	return err
}
