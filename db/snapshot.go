package db

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/lib/pq"

	"pgsse/event"
)

// Stateful reports whether topic has a state to snapshot: video topics do
// (processing_status); other kinds have none until the store reads one (see
// README, "Adding an event kind").
func (s *Store) Stateful(topic string) bool {
	_, ok := event.VideoID(topic)
	return ok
}

// Snapshot returns the log position and the current state of each of topics
// (all Stateful) that exists, as snapshot events with that position as id.
func (s *Store) Snapshot(ctx context.Context, topics []string) (int64, []event.Event, error) {
	ids := make([]string, 0, len(topics))
	for _, t := range topics {
		if id, ok := event.VideoID(t); ok {
			ids = append(ids, id)
		}
	}
	return s.VideoSnapshot(ctx, ids)
}

// VideoSnapshot returns the log position and, for each of videoIDs that exists,
// a video.status snapshot event carrying that position as its id. Both are read
// in one statement, so in one snapshot: the state reflects exactly the events up
// to the position, and a subscriber that continues from it misses nothing.
// Unknown ids get no event. An event's time is that of the video's last status
// change in the log; once that is pruned, updated_at (a timestamp without time
// zone is read in the session's TimeZone, as the application wrote it).
func (s *Store) VideoSnapshot(ctx context.Context, videoIDs []string) (position int64, out []event.Event, err error) {
	err = s.settled(ctx, "read video snapshot", func() (pending bool, err error) {
		pending, position, out, err = s.videoSnapshot(ctx, videoIDs)
		return pending, err
	})
	return position, out, err
}

// videoSnapshot reads a snapshot once. pending: a change to one of the videos is
// committed but not yet in the log, so the state is ahead of the position.
func (s *Store) videoSnapshot(ctx context.Context, videoIDs []string) (bool, int64, []event.Event, error) {
	rows, err := s.db.QueryContext(ctx, `
		SELECT head.position, head.pending, v.id, v.processing_status, coalesce(changed.time, v.updated_at::timestamptz)
		FROM (SELECT `+logHead+` AS position, EXISTS (
			SELECT 1 FROM pgsse.incoming i JOIN unnest($1::text[]) AS u(id)
			ON i.topic = 'videos/' || pgsse.topic_segment(u.id)) OR EXISTS (
			SELECT 1 FROM pgsse.incoming WHERE video_ids && $1::text[]) AS pending) AS head
		LEFT JOIN `+s.videos+` v ON v.id::text = ANY($1::text[])
		LEFT JOIN LATERAL (
			SELECT time FROM pgsse.events
			WHERE topic = 'videos/' || pgsse.topic_segment(v.id::text) AND kind = 'video.status'
			ORDER BY id DESC LIMIT 1) AS changed ON true
		ORDER BY v.id`, pq.Array(videoIDs))
	if err != nil {
		return false, 0, nil, fmt.Errorf("read video snapshot: %w", err)
	}
	defer rows.Close()

	var position int64
	var pending bool
	var out []event.Event
	for rows.Next() {
		var (
			id, status sql.NullString
			updated    sql.NullTime
		)
		if err := rows.Scan(&position, &pending, &id, &status, &updated); err != nil {
			return false, 0, nil, fmt.Errorf("read video snapshot: %w", err)
		}
		if !id.Valid {
			continue // no video matched: the one row carries only the position
		}
		topic, _ := event.VideoTopic(id.String) // asked for by topic, so it has one
		out = append(out, event.Event{
			Kind:     event.KindVideoStatus,
			Topic:    topic,
			Time:     updated.Time,
			Data:     &event.VideoStatus{VideoID: id.String, Status: status.String},
			Snapshot: true,
		})
	}
	if err := rows.Err(); err != nil {
		return false, 0, nil, fmt.Errorf("read video snapshot: %w", err)
	}
	for i := range out {
		out[i].ID = position
	}
	return pending, position, out, nil
}
