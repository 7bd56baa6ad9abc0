package db_test

import (
	"context"
	"fmt"
	"io/fs"
	neturl "net/url"
	"strings"
	"testing"
	"time"

	"github.com/amacneil/dbmate/v2/pkg/dbmate"

	"pgsse/internal/dbtest"
	"pgsse/migrations"
)

// migrationsBefore is the migration set as released before version: the
// files of the versions below it.
type migrationsBefore struct {
	fs.FS
	version string
}

func (f migrationsBefore) ReadDir(name string) ([]fs.DirEntry, error) {
	all, err := fs.ReadDir(f.FS, name)
	var old []fs.DirEntry
	for _, e := range all {
		if e.Name() < f.version {
			old = append(old, e)
		}
	}
	return old, err
}

// migrateRelease applies to url the migrations released before version, as
// that release's pgsse would have.
func migrateRelease(t *testing.T, url, version string) {
	t.Helper()
	u, _ := neturl.Parse(url)
	m := dbmate.New(u)
	m.FS, m.MigrationsDir, m.MigrationsTableName, m.AutoDumpSchema = migrationsBefore{migrations.FS, version}, []string{"."}, "pgsse.schema_migrations", false
	m.Log = &strings.Builder{}
	if err := m.Migrate(); err != nil {
		t.Fatalf("migrations before %s: %v", version, err)
	}
}

// TestMigrate_UpgradeInPlace: a database migrated and written by an earlier
// release keeps its events and ids when the new migrations are applied, an
// event committed but not yet sequenced then is sequenced after them, and the
// new triggers continue the log in commit order. pgsse's role, as
// deploy/postgres/roles.sql makes it, does not own the videos table: the
// triggers are replaced with the TRIGGER privilege alone. Each release: the
// one before the commit path work (20261204) and the one with row triggers
// (before 20261206).
func TestMigrate_UpgradeInPlace(t *testing.T) {
	for _, release := range []string{"20261204", "20261206"} {
		t.Run("before "+release, func(t *testing.T) {
			adminURL, url := appDatabase(t, "public", "pgsse_reader")
			migrateRelease(t, url, release)
			sqlDB, app := dbtest.Open(t, url), dbtest.Open(t, adminURL)
			var newer int
			if err := sqlDB.QueryRow(`SELECT count(*) FROM pgsse.schema_migrations WHERE version >= $1`, release).Scan(&newer); err != nil || newer != 0 {
				t.Fatalf("the release's set applied %d newer migrations (%v)", newer, err)
			}
			dbtest.Exec(t, sqlDB, `SELECT pgsse.attach_videos('public', false)`)
			for _, id := range []string{"old 1", "old2"} {
				dbtest.InsertVideo(t, app, id)
				dbtest.SetStatus(t, app, id, "processing")
			}
			dbtest.Exec(t, sqlDB, `SELECT pgsse.sequence(10000)`)
			dbtest.SetStatus(t, app, "old2", "failed") // committed, not sequenced
			var before string
			if err := sqlDB.QueryRow(`SELECT string_agg(id || ' ' || topic || ' ' || data::text, ';' ORDER BY id) FROM pgsse.events`).Scan(&before); err != nil {
				t.Fatal(err)
			}

			s := mustOpen(t, url)
			if err := s.Migrate(context.Background(), nil); err != nil {
				t.Fatalf("upgrade: %v", err)
			}
			var after string
			if err := sqlDB.QueryRow(`SELECT string_agg(id || ' ' || topic || ' ' || data::text, ';' ORDER BY id) FROM pgsse.events`).Scan(&after); err != nil {
				t.Fatal(err)
			}
			if after != before || strings.Count(before, ";") != 3 {
				t.Fatalf("the log changed in the upgrade:\nbefore %s\nafter  %s", before, after)
			}
			var perRow int
			if err := sqlDB.QueryRow(`SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.videos'::regclass AND tgtype & 1 = 1`).Scan(&perRow); err != nil || perRow != 0 {
				t.Errorf("row triggers left on videos: %d (%v), want the statement triggers only", perRow, err)
			}

			old := eventsAfter(t, s, 0)
			dbtest.SetStatus(t, app, "old 1", "processed")
			raws := eventsAfter(t, s, old[len(old)-1].ID)
			if len(old) != 5 || statusOf(t, old[4]).Status != "failed" || len(raws) != 1 || raws[0].ID <= old[4].ID ||
				raws[0].Topic != "videos/old%201" || statusOf(t, raws[0]).PreviousStatus == nil {
				t.Fatalf("after the upgrade: %+v then %+v, want old2's pending change, then old 1's on videos/old%%201", old, raws)
			}
		})
	}
}

// TestMigrate_LetsWritersThrough: the upgrade locks pgsse.incoming and videos
// while a writer's transaction sits open on them. Each lock is asked for
// 100 ms at a time, so other writers pass between the attempts instead of
// queueing behind the request until that transaction ends; once it ends, the
// upgrade completes.
func TestMigrate_LetsWritersThrough(t *testing.T) {
	url := dbtest.NewEmpty(t)
	migrateRelease(t, url, "20261206")
	sqlDB := dbtest.Open(t, url)
	dbtest.Exec(t, sqlDB, `SELECT pgsse.attach_videos('public', true)`)
	for _, id := range []string{"idle", "busy"} {
		dbtest.InsertVideo(t, sqlDB, id)
	}
	idle := dbtest.Begin(t, sqlDB, `UPDATE videos SET processing_status = 'processing' WHERE id = 'idle'`)

	s := mustOpen(t, url)
	migrated := make(chan error, 1)
	go func() { migrated <- s.Migrate(context.Background(), nil) }()
	time.Sleep(300 * time.Millisecond) // the upgrade is asking for its locks
	for i := range 5 {
		tx := dbtest.Begin(t, sqlDB, `SET LOCAL statement_timeout = '5s'`)
		if _, err := tx.Exec(`UPDATE videos SET processing_status = $1 WHERE id = 'busy'`, fmt.Sprint("step ", i)); err != nil {
			t.Fatalf("a writer while the upgrade waits: %v", err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-migrated:
		t.Fatalf("the upgrade ended (%v) while a transaction held its tables", err)
	default:
	}
	if err := idle.Commit(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-migrated:
		if err != nil {
			t.Fatalf("upgrade: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the upgrade did not complete once the transaction ended")
	}
	if raws := eventsAfter(t, s, 0); len(raws) != 8 {
		t.Errorf("%d events, want 8 (2 inserts, idle's change, busy's 5)", len(raws))
	}
}
