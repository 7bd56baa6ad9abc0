package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"pgsse/hub"
	"pgsse/internal/dbtest"
	"pgsse/stream"
)

// TestRoutes_VideoAliasAnyID: a video whose id is outside the topic grammar
// is watched, URL-encoded once, at /videos/{id}/events, on its encoded topic.
func TestRoutes_VideoAliasAnyID(t *testing.T) {
	url := dbtest.New(t)
	sqlDB := dbtest.Open(t, url)
	dbtest.InsertVideo(t, sqlDB, "legacy upload/7")
	p := startPgsse(t, url)
	s := open(t, p.URL+"/videos/legacy%20upload%2F7/events", "")
	snap := s.next(t)
	if !snap.env.Snapshot || snap.env.Topic != "videos/legacy%20upload%2F7" || !strings.Contains(string(snap.env.Data), `"video_id":"legacy upload/7"`) {
		t.Errorf("got %+v, want the snapshot of video \"legacy upload/7\" on videos/legacy%%20upload%%2F7", snap.env)
	}
}

// TestRoutes_VideoAliasRefused: an id no topic can carry is refused before
// streaming, with a 400 naming the id.
func TestRoutes_VideoAliasRefused(t *testing.T) {
	h := hub.NewHub(hub.HubConfig{})
	h.Start(0)
	e := echo.New()
	e.HTTPErrorHandler = stream.HTTPErrorHandler
	registerAliases(e, stream.NewHandler(h, nil, stream.HandlerConfig{}))
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/videos/"+strings.Repeat("%C3%A9", 50)+"/events", nil))
	if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), `"param":"id"`) {
		t.Errorf("%d %s, want 400 naming the id", rec.Code, rec.Body)
	}
}
