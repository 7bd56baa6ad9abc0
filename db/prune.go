package db

import (
	"context"
	"time"

	"github.com/rs/zerolog"
)

// PruneBatch is the number of events deleted per pruning transaction: small
// enough that each transaction is short.
const PruneBatch = 10000

// RunPruner prunes events older than retention every interval until ctx ends.
// Every replica may run one; they take turns through an advisory lock.
func (s *Store) RunPruner(ctx context.Context, retention, interval time.Duration, log zerolog.Logger) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		n, err := s.Prune(ctx, time.Now().Add(-retention), PruneBatch)
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn().Err(err).Msg("prune event log")
		case n > 0:
			log.Info().Int64("deleted", n).Dur("retention", retention).Msg("pruned event log")
		}
	}
}
