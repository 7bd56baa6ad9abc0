-- migrate:up

-- The event log. Ids are handed out at commit time under a lock, so they increase
-- in commit order: a reader that has seen id N never later finds a committed id
-- below N. Writers add events with pgsse.publish, which stages them in a
-- per-session temporary table; a deferred constraint trigger moves them into
-- pgsse.events when the transaction commits.
CREATE SCHEMA IF NOT EXISTS pgsse;

-- Writers (the videos trigger runs as whoever updates videos) must find
-- pgsse.publish; this grants no access to any table.
GRANT USAGE ON SCHEMA pgsse TO PUBLIC;

CREATE SEQUENCE pgsse.event_id_seq AS bigint;

CREATE TABLE pgsse.events (
    id    bigint      PRIMARY KEY,
    kind  text        NOT NULL,
    topic text        NOT NULL,
    time  timestamptz NOT NULL,
    data  jsonb       NOT NULL
);

ALTER SEQUENCE pgsse.event_id_seq OWNED BY pgsse.events.id;

-- Replays read one subscriber's topics after a position.
CREATE INDEX events_topic_id ON pgsse.events (topic, id);

-- pruned_through: every event with an id at or below it may have been pruned, so
-- a client resuming from below it has lost history and is told so.
CREATE TABLE pgsse.horizon (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    pruned_through bigint  NOT NULL
);
INSERT INTO pgsse.horizon (pruned_through) VALUES (0);

-- flush runs at commit, once per batch of staged events. The transaction-scoped
-- advisory lock is held until the commit is visible, so the next transaction's
-- ids are drawn only after this one's are committed. Postgres already serialises
-- notifying commits the same way (the NOTIFY queue lock), so this adds no new
-- bottleneck.
CREATE FUNCTION pgsse.flush() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1885827955, 1);
    PERFORM set_config('pgsse.staged', '', true);
    WITH moved AS (
        DELETE FROM pg_temp.pgsse_pending RETURNING seq, kind, topic, time, data
    )
    INSERT INTO pgsse.events (id, kind, topic, time, data)
    SELECT nextval('pgsse.event_id_seq'), kind, topic, time, data
    FROM (SELECT * FROM moved ORDER BY seq OFFSET 0) AS ordered; -- OFFSET 0: sort before nextval
    -- A doorbell only: listeners read the log. The payload is constant, so a
    -- commit of any size rings once.
    PERFORM pg_notify('pgsse_events', '');
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION pgsse.flush() FROM PUBLIC;

-- publish stages one event in the current transaction; it is what triggers and
-- applications call, e.g.
--   SELECT pgsse.publish('video.progress', 'videos/abc', '{"video_id":"abc","percent":40}');
-- time is clock_timestamp(): when the change was made, not when its transaction
-- began.
--
-- Staged rows go to a temporary table of the session's own: no other session
-- ever scans them, and serializable writers get no predicate-lock conflicts
-- from one another. The first row of a batch has flush = true and arms the
-- deferred trigger, so it runs once per commit, not once per row. SECURITY
-- DEFINER: the writer needs no privilege on pgsse's tables (nor TEMP on the
-- database).
--
-- flush deletes the staged rows; temporary tables are never vacuumed, so the
-- dead ones are dropped wholesale (TRUNCATE) once they pass 256 kB, at the
-- start of a batch. (ON COMMIT DELETE ROWS would do it at every commit, and
-- rebuilding the TOAST index each time cut commits per second by 4.)
CREATE FUNCTION pgsse.publish(kind text, topic text, data jsonb) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    first boolean := coalesce(current_setting('pgsse.staged', true), '') = '';
BEGIN
    IF kind IS NULL OR kind !~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$' THEN
        RAISE EXCEPTION 'pgsse.publish: kind % must be dotted lowercase words, e.g. video.progress', quote_nullable(kind)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF kind ~ '^(stream|auth)\.' THEN
        RAISE EXCEPTION 'pgsse.publish: kind % is reserved for pgsse', kind
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF topic IS NULL OR length(topic) > 256 OR topic !~ '^[A-Za-z0-9_.~:@-]+(/[A-Za-z0-9_.~:@-]+)*$' THEN
        RAISE EXCEPTION 'pgsse.publish: topic % must be /-separated segments of [A-Za-z0-9_.~:@-], at most 256 bytes', quote_nullable(topic)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF data IS NULL OR jsonb_typeof(data) <> 'object' THEN
        RAISE EXCEPTION 'pgsse.publish: data must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    IF first THEN
        -- transaction-local, so a rollback (to a savepoint, too) undoes it
        PERFORM set_config('pgsse.staged', 'yes', true);
        IF to_regclass('pg_temp.pgsse_pending') IS NULL THEN
            CREATE TEMPORARY TABLE pgsse_pending (
                seq   bigint      GENERATED ALWAYS AS IDENTITY,
                kind  text        NOT NULL,
                topic text        NOT NULL,
                time  timestamptz NOT NULL,
                data  jsonb       NOT NULL,
                flush boolean     NOT NULL
            );
            CREATE CONSTRAINT TRIGGER flush
            AFTER INSERT ON pgsse_pending
            DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW WHEN (NEW.flush)
            EXECUTE FUNCTION pgsse.flush();
        ELSIF pg_total_relation_size('pg_temp.pgsse_pending') > 262144 THEN
            TRUNCATE pg_temp.pgsse_pending;
        END IF;
    END IF;
    INSERT INTO pg_temp.pgsse_pending (kind, topic, time, data, flush)
    VALUES (kind, topic, clock_timestamp(), data, first);
END
$$;

-- video.status: on INSERT, and on UPDATE when processing_status really changed.
CREATE FUNCTION pgsse.video_status() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pgsse.publish('video.status', 'videos/' || NEW.id, jsonb_build_object(
        'video_id', NEW.id,
        'status', NEW.processing_status,
        'previous_status', CASE WHEN TG_OP = 'UPDATE' THEN OLD.processing_status END));
    RETURN NULL;
END
$$;

-- The triggers that call it are attached to the application's table, named
-- explicitly, by pgsse.attach_videos (20261203000005_videos_table.sql). Until
-- that migration, they were created here on an unqualified `videos`, which
-- follows search_path; databases migrated then keep them until attach_videos
-- moves them.

-- migrate:down

DROP FUNCTION pgsse.video_status();
DROP FUNCTION pgsse.publish(text, text, jsonb);
DROP FUNCTION pgsse.flush();
DROP TABLE pgsse.horizon;
DROP TABLE pgsse.events;
