package db_test

import (
	"context"
	neturl "net/url"
	"os/exec"
	"strings"
	"testing"

	"pgsse/db"
	"pgsse/event"
	"pgsse/internal/dbtest"
)

// appDatabase returns an unmigrated database holding the application's videos
// table in schema, owned by the application's role, and the URL pgsse connects
// with as role: it owns nothing there, may not create in public (PostgreSQL
// 15's default), and has been granted what deploy/postgres/roles.sql grants
// (docs/database.md): CREATE on the database (for schema pgsse) and SELECT and
// TRIGGER on the table.
func appDatabase(t *testing.T, schema, role string) (admin string, pgsse string) {
	t.Helper()
	url := dbtest.NewEmpty(t)
	sqlDB := dbtest.Open(t, url)
	dbtest.Exec(t, sqlDB, `DO $$ BEGIN
		IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'app_owner') THEN CREATE ROLE app_owner; END IF;
	END $$`)
	t.Cleanup(func() {
		dbtest.Exec(t, sqlDB, `DROP OWNED BY `+role+`, app_owner`)
	})
	dbtest.Exec(t, sqlDB, `CREATE SCHEMA IF NOT EXISTS `+schema+` AUTHORIZATION app_owner`)
	dbtest.CreateVideos(t, sqlDB, schema+".videos")
	dbtest.Exec(t, sqlDB, `
		ALTER TABLE `+schema+`.videos OWNER TO app_owner;
		REVOKE CREATE ON SCHEMA public FROM PUBLIC`)
	if out, err := exec.Command("psql", url, "-v", "ON_ERROR_STOP=1", "-v", "pgsse_role="+role, "-v", "videos_schema="+schema,
		"-f", "../deploy/postgres/roles.sql").CombinedOutput(); err != nil {
		t.Fatalf("deploy/postgres/roles.sql: %v\n%s", err, out)
	}
	u, _ := neturl.Parse(url)
	u.User = neturl.User(role)
	return url, u.String()
}

// TestMigrate_VideosTableNamedExplicitly: pgsse finds the application's table in
// the configured schema, never through search_path. With the role named pgsse,
// "$user" used to resolve to pgsse's own schema: the migration made an empty
// pgsse.videos there and watched it, and writes to public.videos produced
// nothing; with a role that may not create in public, it failed ("permission
// denied for schema public") although the table existed.
func TestMigrate_VideosTableNamedExplicitly(t *testing.T) {
	for _, tc := range []struct{ name, schema, role string }{
		{"RoleNamedPgsse", "public", "pgsse"},
		{"RoleOwningNothingInPublic", "public", "pgsse_reader"},
		{"OtherSchema", "app", "pgsse_reader"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			adminURL, url := appDatabase(t, tc.schema, tc.role)
			s, err := db.Open(url, 0, db.VideosSchema(tc.schema))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			ctx := context.Background()
			if err := s.Migrate(ctx, nil); err != nil {
				t.Fatalf("migrate as %s, table in %s: %v", tc.role, tc.schema, err)
			}
			if ok, err := s.MigrationsApplied(ctx); err != nil || !ok {
				t.Errorf("MigrationsApplied = %v, %v; want true", ok, err)
			}

			app := dbtest.Open(t, adminURL) // the application writes its own table
			var stray bool
			if err := app.QueryRow(`SELECT to_regclass('pgsse.videos') IS NOT NULL`).Scan(&stray); err != nil || stray {
				t.Errorf("pgsse.videos exists (%v, %v): pgsse created a table of its own", stray, err)
			}
			dbtest.Exec(t, app, `INSERT INTO `+tc.schema+`.videos (id, created_at, updated_at, raw_file_path) VALUES ('a', now(), now(), '/raw/a')`)
			dbtest.Exec(t, app, `UPDATE `+tc.schema+`.videos SET processing_status = 'processed' WHERE id = 'a'`)
			if raws := eventsAfter(t, s, 0); len(raws) != 2 || statusOf(t, raws[1]).Status != "processed" {
				t.Fatalf("events %+v, want a's insert and its change to processed", raws)
			}
			_, snaps, err := s.VideoSnapshot(ctx, []string{"a"})
			if err != nil || len(snaps) != 1 || snaps[0].Data.(*event.VideoStatus).Status != "processed" {
				t.Errorf("snapshot %+v, %v; want a processed, read from %s.videos", snaps, err, tc.schema)
			}
		})
	}
}

// TestMigrate_VideosTableMissing: a schema without the table is refused with a
// message that says where the table is, and nothing is created there.
func TestMigrate_VideosTableMissing(t *testing.T) {
	adminURL, url := appDatabase(t, "public", "pgsse_reader")
	s, err := db.Open(url, 0, db.VideosSchema("app"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.Migrate(context.Background(), nil)
	if err == nil || !strings.Contains(err.Error(), "no table app.videos") || !strings.Contains(err.Error(), "found public.videos") {
		t.Fatalf("migrate with the table in another schema: %v, want no table app.videos, found public.videos", err)
	}
	if ok, _ := s.MigrationsApplied(context.Background()); ok {
		t.Error("MigrationsApplied = true with no table to watch")
	}
	var created bool
	if err := dbtest.Open(t, adminURL).QueryRow(`SELECT to_regclass('app.videos') IS NOT NULL`).Scan(&created); err != nil || created {
		t.Errorf("app.videos created (%v, %v)", created, err)
	}
}

// TestVideoSnapshot_NonTextID: an application whose ids are not text (here
// bigint) gets snapshots too; the ids are compared as text.
func TestVideoSnapshot_NonTextID(t *testing.T) {
	url := dbtest.NewEmpty(t)
	sqlDB := dbtest.Open(t, url)
	dbtest.Exec(t, sqlDB, `CREATE TABLE videos (id bigint PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now(),
		updated_at timestamptz NOT NULL DEFAULT now(), processing_status text NOT NULL DEFAULT 'pending')`)
	s := mustOpen(t, url)
	if err := s.Migrate(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	dbtest.Exec(t, sqlDB, `INSERT INTO videos (id) VALUES (7)`)
	_, snaps, err := s.VideoSnapshot(context.Background(), []string{"7", "x"})
	if err != nil || len(snaps) != 1 || snaps[0].Topic != "videos/7" {
		t.Fatalf("snapshot %+v, %v; want video 7's", snaps, err)
	}
}

// TestMigrate_ReadOnlyWhenUpToDate: with every migration applied, Migrate only
// reads, so pgsse starts on a read-only database (it used to fail: dbmate
// creates its schema and table IF NOT EXISTS, which a read-only transaction
// refuses).
func TestMigrate_ReadOnlyWhenUpToDate(t *testing.T) {
	url := dbtest.New(t)
	sqlDB := dbtest.Open(t, url)
	var dbName string
	if err := sqlDB.QueryRow(`SELECT current_database()`).Scan(&dbName); err != nil {
		t.Fatal(err)
	}
	dbtest.Exec(t, sqlDB, `ALTER DATABASE `+dbName+` SET default_transaction_read_only = on`)
	if err := mustOpen(t, url).Migrate(context.Background(), nil); err != nil {
		t.Fatalf("migrate an up-to-date read-only database: %v", err)
	}
}
