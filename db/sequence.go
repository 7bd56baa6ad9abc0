package db

import (
	"context"
	"database/sql"
	"fmt"

	"pgsse/event"
)

// sequenceBatch bounds one sequencer transaction: a huge application commit is
// moved in several short ones, in order.
const sequenceBatch = 10000

// Sequence moves every committed event from pgsse.incoming into the log, where
// it gets its id. Every replica sequences after each doorbell; calls from many
// replicas queue on the id lock, and all but the first find little to do. No
// application transaction waits for it.
func (s *Store) Sequence(ctx context.Context) error {
	for {
		batch, err := s.sequence(ctx, sql.NullInt64{}, sql.NullTime{}) // no position: nothing handed
		if err != nil {
			return err
		}
		if !batch.More {
			return nil
		}
	}
}

// Sequenced is what one sequencing transaction did, seen from a reader's
// position.
type Sequenced struct {
	// Handed: Events are every event after the position as of this
	// transaction's commit (none: the position is the log's head), so the reader
	// need not read the log. Otherwise another replica sequenced in between, the
	// events were too large to hand over together, or the log is not the one the
	// position is in: the reader reads the log as usual.
	Handed bool
	// More: pgsse.incoming held more than one batch; sequence again.
	More   bool
	Events []event.Raw
}

// SequenceAfter moves one batch of committed events from pgsse.incoming into the
// log and, when they directly follow the position, returns them: the replica
// that sequenced them need not read them back. Events are returned only once the
// sequencing transaction has committed.
func (s *Store) SequenceAfter(ctx context.Context, after event.Position) (Sequenced, error) {
	var at sql.NullTime
	if !after.Time.IsZero() {
		at = sql.NullTime{Time: after.Time, Valid: true}
	}
	return s.sequence(ctx, sql.NullInt64{Int64: after.ID, Valid: true}, at)
}

func (s *Store) sequence(ctx context.Context, afterID sql.NullInt64, afterTime sql.NullTime) (Sequenced, error) {
	const op = "sequence incoming events"
	rows, err := s.db.QueryContext(ctx, `
		SELECT handed, more, id, kind, topic, time, data FROM pgsse.sequence_events($1, $2, $3, $4)`,
		sequenceBatch, afterID, afterTime, MaxReadBytes)
	if err != nil {
		return Sequenced{}, fmt.Errorf("%s: %w", op, err)
	}
	defer rows.Close()
	var out Sequenced
	for rows.Next() {
		r, ok, err := scanJoined(rows, &out.Handed, &out.More)
		if err != nil {
			return Sequenced{}, fmt.Errorf("%s: %w", op, err)
		}
		if ok {
			out.Events = append(out.Events, r)
		}
	}
	// The commit's outcome arrives after the rows: until it is known, they are
	// not events.
	if err := rows.Err(); err != nil {
		return Sequenced{}, fmt.Errorf("%s: %w", op, err)
	}
	return out, nil
}

// settleAttempts bounds how often a state read is retried while changes to what
// it reads keep arriving faster than they are sequenced.
const settleAttempts = 5

// settled runs read, which reads state and the log position in one snapshot,
// until it reports no pending event: a change committed but not yet sequenced
// is in the state and not yet below the position, and a reader continuing from
// the position would see it twice. Sequencing in between moves it into the log.
func (s *Store) settled(ctx context.Context, op string, read func() (pending bool, err error)) error {
	for attempt := 1; ; attempt++ {
		pending, err := read()
		if err != nil || !pending {
			return err
		}
		if attempt == settleAttempts {
			return fmt.Errorf("%s: changes kept arriving ahead of the log in %d attempts", op, attempt)
		}
		if err := s.Sequence(ctx); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
	}
}

// VacuumIncoming vacuums pgsse.incoming, unless another session (a replica,
// autovacuum) is vacuuming it. Its rows live for milliseconds; autovacuum
// visits at most once a minute, and until then the sequencer's index reads
// step over every row deleted since.
func (s *Store) VacuumIncoming(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, `VACUUM (SKIP_LOCKED) pgsse.incoming`); err != nil {
		return fmt.Errorf("vacuum pgsse.incoming: %w", err)
	}
	return nil
}
