package db

import (
	"context"
	"fmt"
)

// Notify sends a notification on channel, through the pool.
func (s *Store) Notify(ctx context.Context, channel, payload string) error {
	if _, err := s.db.ExecContext(ctx, `SELECT pg_notify($1, $2)`, channel, payload); err != nil {
		return fmt.Errorf("notify %s: %w", channel, err)
	}
	return nil
}
