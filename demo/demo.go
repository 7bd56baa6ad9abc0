// Package demo is pgsse's live video-status page and the processing simulator
// that feeds it. Both are for trying pgsse out; neither is needed to run it.
//
// The page (static files embedded here, no build step) reads the recent videos
// and the log position they reflect from /demo/state, then opens one
// EventSource on videos/* resuming from that position: no race between reading
// and subscribing, and one connection however many videos are shown.
package demo

import (
	"context"
	"embed"
	"io/fs"
	"net/http"

	"github.com/labstack/echo/v4"

	"pgsse/db"
	"pgsse/stream"
)

//go:embed static
var static embed.FS

// States reads what the page shows first.
type States interface {
	// RecentVideos returns the log position and the newest limit videos, read
	// together.
	RecentVideos(ctx context.Context, limit int) (int64, []db.VideoState, error)
}

// pageVideos is how many videos the page lists.
const pageVideos = 50

// Register mounts the page at / and its state at /demo/state. The state lists
// every video, so with an authorizer it needs a token granting videos/*.
func Register(e *echo.Echo, states States, authorizer stream.Authorizer) {
	files, _ := fs.Sub(static, "static")
	assets := http.FileServer(http.FS(files))
	e.GET("/", echo.WrapHandler(assets))
	e.GET("/static/*", echo.WrapHandler(http.StripPrefix("/static/", assets)))
	e.GET("/demo/state", func(c echo.Context) error {
		if authorizer != nil {
			if _, err := authorizer.Authorize(c.Request(), []string{"videos/*"}); err != nil {
				return err
			}
		}
		position, videos, err := states.RecentVideos(c.Request().Context(), pageVideos)
		if err != nil {
			return echo.NewHTTPError(http.StatusServiceUnavailable, "database unavailable; retry shortly")
		}
		if videos == nil {
			videos = []db.VideoState{}
		}
		c.Response().Header().Set("Cache-Control", "no-store")
		return c.JSON(http.StatusOK, map[string]any{"position": position, "videos": videos})
	})
}
