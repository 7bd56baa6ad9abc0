package main

import (
	"context"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"pgsse/db"
)

// migrate is pgsse migrate: apply the migrations once and exit.
func migrate(ctx context.Context, cfg config, log zerolog.Logger) error {
	store, err := db.Open(cfg.DatabaseURL, 2, db.VideosSchema(cfg.VideosSchema))
	if err != nil {
		return err
	}
	defer store.Close()
	return store.Migrate(ctx, migrationLog{log})
}

// prepareSchema applies the migrations, or with PGSSE_MIGRATE=false waits until
// someone else (the migrate init container, an operator) has.
func prepareSchema(ctx context.Context, cfg config, store *db.Store, log zerolog.Logger, ready *readiness) error {
	// First on the pool with timeouts, retried while the database is away or
	// stalled: a restart, the common case, never waits on a connection without
	// deadlines.
	backoff := 100 * time.Millisecond
	for logged := false; ; {
		ok, err := store.MigrationsApplied(ctx)
		if ok {
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		if cfg.Migrate && (err == nil || !db.Classify(err).Outage) {
			break // behind (or never migrated): migrate
		}
		if !logged {
			if cfg.Migrate {
				log.Warn().Err(err).Msg("migrations not checked: database unavailable; retrying")
			} else {
				log.Info().AnErr("cause", err).Msg("waiting for migrations (PGSSE_MIGRATE=false): run pgsse migrate")
			}
			logged = true
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, db.MaxRetryBackoff)
	}
	// On a pool of its own, without the I/O timeout: a migration may rightly
	// wait long on the application's locks (CREATE TRIGGER on videos).
	migrations, err := db.Open(cfg.DatabaseURL, 2, db.VideosSchema(cfg.VideosSchema))
	if err != nil {
		return err
	}
	defer migrations.Close()
	return migrateWithRetry(ctx, migrations, log, ready.migrationFault.Store)
}

// migrationLog turns dbmate's progress lines into log lines.
type migrationLog struct{ log zerolog.Logger }

func (m migrationLog) Write(p []byte) (int, error) {
	if line := strings.TrimSpace(string(p)); line != "" {
		m.log.Info().Str("dbmate", line).Msg("migration")
	}
	return len(p), nil
}

// migrateWithRetry applies the migrations until it succeeds or ctx ends;
// onFault (if not nil) hears of each failure's classification, and of nil once
// they are applied.
func migrateWithRetry(ctx context.Context, store *db.Store, log zerolog.Logger, onFault func(*db.Fault)) error {
	if onFault == nil {
		onFault = func(*db.Fault) {}
	}
	backoff := 250 * time.Millisecond
	for {
		err := store.Migrate(ctx, migrationLog{log})
		if err == nil {
			onFault(nil)
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		ev := log.Warn()
		f := db.Classify(err)
		if !f.Outage {
			ev = log.Error().Str("sqlstate", f.SQLState).Str("hint", f.Hint)
		}
		onFault(&f)
		ev.Err(err).Dur("retry_in", backoff).Msg("migrations not applied; retrying")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, db.MaxRetryBackoff)
	}
}
