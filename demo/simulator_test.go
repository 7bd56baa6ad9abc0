package demo

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"pgsse/db"
	"pgsse/internal/dbtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestSimulator: every simulated video goes through the life a real worker gives
// it, written through SQL: pending, processing, progress rising through probe,
// transcode and package, then processed or failed.
func TestSimulator(t *testing.T) {
	url := dbtest.New(t)
	store, err := db.Open(url, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	sim := NewSimulator(store, zerolog.New(zerolog.NewTestWriter(t)))
	sim.Every, sim.Step = 20*time.Millisecond, time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	if err := sim.Run(ctx); err != nil {
		t.Fatal(err)
	}

	if err := store.Sequence(context.Background()); err != nil {
		t.Fatal(err)
	}
	rows, err := dbtest.Open(t, url).Query(`SELECT topic, kind, data FROM pgsse.events ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	type life struct {
		statuses []string
		percent  float64
		stage    int
	}
	videos := map[string]*life{}
	stageIndex := map[string]int{"probe": 0, "transcode": 1, "package": 2}
	for rows.Next() {
		var topic, kind string
		var data []byte
		if err := rows.Scan(&topic, &kind, &data); err != nil {
			t.Fatal(err)
		}
		var d struct {
			Status  string  `json:"status"`
			Percent float64 `json:"percent"`
			Stage   string  `json:"stage"`
		}
		_ = json.Unmarshal(data, &d)
		v := videos[topic]
		if v == nil {
			v = &life{}
			videos[topic] = v
		}
		switch kind {
		case "video.status":
			v.statuses = append(v.statuses, d.Status)
		case "video.progress":
			st, ok := stageIndex[d.Stage]
			if !ok || st < v.stage || d.Percent < v.percent || d.Percent > 100 || len(v.statuses) != 2 || v.statuses[1] != "processing" {
				t.Errorf("%s: progress %v%% %s out of order (after %v%%, statuses %v)", topic, d.Percent, d.Stage, v.percent, v.statuses)
			}
			v.percent, v.stage = d.Percent, st
		}
	}
	finished := 0
	for topic, v := range videos {
		if len(v.statuses) == 0 || v.statuses[0] != "pending" || (len(v.statuses) > 1 && v.statuses[1] != "processing") || len(v.statuses) > 3 {
			t.Errorf("%s: statuses %v", topic, v.statuses)
		}
		if len(v.statuses) == 3 {
			finished++
			if end := v.statuses[2]; end != "processed" && end != "failed" || end == "processed" && v.percent != 100 {
				t.Errorf("%s: ended %s at %v%%", topic, end, v.percent)
			}
		}
	}
	if finished == 0 {
		t.Errorf("no video finished in 1.5s: %d started", len(videos))
	}
}
