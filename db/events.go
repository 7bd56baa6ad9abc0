package db

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/lib/pq"

	"pgsse/event"
)

// logHead is the SQL for the log position a reader starts from: the newest
// committed id, or the horizon when everything has been pruned.
const logHead = `greatest((SELECT max(id) FROM pgsse.events), (SELECT pruned_through FROM pgsse.horizon))`

// Head returns the log position a new reader starts from: the newest committed
// event, or the horizon (with no time) when the log is empty. Every event
// committed later has a higher id.
func (s *Store) Head(ctx context.Context) (event.Position, error) {
	var head int64
	var at sql.NullTime
	err := s.db.QueryRowContext(ctx, `
		SELECT h.id, e.time FROM (SELECT `+logHead+` AS id) h
		LEFT JOIN pgsse.events e ON e.id = h.id`).Scan(&head, &at)
	if err != nil {
		return event.Position{}, fmt.Errorf("read log head: %w", err)
	}
	return event.Position{ID: head, Time: at.Time}, nil
}

// LogBounds returns the log's extent. horizon: every event at or below it may have
// been pruned. newest: the highest id ever handed out (committed or not), so a
// position above it was issued by a log that no longer exists.
func (s *Store) LogBounds(ctx context.Context) (horizon, newest int64, err error) {
	err = s.db.QueryRowContext(ctx, `
		SELECT (SELECT pruned_through FROM pgsse.horizon),
		       (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM pgsse.event_id_seq)`).Scan(&horizon, &newest)
	if err != nil {
		return 0, 0, fmt.Errorf("read log bounds: %w", err)
	}
	return horizon, newest, nil
}

// MaxReadBytes bounds the data of one read of the log (EventsAfter,
// TopicEvents) besides its row limit: a batch of large events must not take
// hundreds of megabytes per reader. A single event larger than it is still read,
// alone.
const MaxReadBytes = 1 << 20

// bounded wraps a query of candidate events (id, kind, topic, time, data,
// size), in id order and LIMIT limitParam, so that only those whose data fits
// in bytesParam together come back (always the first), each with more: whether events
// beyond the last one returned may remain (the row limit was reached, or the
// byte bound cut the batch).
func bounded(candidates, limitParam, bytesParam string) string {
	return `SELECT id, kind, topic, time, data, (n = ` + limitParam + ` OR (n > 1 AND total > ` + bytesParam + `)) AS more FROM (
			SELECT *, count(*) OVER () AS n, sum(sz) OVER () AS total,
			       sum(sz) OVER (ORDER BY id) AS upto FROM (
				SELECT id, kind, topic, time, data, coalesce(size, pg_column_size(data)) AS sz
				FROM (` + candidates + `) candidates) c) m
			WHERE upto <= ` + bytesParam + ` OR upto = sz`
}

// EventsAfter returns up to limit events after the position, in id order,
// within MaxReadBytes, and whether more may follow. It fails with
// event.ErrLogReplaced when the log no longer holds the event at the position
// (another time, or none) and the pruner did not take it.
func (s *Store) EventsAfter(ctx context.Context, after event.Position, limit int) ([]event.Raw, bool, error) {
	op := fmt.Sprintf("read events after %d", after.ID)
	var at sql.NullTime
	if !after.Time.IsZero() {
		at = sql.NullTime{Time: after.Time, Valid: true}
	}
	// One statement, so one snapshot: the check and the events agree.
	rows, err := s.db.QueryContext(ctx, `
		SELECT c.same, e.more, e.id, e.kind, e.topic, e.time, e.data
		FROM (SELECT coalesce(
			(SELECT time = $2 FROM pgsse.events WHERE id = $1),
			(SELECT pruned_through >= $1 FROM pgsse.horizon)) AS same) c
		LEFT JOIN LATERAL (`+bounded(`
			SELECT id, kind, topic, time, data, size FROM pgsse.events
			WHERE id > $1 ORDER BY id LIMIT $3`, "$3", "$4")+`) e ON c.same
		ORDER BY e.id`, after.ID, at, limit, MaxReadBytes)
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", op, err)
	}
	defer rows.Close()
	var out []event.Raw
	var more bool
	for rows.Next() {
		var same bool
		r, ok, err := scanJoined(rows, &same, &more)
		if err != nil {
			return nil, false, fmt.Errorf("%s: %w", op, err)
		}
		if !same {
			return nil, false, fmt.Errorf("%s: %w", op, event.ErrLogReplaced)
		}
		if ok {
			out = append(out, r)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("%s: %w", op, err)
	}
	return out, more, nil
}

