package e2e

import (
	"strings"
	"testing"

	"pgsse/internal/dbtest"
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
