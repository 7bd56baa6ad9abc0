-- migrate:up

-- with_brief_locks runs statements that lock a table writers use (incoming,
-- videos). A lock request waits behind every transaction using the table (one
-- left idle, too), and the writers arriving after it wait behind the request;
-- so each attempt waits at most 100 ms, and after a pause the statements are
-- tried again, for 20 s, before it gives up with an error that says what
-- holds the table.
CREATE FUNCTION pgsse.with_brief_locks(what text, statements text[]) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog SET lock_timeout = '100ms' AS $$
DECLARE
    stmt text;
BEGIN
    FOR attempt IN 1 .. 100 LOOP
        BEGIN
            FOREACH stmt IN ARRAY statements LOOP
                EXECUTE stmt;
            END LOOP;
            RETURN;
        EXCEPTION WHEN lock_not_available THEN
            PERFORM pg_sleep(0.1);
        END;
    END LOOP;
    RAISE EXCEPTION 'pgsse: % stayed locked by transactions using it for 20 s', what
        USING ERRCODE = 'lock_not_available',
              HINT = 'a transaction left open on it (pg_stat_activity: idle in transaction) holds it; end it, and migrate again';
END
$$;
REVOKE ALL ON FUNCTION pgsse.with_brief_locks(text, text[]) FROM PUBLIC;

-- The sequencer reads incoming in seq order through an index: a scan of the
-- heap read every page its dead rows had left, until autovacuum came (a
-- minute: 1 200 pages, 3 ms a call, under 2 000 events a second), and pgsse
-- vacuums it often instead (listener.vacuumGap). Vacuum never truncates it: a
-- truncation locks out writers.
SELECT pgsse.with_brief_locks('pgsse.incoming', ARRAY[
    'ALTER TABLE pgsse.incoming
        ALTER COLUMN topic DROP NOT NULL,
        ALTER COLUMN data DROP NOT NULL,
        ADD COLUMN video_ids text[],
        ADD COLUMN statuses text[],
        ADD COLUMN previous_statuses text[],
        SET (vacuum_truncate = false)',
    'CREATE INDEX incoming_seq ON pgsse.incoming (seq)']);

-- A row is one event (kind, topic, data: publish) or a statement's videos
-- (video_ids, statuses, previous_statuses; NULL previous_statuses: they were
-- inserted). No CHECK says so: a constraint is compiled at every insert, a
-- tenth of a writer's single-row UPDATE.

