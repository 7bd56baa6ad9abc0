-- migrate:up

-- attach_videos puts pgsse's triggers on the application's table, named by its
-- schema (PGSSE_VIDEOS_SCHEMA, default public), never found through search_path.
-- pgsse calls it after every migration run, under the migration lock. It needs
-- TRIGGER on the table and no CREATE on its schema; only when create_if_absent
-- (the default schema) and no table named videos exists anywhere in the
-- database (a fresh development database) does it create one. Triggers on any
-- other table (another schema, or an empty one an earlier version created
-- through search_path) are dropped; existing ones are left as they are, so a
-- restart takes no lock on the application's table.
CREATE FUNCTION pgsse.attach_videos(schema text, create_if_absent boolean) RETURNS regclass
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    t         regclass := to_regclass(format('%I.videos', schema));
    elsewhere text;
    r         record;
BEGIN
    IF t IS NULL THEN
        SELECT string_agg(format('%I.%I', n.nspname, c.relname), ', ' ORDER BY n.nspname) INTO elsewhere
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relname = 'videos' AND c.relkind IN ('r', 'p', 'f')
          AND n.nspname NOT IN ('pg_catalog', 'information_schema');
        IF NOT create_if_absent OR elsewhere IS NOT NULL THEN
            RAISE EXCEPTION 'pgsse: no table %.videos', quote_ident(schema)
                USING ERRCODE = 'undefined_table',
                      HINT = CASE WHEN elsewhere IS NULL
                                  THEN 'create the application''s videos table there, or set PGSSE_VIDEOS_SCHEMA to the schema that holds it'
                                  ELSE format('found %s: set PGSSE_VIDEOS_SCHEMA to its schema', elsewhere) END;
        END IF;
        EXECUTE format($sql$
            CREATE TABLE %I.videos (
                id TEXT PRIMARY KEY,
                created_at TIMESTAMP WITH TIME ZONE NOT NULL,
                updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
                raw_file_path TEXT NOT NULL,
                processed_file_path TEXT,
                processing_status TEXT NOT NULL DEFAULT 'pending')$sql$, schema);
        t := to_regclass(format('%I.videos', schema));
    END IF;

    FOR r IN SELECT tgname, tgrelid::regclass AS rel FROM pg_trigger
             WHERE tgfoid = 'pgsse.video_status'::regproc AND tgrelid <> t LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', r.tgname, r.rel);
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = t AND tgname = 'pgsse_video_status_insert') THEN
        EXECUTE format('CREATE TRIGGER pgsse_video_status_insert AFTER INSERT ON %s
            FOR EACH ROW EXECUTE FUNCTION pgsse.video_status()', t);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = t AND tgname = 'pgsse_video_status_update') THEN
        EXECUTE format('CREATE TRIGGER pgsse_video_status_update AFTER UPDATE ON %s
            FOR EACH ROW WHEN (OLD.processing_status IS DISTINCT FROM NEW.processing_status)
            EXECUTE FUNCTION pgsse.video_status()', t);
    END IF;
    RETURN t;
END
$$;

-- migrate:down

DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT tgname, tgrelid::regclass AS rel FROM pg_trigger WHERE tgfoid = 'pgsse.video_status'::regproc LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', r.tgname, r.rel);
    END LOOP;
END
$$;
DROP FUNCTION pgsse.attach_videos(text, boolean);
