package db_test

import (
	"context"
	"io/fs"
	neturl "net/url"
	"strings"
	"testing"

	"github.com/amacneil/dbmate/v2/pkg/dbmate"

	"pgsse/internal/dbtest"
	"pgsse/migrations"
)

// before20261204 is the migration set as released before the commit-path
// work: the files of the versions before 20261204.
type before20261204 struct{ fs.FS }

func (f before20261204) ReadDir(name string) ([]fs.DirEntry, error) {
	all, err := fs.ReadDir(f.FS, name)
	var old []fs.DirEntry
	for _, e := range all {
		if e.Name() < "20261204" {
			old = append(old, e)
		}
	}
	return old, err
}

// TestMigrate_UpgradeInPlace: a database migrated and written by the previous
// release keeps its events and ids when the new migrations are applied, and
// the new triggers continue its log in commit order.
func TestMigrate_UpgradeInPlace(t *testing.T) {
	url := dbtest.NewEmpty(t)
	u, _ := neturl.Parse(url)
	m := dbmate.New(u)
	m.FS, m.MigrationsDir, m.MigrationsTableName, m.AutoDumpSchema = before20261204{migrations.FS}, []string{"."}, "pgsse.schema_migrations", false
	m.Log = &strings.Builder{}
	if err := m.Migrate(); err != nil {
		t.Fatal(err)
	}
	sqlDB := dbtest.Open(t, url)
	var newer int
	if err := sqlDB.QueryRow(`SELECT count(*) FROM pgsse.schema_migrations WHERE version >= '20261204'`).Scan(&newer); err != nil || newer != 0 {
		t.Fatalf("the previous release's set applied %d newer migrations (%v)", newer, err)
	}
	dbtest.Exec(t, sqlDB, `SELECT pgsse.attach_videos('public', true)`)
	for _, id := range []string{"old 1", "old2"} {
		dbtest.InsertVideo(t, sqlDB, id)
		dbtest.SetStatus(t, sqlDB, id, "processing")
	}
	dbtest.Exec(t, sqlDB, `SELECT pgsse.sequence(10000)`)
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
	old := eventsAfter(t, s, 0)
	dbtest.SetStatus(t, sqlDB, "old 1", "processed")
	raws := eventsAfter(t, s, old[len(old)-1].ID)
	if len(raws) != 1 || raws[0].ID <= old[len(old)-1].ID || raws[0].Topic != "videos/old%201" || statusOf(t, raws[0]).PreviousStatus == nil {
		t.Fatalf("after the upgrade: %+v, want old 1's change on videos/old%%201 after id %d", raws, old[len(old)-1].ID)
	}
}
