package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"pgsse/hub"
	"pgsse/stream"
)

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
