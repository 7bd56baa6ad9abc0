package db

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"

	"github.com/lib/pq"
	"net/url"

	"github.com/amacneil/dbmate/v2/pkg/dbmate"
	_ "github.com/amacneil/dbmate/v2/pkg/driver/postgres" // registers dbmate's postgres driver

	"pgsse/migrations"
)

// migrationLock is the advisory lock (LockMigrate) that serialises
// migration runs across replicas (a run needs two connections of the pool: the
// lock's and attach_videos'). It is transaction-scoped and held by a
// transaction left open for the whole run: a transaction keeps its server
// connection even through a transaction-mode pooler (PgBouncer), where a session
// lock would be taken on one server connection and released on another.
var migrationLock = xactLock(LockMigrate, false)

// Migrate applies pending migrations. Many replicas may call it at once: the
// migration lock lets one apply them while the others wait and then find nothing
// to do. dbmate's progress lines go to progress, which may be nil.
func (s *Store) Migrate(ctx context.Context, progress io.Writer) error {
	if progress == nil {
		progress = io.Discard
	}
	u, err := url.Parse(s.url)
	if err != nil {
		return errBadURL
	}
	// Nothing to do is found by reading alone, so a replica whose schema is up to
	// date starts on a read-only database too.
	if done, err := s.MigrationsApplied(ctx); err == nil && done {
		return nil
	}

	lock, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate: begin: %w", err)
	}
	defer lock.Rollback() // releases the lock, after a failure
	if _, err := lock.ExecContext(ctx, migrationLock); err != nil {
		return fmt.Errorf("migrate: take advisory lock: %w", err)
	}

	m := dbmate.New(u)
	m.FS = migrations.FS
	m.MigrationsDir = []string{"."}
	// pgsse keeps its bookkeeping in its own schema, apart from any dbmate table
	// the application has in public.
	m.MigrationsTableName = "pgsse.schema_migrations"
	m.AutoDumpSchema = false
	m.Log = progress
	if err := m.Migrate(); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	// On another connection, in a transaction of its own: this one began before
	// dbmate created schema pgsse, and its backend may hold a stale "no such
	// schema" in its catalog cache. The lock still serialises it.
	if err := s.attachVideos(ctx); err != nil {
		return err
	}
	if err := lock.Commit(); err != nil {
		return fmt.Errorf("migrate: commit: %w", err)
	}
	return nil
}

// attachVideos puts pgsse's triggers on the application's videos table in the
// configured schema; it fails when the table is not there.
func (s *Store) attachVideos(ctx context.Context) error {
	create := s.videosSchema == DefaultVideosSchema
	if _, err := s.db.ExecContext(ctx, `SELECT pgsse.attach_videos($1, $2)`, s.videosSchema, create); err != nil {
		var pqErr *pq.Error
		if errors.As(err, &pqErr) && pqErr.Hint != "" {
			return fmt.Errorf("migrate: attach to %s: %w (%s)", s.videos, err, pqErr.Hint)
		}
		return fmt.Errorf("migrate: attach to %s: %w", s.videos, err)
	}
	return nil
}

// MigrationsApplied reports whether every embedded migration has been applied
// and pgsse's triggers are on the videos table of the configured schema.
func (s *Store) MigrationsApplied(ctx context.Context) (bool, error) {
	files, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil {
		return false, fmt.Errorf("list migrations: %w", err)
	}
	versions := make([]string, len(files))
	for i, f := range files {
		versions[i] = strings.SplitN(f, "_", 2)[0]
	}
	var missing int
	var attached bool
	err = s.db.QueryRowContext(ctx, `
		SELECT (SELECT count(*) FROM unnest($1::text[]) AS v(version)
		        WHERE NOT EXISTS (SELECT 1 FROM pgsse.schema_migrations m WHERE m.version = v.version)),
		       EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass($2) AND tgname = 'pgsse_video_status_insert')`,
		pq.Array(versions), s.videos).Scan(&missing, &attached)
	if err != nil {
		return false, fmt.Errorf("check migrations: %w", err)
	}
	return missing == 0 && attached, nil
}
