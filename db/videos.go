package db

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"pgsse/event"
)

// The statements below are the ones the legacy upload API and processing worker
// run; the demo simulator runs them to behave exactly like those writers.

// InsertVideo inserts a pending video, as the upload API does.
func (s *Store) InsertVideo(ctx context.Context, id, rawPath string) error {
	_, err := s.db.ExecContext(ctx, `
		INSERT INTO `+s.videos+` (id, created_at, updated_at, raw_file_path) VALUES ($1, now(), now(), $2)`, id, rawPath)
	if err != nil {
		return fmt.Errorf("insert video %s: %w", id, err)
	}
	return nil
}

// SetVideoStatus sets a video's processing_status, as the worker does.
func (s *Store) SetVideoStatus(ctx context.Context, id, status string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE `+s.videos+` SET processing_status = $2 WHERE id = $1`, id, status)
	if err != nil {
		return fmt.Errorf("set video %s status %s: %w", id, status, err)
	}
	return nil
}

// PublishProgress publishes a video.progress event through pgsse.publish.
func (s *Store) PublishProgress(ctx context.Context, id string, percent float64, stage string) error {
	data, err := json.Marshal(map[string]any{"video_id": id, "percent": percent, "stage": stage})
	if err != nil {
		return fmt.Errorf("publish progress of %s: %w", id, err)
	}
	topic, _ := event.VideoTopic(id) // the demo's ids always have one
	if _, err := s.db.ExecContext(ctx, `SELECT pgsse.publish('video.progress', $1, $2)`, topic, string(data)); err != nil {
		return fmt.Errorf("publish progress of %s: %w", id, err)
	}
	return nil
}

// VideoState is a video as the demo page first shows it.
type VideoState struct {
	ID        string    `json:"id"`
	Status    string    `json:"status"`
	CreatedAt time.Time `json:"created_at"`
	Percent   *float64  `json:"percent"` // of its latest video.progress event, if any
	Stage     string    `json:"stage,omitempty"`
}

// RecentVideos returns the log position and the newest limit videos, oldest
// first, with their latest progress, all read in one statement: the state
// reflects exactly the events up to the position.
func (s *Store) RecentVideos(ctx context.Context, limit int) (position int64, out []VideoState, err error) {
	err = s.settled(ctx, "read recent videos", func() (pending bool, err error) {
		pending, position, out, err = s.recentVideos(ctx, limit)
		return pending, err
	})
	return position, out, err
}

func (s *Store) recentVideos(ctx context.Context, limit int) (bool, int64, []VideoState, error) {
	rows, err := s.db.QueryContext(ctx, `
		SELECT head.position, head.pending, v.id, v.processing_status, v.created_at,
		       (p.data->>'percent')::float8, coalesce(p.data->>'stage', '')
		FROM (SELECT `+logHead+` AS position,
			EXISTS (SELECT 1 FROM pgsse.incoming WHERE topic ^@ 'videos/' OR video_ids IS NOT NULL) AS pending) AS head
		LEFT JOIN LATERAL (
			SELECT id, processing_status, created_at FROM `+s.videos+` ORDER BY created_at DESC, id LIMIT $1
		) AS v ON true
		LEFT JOIN LATERAL (
			SELECT data FROM pgsse.events e
			WHERE e.topic = 'videos/' || pgsse.topic_segment(v.id::text) AND e.kind = 'video.progress'
			ORDER BY e.id DESC LIMIT 1
		) AS p ON true
		ORDER BY v.created_at, v.id`, limit)
	if err != nil {
		return false, 0, nil, fmt.Errorf("read recent videos: %w", err)
	}
	defer rows.Close()
	var position int64
	var pending bool
	var out []VideoState
	for rows.Next() {
		var (
			id, status sql.NullString
			created    sql.NullTime
			percent    sql.NullFloat64
			stage      string
		)
		if err := rows.Scan(&position, &pending, &id, &status, &created, &percent, &stage); err != nil {
			return false, 0, nil, fmt.Errorf("read recent videos: %w", err)
		}
		if !id.Valid {
			continue // no videos: the row carries only the position
		}
		v := VideoState{ID: id.String, Status: status.String, CreatedAt: created.Time, Stage: stage}
		if percent.Valid {
			v.Percent = &percent.Float64
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return false, 0, nil, fmt.Errorf("read recent videos: %w", err)
	}
	return pending, position, out, nil
}
