package db

import (
	"context"
	"fmt"
)

// sequenceBatch bounds one sequencer transaction: a huge application commit is
// moved in several short ones, in order.
const sequenceBatch = 10000

// Sequence moves every committed event from pgsse.incoming into the log, where
// it gets its id, and returns how many it moved. Every replica calls it after
// each doorbell; calls from many replicas queue on the id lock, and all but the
// first find little to do. No application transaction waits for it.
func (s *Store) Sequence(ctx context.Context) (int, error) {
	total := 0
	for {
		var moved int
		if err := s.db.QueryRowContext(ctx, `SELECT pgsse.sequence($1)`, sequenceBatch).Scan(&moved); err != nil {
			return total, fmt.Errorf("sequence incoming events: %w", err)
		}
		total += moved
		if moved < sequenceBatch {
			return total, nil
		}
	}
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
		if _, err := s.Sequence(ctx); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
	}
}