-- The videos triggers fire once per statement, not once per row
-- (BENCHMARKS.md, "The commit path"). A row trigger inserted into incoming once
-- per changed row, and an insert from a trigger sets up the executor each time:
-- a 10 000-row UPDATE ran 5 times as long as without pgsse. A statement trigger
-- reads the statement's transition tables and appends one row to incoming per
-- 10 000 changed videos, holding their ids and statuses as arrays; the
-- sequencer (move_incoming, below) turns those into video.status events,
-- outside the writer's transaction.
--
-- The arrays are read from the transition tables in their order, which is the
-- order the rows were changed; element i of each is one row (old and new
-- images are captured together, row by row), so the statuses pair up without a
-- key. An UPDATE whose statuses all stay the same (the arrays are equal)
-- appends nothing; its other elements are filtered by the sequencer, which
-- publishes only where the status as text changed (the row trigger compared
-- the column's own type with IS DISTINCT FROM; the event carries text).
--
-- Per statement, not per row, so the cost of a pinned search_path would be
-- small; still, like video_status before it, it qualifies every name, type and
-- operator, since it runs for every writer (TestVideosTrigger_WriterSearchPath).
-- Transition tables are found before any table of the writer's search_path.
CREATE FUNCTION pgsse.video_statuses() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    ids      pg_catalog.text[];
    statuses pg_catalog.text[];
    previous pg_catalog.text[];
BEGIN
    -- One query each way: every statement run from plpgsql sets up an executor.
    IF TG_OP OPERATOR(pg_catalog.=) 'UPDATE' THEN
        SELECT ARRAY(SELECT id::pg_catalog.text FROM new_videos),
               ARRAY(SELECT processing_status::pg_catalog.text FROM new_videos),
               ARRAY(SELECT processing_status::pg_catalog.text FROM old_videos)
        INTO ids, statuses, previous;
        IF previous OPERATOR(pg_catalog.=) statuses THEN
            RETURN NULL; -- no status changed, or no row
        END IF;
    ELSE
        SELECT ARRAY(SELECT id::pg_catalog.text FROM new_videos),
               ARRAY(SELECT processing_status::pg_catalog.text FROM new_videos)
        INTO ids, statuses;
    END IF;
    -- 10 000 videos per row of incoming: the sequencer moves about one batch
    -- of events per transaction, and at least one row. (A loop of VALUES, not
    -- one INSERT from generate_series: its plan is cached, not made per call.)
    FOR i IN 1 .. pg_catalog.cardinality(ids) BY 10000 LOOP
        INSERT INTO pgsse.incoming (kind, time, video_ids, statuses, previous_statuses)
        VALUES ('video.status', pg_catalog.clock_timestamp(), ids[i : i OPERATOR(pg_catalog.+) 9999],
                statuses[i : i OPERATOR(pg_catalog.+) 9999], previous[i : i OPERATOR(pg_catalog.+) 9999]);
    END LOOP;
    IF FOUND THEN
        PERFORM pg_catalog.pg_notify('pgsse_incoming', '');
    END IF;
    RETURN NULL;
END
$$;

-- video_triggers puts pgsse's two triggers on t unless they are there already
-- (a restart takes no lock on the application's table): statement triggers,
-- except on a partitioned or foreign table, which keep the row triggers
-- (video_status): row triggers are cloned onto partitions, so a writer naming
-- a partition is still seen, and foreign tables have no transition tables.
-- CREATE OR REPLACE TRIGGER swaps an earlier version's trigger in one step (no
-- write goes unseen), with the TRIGGER privilege alone (DROP TRIGGER needs the
-- table's owner).
--
-- Creating a trigger locks the table against writes: with_brief_locks.
CREATE FUNCTION pgsse.video_triggers(t regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    per_row boolean := (SELECT relkind IN ('p', 'f') FROM pg_class WHERE oid = t);
    fn      regproc := CASE WHEN per_row THEN 'pgsse.video_status'::regproc ELSE 'pgsse.video_statuses'::regproc END;
    ddl     text[];
BEGIN
    SELECT array_agg(CASE WHEN per_row
        THEN format('CREATE OR REPLACE TRIGGER %I AFTER %s ON %s FOR EACH ROW %s EXECUTE FUNCTION pgsse.video_status()',
                    'pgsse_video_status_' || op, upper(op), t,
                    CASE op WHEN 'update' THEN 'WHEN (OLD.processing_status IS DISTINCT FROM NEW.processing_status)' ELSE '' END)
        ELSE format('CREATE OR REPLACE TRIGGER %I AFTER %s ON %s REFERENCING %s NEW TABLE AS new_videos FOR EACH STATEMENT EXECUTE FUNCTION pgsse.video_statuses()',
                    'pgsse_video_status_' || op, upper(op), t,
                    CASE op WHEN 'update' THEN 'OLD TABLE AS old_videos' ELSE '' END) END ORDER BY op)
    INTO ddl
    FROM unnest(ARRAY['insert', 'update']) AS op
    WHERE NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = t AND tgname = 'pgsse_video_status_' || op
                      AND tgfoid = fn AND (tgtype & 1 = 1) = per_row); -- bit 0: FOR EACH ROW
    IF ddl IS NOT NULL THEN
        PERFORM pgsse.with_brief_locks(t::text, ddl);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION pgsse.attach_videos(schema text, create_if_absent boolean) RETURNS regclass
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
             WHERE tgfoid IN ('pgsse.video_status'::regproc, 'pgsse.video_statuses'::regproc)
               AND tgrelid <> t AND tgparentid = 0 LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', r.tgname, r.rel);
    END LOOP;
    PERFORM pgsse.video_triggers(t);
    RETURN t;
END
$$;

-- move_incoming moves events from incoming into the log, in seq order and
-- within a row in the order of its videos, until batch events are moved (at
-- least one row of incoming, whole), and reports the ids it drew and their
-- size; more: incoming held more. The caller holds the id lock (it is taken
-- here again, which is free within a transaction). Rows are read once,
-- through the index on seq, and deleted by their tuple ids.
CREATE FUNCTION pgsse.move_incoming(batch integer,
    OUT moved integer, OUT first_id bigint, OUT last_id bigint, OUT bytes bigint, OUT more boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1885827955, 1);
    WITH waiting AS MATERIALIZED (
        SELECT w.*, sum(coalesce(cardinality(w.video_ids), 1)) OVER (ORDER BY w.seq) AS upto,
               count(*) OVER () AS listed
        FROM (SELECT ctid AS row_id, seq, kind, topic, time, data, video_ids, statuses, previous_statuses
              FROM pgsse.incoming ORDER BY seq LIMIT batch) AS w
    ), taken AS (
        SELECT * FROM waiting WHERE upto <= batch OR seq = (SELECT min(seq) FROM waiting)
    ), gone AS (
        DELETE FROM pgsse.incoming WHERE ctid = ANY (ARRAY(SELECT row_id FROM taken))
    ), expanded AS (
        SELECT t.seq, 0::bigint AS n, t.kind, t.topic, t.time, t.data
        FROM taken t WHERE t.video_ids IS NULL
        UNION ALL
        SELECT t.seq, v.n, 'video.status', v.topic, t.time,
               jsonb_build_object('video_id', v.id, 'status', v.status, 'previous_status', v.previous)
        FROM taken t,
             LATERAL (SELECT u.*, 'videos/' || pgsse.topic_segment(u.id) AS topic
                      FROM unnest(t.video_ids, t.statuses, t.previous_statuses) WITH ORDINALITY AS u(id, status, previous, n)) AS v
        WHERE t.video_ids IS NOT NULL
          AND (t.previous_statuses IS NULL OR v.previous IS DISTINCT FROM v.status)
          AND v.id <> '' AND octet_length(v.topic) <= 256 -- no topic can carry it: published nowhere
    ), inserted AS (
        INSERT INTO pgsse.events (id, kind, topic, time, data, size)
        SELECT nextval('pgsse.event_id_seq'), kind, topic, time, data, octet_length(data::text)
        FROM (SELECT * FROM expanded ORDER BY seq, n OFFSET 0) AS ordered -- OFFSET 0: sort before nextval
        RETURNING id, size
    )
    SELECT count(*), min(id), max(id), coalesce(sum(size), 0),
           coalesce((SELECT max(listed) = batch OR max(listed) > (SELECT count(*) FROM taken) FROM waiting), false)
    INTO moved, first_id, last_id, bytes, more
    FROM inserted;
END
$$;
REVOKE ALL ON FUNCTION pgsse.move_incoming(integer) FROM PUBLIC;

-- sequence keeps its contract for replicas of earlier versions: it moves one
-- batch and returns how many events it moved (with rows of many videos, fewer
-- than batch may leave more waiting: those replicas sequence again at the next
-- ring or poll).
CREATE OR REPLACE FUNCTION pgsse.sequence(batch integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1885827955, 1);
    RETURN (SELECT moved FROM pgsse.move_incoming(batch));
END
$$;

-- sequence_events moves one batch, like sequence, and hands the events it moved
-- to the caller when they directly follow its position (after_id, with
-- after_time, as EventsAfter checks it): the log's head, read under the lock,
-- was that event. Then the caller, which would otherwise read them back at
-- once, needs no read: one statement instead of two, for the replica that
-- sequenced. The rows reach the caller before the commit; the caller uses them
-- only once the statement has succeeded.
--
-- It runs as its caller (only the move runs as pgsse's role), so the
-- caller reads the log with its own privileges, as through EventsAfter: a
-- role that lost SELECT on the log is told so here too.
--
-- One row per event when handed; otherwise one row without an event. handed:
-- the rows are every event after the position as of this commit (none: the
-- caller is at the head). more: incoming held more than the batch. Events over
-- max_bytes together (one alone always fits) are not handed: the caller reads
-- them in bounded reads. (Generic plans: a plan made for each call's ids cost
-- more than the read.)
CREATE FUNCTION pgsse.sequence_events(batch integer, after_id bigint, after_time timestamptz, max_bytes bigint)
RETURNS TABLE (handed boolean, more boolean, id bigint, kind text, topic text, "time" timestamptz, data jsonb)
LANGUAGE plpgsql SET search_path = pg_catalog SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    follows boolean;
    m       record;
BEGIN
    PERFORM pg_advisory_xact_lock(1885827955, 1);
    SELECT greatest((SELECT max(e.id) FROM pgsse.events e), h.pruned_through) = after_id
           AND coalesce((SELECT e.time = after_time FROM pgsse.events e WHERE e.id = after_id), h.pruned_through >= after_id)
    INTO follows FROM pgsse.horizon h;
    SELECT * INTO m FROM pgsse.move_incoming(batch);
    IF follows AND m.moved > 0 AND (m.bytes <= max_bytes OR m.moved = 1) THEN
        RETURN QUERY SELECT true, m.more, e.id, e.kind, e.topic, e.time, e.data
                     FROM pgsse.events e WHERE e.id BETWEEN m.first_id AND m.last_id ORDER BY e.id;
    ELSE
        RETURN QUERY SELECT coalesce(follows AND m.moved = 0, false), m.more,
                            NULL::bigint, NULL::text, NULL::text, NULL::timestamptz, NULL::jsonb;
    END IF;
END
$$;
REVOKE ALL ON FUNCTION pgsse.sequence_events(integer, bigint, timestamptz, bigint) FROM PUBLIC;

-- migrate:down

-- Rows of videos are sequenced first: the columns that hold them go.
DO $$
BEGIN
    WHILE EXISTS (SELECT FROM pgsse.incoming WHERE video_ids IS NOT NULL) LOOP
        PERFORM pgsse.sequence(10000);
    END LOOP;
END
$$;

DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT tgname, tgrelid::regclass AS rel, tgtype FROM pg_trigger
             WHERE tgfoid = 'pgsse.video_statuses'::regproc LOOP
        EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER %s ON %s FOR EACH ROW %s EXECUTE FUNCTION pgsse.video_status()',
            r.tgname, CASE WHEN r.tgtype & 4 = 4 THEN 'INSERT' ELSE 'UPDATE' END, r.rel,
            CASE WHEN r.tgtype & 4 = 4 THEN '' ELSE 'WHEN (OLD.processing_status IS DISTINCT FROM NEW.processing_status)' END);
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION pgsse.attach_videos(schema text, create_if_absent boolean) RETURNS regclass
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

CREATE OR REPLACE FUNCTION pgsse.sequence(batch integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    moved integer;
BEGIN
    PERFORM pg_advisory_xact_lock(1885827955, 1);
    WITH next AS (
        DELETE FROM pgsse.incoming
        WHERE seq IN (SELECT seq FROM pgsse.incoming ORDER BY seq LIMIT batch)
        RETURNING seq, kind, topic, time, data
    )
    INSERT INTO pgsse.events (id, kind, topic, time, data, size)
    SELECT nextval('pgsse.event_id_seq'), kind, topic, time, data, octet_length(data::text)
    FROM (SELECT * FROM next ORDER BY seq OFFSET 0) AS ordered; -- OFFSET 0: sort before nextval
    GET DIAGNOSTICS moved = ROW_COUNT;
    RETURN moved;
END
$$;

DROP FUNCTION pgsse.sequence_events(integer, bigint, timestamptz, bigint);
DROP FUNCTION pgsse.move_incoming(integer);
DROP FUNCTION pgsse.video_triggers(regclass);
DROP FUNCTION pgsse.video_statuses();
DROP FUNCTION pgsse.with_brief_locks(text, text[]);
DROP INDEX pgsse.incoming_seq;
ALTER TABLE pgsse.incoming RESET (vacuum_truncate);
ALTER TABLE pgsse.incoming
    DROP COLUMN video_ids,
    DROP COLUMN statuses,
    DROP COLUMN previous_statuses,
    ALTER COLUMN topic SET NOT NULL,
    ALTER COLUMN data SET NOT NULL;
