package db_test

import (
	"testing"

	"pgsse/internal/dbtest"
)

// TestVideosTrigger_WriterSearchPath: the videos triggers run as pgsse's role
// without a SET search_path of their own (a GUC level per call), so a writer's
// search_path must reach nothing in them: here operators (on text, arrays and
// integers), functions and a type that would break them, first on the path
// and pg_catalog after them, change nothing about the events.
func TestVideosTrigger_WriterSearchPath(t *testing.T) {
	url := dbtest.New(t)
	sqlDB, s := dbtest.Open(t, url), mustOpen(t, url)
	dbtest.InsertVideo(t, sqlDB, "a b")
	dbtest.Exec(t, sqlDB, `
		CREATE SCHEMA trap;
		CREATE FUNCTION trap.fail(a text, b text) RETURNS text LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'trap reached'; END $$;
		CREATE OPERATOR trap.|| (LEFTARG = text, RIGHTARG = text, FUNCTION = trap.fail);
		CREATE OPERATOR trap.= (LEFTARG = text, RIGHTARG = text, FUNCTION = trap.fail);
		CREATE OPERATOR trap.~ (LEFTARG = text, RIGHTARG = text, FUNCTION = trap.fail);
		CREATE FUNCTION trap.octet_length(text) RETURNS integer LANGUAGE sql AS 'SELECT 1000';
		CREATE FUNCTION trap.fail_arrays(a text[], b text[]) RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'trap reached'; END $$;
		CREATE OPERATOR trap.= (LEFTARG = text[], RIGHTARG = text[], FUNCTION = trap.fail_arrays);
		CREATE FUNCTION trap.fail_integers(a integer, b integer) RETURNS integer LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'trap reached'; END $$;
		CREATE OPERATOR trap.+ (LEFTARG = integer, RIGHTARG = integer, FUNCTION = trap.fail_integers);
		CREATE FUNCTION trap.cardinality(anyarray) RETURNS integer LANGUAGE sql AS 'SELECT 0';
		CREATE DOMAIN trap.text AS integer;`)
	before := eventsAfter(t, s, 0)
	tx := dbtest.Begin(t, sqlDB, `SET LOCAL search_path = trap, pg_catalog, public`)
	if _, err := tx.Exec(`UPDATE public.videos SET processing_status = 'processed' WHERE id OPERATOR(pg_catalog.=) 'a b'`); err != nil {
		t.Fatalf("UPDATE with the writer's search_path: %v", err)
	}
	if _, err := tx.Exec(`INSERT INTO public.videos (id, created_at, updated_at, raw_file_path) VALUES ('c', now(), now(), '/c')`); err != nil {
		t.Fatalf("INSERT with the writer's search_path: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	raws := eventsAfter(t, s, before[len(before)-1].ID)
	if len(raws) != 2 || raws[0].Topic != "videos/a%20b" || statusOf(t, raws[0]).Status != "processed" || statusOf(t, raws[0]).VideoID != "a b" ||
		raws[1].Topic != "videos/c" || statusOf(t, raws[1]).Status != "pending" {
		t.Fatalf("events %+v, want a b's change to processed on videos/a%%20b, then c's insert", raws)
	}
}
