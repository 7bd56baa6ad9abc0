package stream

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"pgsse/hub"
)

func newTestEcho(h *Handler) *echo.Echo {
	e := echo.New()
	e.HTTPErrorHandler = HTTPErrorHandler
	h.Register(e)
	// An alias as the wiring registers one (see the root package's routes.go).
	e.GET("/videos/:id/events", h.TopicStream(func(c echo.Context) (string, error) { return "videos/" + c.Param("id"), nil }))
	return e
}

// TestHandler_BadRequests: every abuse is refused before streaming with a 4xx
// and a JSON body naming the parameter at fault. None reaches the database (the
// handler has no History here) or the hub.
func TestHandler_BadRequests(t *testing.T) {
	h := hub.NewHub(hub.HubConfig{})
	h.Start(0)
	e := newTestEcho(NewHandler(h, nil, HandlerConfig{MaxTopics: 3}))
	for _, tc := range []struct {
		name, target, lastEventID string
		wantStatus                int
		wantParam                 string
	}{
		{"NoTopic", "/events", "", 400, "topic"},
		{"EmptyTopic", "/events?topic=", "", 400, "topic"},
		{"TopicWithSpace", "/events?topic=videos/a%20b", "", 400, "topic"},
		{"TopicWithNewline", "/events?topic=videos/a%0Ab", "", 400, "topic"},
		{"TopicWithNUL", "/events?topic=videos/a%00", "", 400, "topic"},
		{"TopicDoubleSlash", "/events?topic=videos//a", "", 400, "topic"},
		{"TopicBareWildcard", "/events?topic=*", "", 400, "topic"},
		{"TopicInnerWildcard", "/events?topic=videos/*/a", "", 400, "topic"},
		{"TopicTooLong", "/events?topic=videos/" + strings.Repeat("a", 300), "", 400, "topic"},
		{"TooManyTopics", "/events?topic=a&topic=b&topic=c&topic=d", "", 400, "topic"},
		{"UnknownParameter", "/events?topic=videos/a&topics=videos/b", "", 400, "topics"},
		{"MalformedQuery", "/events?topic=videos/a&x=%zz", "", 400, "query"},
		{"SemicolonQuery", "/events?topic=videos/a;topic=videos/b", "", 400, "query"},
		{"OversizedQuery", "/events?topic=videos/a&pad=" + strings.Repeat("x", 10000), "", 414, "query"},
		{"LastEventIDNotNumber", "/events?topic=videos/a", "abc", 400, "Last-Event-ID"},
		{"LastEventIDNegative", "/events?topic=videos/a", "-1", 400, "Last-Event-ID"},
		{"LastEventIDPlus", "/events?topic=videos/a", "+1", 400, "Last-Event-ID"},
		{"LastEventIDOverflow", "/events?topic=videos/a", "9223372036854775808", 400, "Last-Event-ID"},
		{"LastEventIDFloat", "/events?topic=videos/a", "1.5", 400, "Last-Event-ID"},
		{"QueryLastEventIDBad", "/events?topic=videos/a&last_event_id=x", "", 400, "last_event_id"},
		{"QueryLastEventIDEmpty", "/events?topic=videos/a&last_event_id=", "", 400, "last_event_id"},
		{"QueryLastEventIDTwice", "/events?topic=videos/a&last_event_id=1&last_event_id=2", "", 400, "last_event_id"},
		{"VideoRouteTopic", "/videos/a/events?topic=videos/b", "", 400, "topic"},
		{"UnknownPath", "/nope", "", 404, ""},
		{"WrongMethod", "/events?topic=videos/a", "", 405, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method := http.MethodGet
			if tc.name == "WrongMethod" {
				method = http.MethodPost
			}
			req := httptest.NewRequest(method, tc.target, nil)
			if tc.lastEventID != "" {
				req.Header.Set("Last-Event-ID", tc.lastEventID)
			}
			rec := httptest.NewRecorder()
			e.ServeHTTP(rec, req)
			if rec.Code != tc.wantStatus {
				t.Fatalf("status = %d, want %d; body %s", rec.Code, tc.wantStatus, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("content type = %q, want JSON", ct)
			}
			var body struct{ Error, Param string }
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("body %q is not JSON: %v", rec.Body, err)
			}
			if body.Error == "" || body.Param != tc.wantParam {
				t.Errorf("body = %+v, want an error for param %q", body, tc.wantParam)
			}
		})
	}
}

// FuzzHandler: no query string or Last-Event-ID makes the handler answer 5xx or
// panic. Valid requests start a stream that ends at once (the client is gone).
func FuzzHandler(f *testing.F) {
	for _, seed := range []string{"topic=videos/a", "topic=videos/*&last_event_id=5", "topic=%00", "x=%zz", "topic=a;b", "topic=" + strings.Repeat("a/", 200)} {
		f.Add(seed, "12")
	}
	h := hub.NewHub(hub.HubConfig{})
	e := newTestEcho(NewHandler(h, nil, HandlerConfig{}))
	f.Fuzz(func(t *testing.T, query, lastEventID string) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/events", nil)
		req.URL.RawQuery = query // as the server would receive it, spaces and all
		if strings.ContainsAny(lastEventID, "\r\n") {
			t.Skip()
		}
		req.Header.Set("Last-Event-ID", lastEventID)
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%q, Last-Event-ID %q: status %d %s", query, lastEventID, rec.Code, rec.Body)
		}
		if rec.Code == http.StatusOK && rec.Header().Get("Content-Type") != "text/event-stream" {
			t.Fatalf("200 with content type %q", rec.Header().Get("Content-Type"))
		}
	})
}