// TopicEvents returns up to limit events in (after, through] whose topic is one of
// topics or starts with one of prefixes, in id order and within MaxReadBytes,
// whether more may follow, and the horizon as of the same read: when it is
// above after, the pruner may have deleted some of the events asked for before
// they were read.
func (s *Store) TopicEvents(ctx context.Context, after, through int64, topics, prefixes []string, limit int) (events []event.Raw, more bool, horizon int64, err error) {
	op := fmt.Sprintf("read topic events in (%d, %d]", after, through)
	// One statement, so one snapshot: the events and the horizon agree.
	rows, err := s.db.QueryContext(ctx, `
		SELECT h.pruned_through, e.more, e.id, e.kind, e.topic, e.time, e.data
		FROM pgsse.horizon h LEFT JOIN LATERAL (`+bounded(`
			SELECT id, kind, topic, time, data, size FROM pgsse.events
			WHERE id > $1 AND id <= $2
			  AND (topic = ANY($3::text[]) OR topic ^@ ANY($4::text[]))
			ORDER BY id LIMIT $5`, "$5", "$6")+`) e ON true
		ORDER BY e.id`, after, through, pq.Array(topics), pq.Array(prefixes), limit, MaxReadBytes)
	if err != nil {
		return nil, false, 0, fmt.Errorf("%s: %w", op, err)
	}
	defer rows.Close()
	for rows.Next() {
		r, ok, err := scanJoined(rows, &horizon, &more)
		if err != nil {
			return nil, false, 0, fmt.Errorf("%s: %w", op, err)
		}
		if ok {
			events = append(events, r)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, false, 0, fmt.Errorf("%s: %w", op, err)
	}
	return events, more, horizon, nil
}

// scanJoined scans a row of one column (into head) left-joined with an event
// and its more flag; ok is false when the row has no event.
func scanJoined(rows *sql.Rows, head any, more *bool) (r event.Raw, ok bool, err error) {
	var id sql.NullInt64
	var kind, topic sql.NullString
	var at sql.NullTime
	var data []byte
	var hasMore sql.NullBool
	if err := rows.Scan(head, &hasMore, &id, &kind, &topic, &at, &data); err != nil {
		return r, false, err
	}
	*more = hasMore.Bool
	return event.Raw{ID: id.Int64, Kind: kind.String, Topic: topic.String, Time: at.Time, Data: data}, id.Valid, nil
}

// Prune deletes events older than before, batch rows per transaction, and moves
// the horizon past them. It deletes in id order up to the first event that is
// recent enough, so it reads only rows it deletes. Writers never wait for it: it
// touches only old rows. When another replica is pruning, it returns 0 at once.
func (s *Store) Prune(ctx context.Context, before time.Time, batch int) (int64, error) {
	// The boundary is fixed once, from rows committed now: when every event is
	// old it is one past the newest, so events committed during the run (which get
	// higher ids) are never deleted.
	var boundary int64
	err := s.db.QueryRowContext(ctx, `
		SELECT coalesce(
			(SELECT id FROM pgsse.events WHERE time >= $1 ORDER BY id LIMIT 1),
			(SELECT max(id) + 1 FROM pgsse.events),
			0)`, before).Scan(&boundary)
	if err != nil {
		return 0, fmt.Errorf("prune: find first retained event: %w", err)
	}

	var total int64
	for {
		n, err := s.pruneBatch(ctx, boundary, batch)
		total += n
		if err != nil || n < int64(batch) {
			return total, err
		}
	}
}

func (s *Store) pruneBatch(ctx context.Context, below int64, batch int) (int64, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("prune: begin: %w", err)
	}
	defer tx.Rollback()

	var locked bool
	if err := tx.QueryRowContext(ctx, xactLock(LockPrune, true)).Scan(&locked); err != nil {
		return 0, fmt.Errorf("prune: take advisory lock: %w", err)
	}
	if !locked {
		return 0, nil
	}
	var n, through int64
	err = tx.QueryRowContext(ctx, `
		WITH gone AS (
			DELETE FROM pgsse.events
			WHERE id IN (SELECT id FROM pgsse.events WHERE id < $1 ORDER BY id LIMIT $2)
			RETURNING id
		)
		SELECT count(*), coalesce(max(id), 0) FROM gone`, below, batch).Scan(&n, &through)
	if err != nil {
		return 0, fmt.Errorf("prune: delete events below %d: %w", below, err)
	}
	if n > 0 {
		if _, err := tx.ExecContext(ctx, `
			UPDATE pgsse.horizon SET pruned_through = greatest(pruned_through, $1)`, through); err != nil {
			return 0, fmt.Errorf("prune: move horizon to %d: %w", through, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("prune: commit: %w", err)
	}
	return n, nil
}
