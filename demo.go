package main

import (
	"context"
	"os/signal"
	"syscall"

	"github.com/rs/zerolog"

	"pgsse/db"
	"pgsse/demo"
)

// simulate runs the demo's processing simulator until a signal.
func simulate(ctx context.Context, cfg config, log zerolog.Logger) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	store, err := db.Open(cfg.DatabaseURL, 4, db.VideosSchema(cfg.VideosSchema))
	if err != nil {
		return err
	}
	defer store.Close()
	if err := migrateWithRetry(ctx, store, log, nil); err != nil || ctx.Err() != nil {
		return err
	}
	log.Info().Msg("demo simulator running")
	return demo.NewSimulator(store, log).Run(ctx)
}
