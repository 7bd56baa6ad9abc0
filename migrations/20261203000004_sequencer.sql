-- migrate:up

-- Ids are drawn by pgsse, never inside the application's transaction (see
-- docs/design-notes.md, "Who draws the ids"). publish appends the event to
-- pgsse.incoming and rings pgsse_incoming; that is all a writer does, and it
-- takes no lock other writers wait for. pgsse.sequence, which pgsse calls after
-- every ring, moves committed rows into pgsse.events in a short transaction of
-- its own, under the id lock, and rings pgsse_events. So no deferred constraint
-- in any order, no SET CONSTRAINTS ALL IMMEDIATE, no transaction left idle can
-- make one writer wait for another because of pgsse.

-- Only publish writes here and only sequence reads, in READ COMMITTED: writers'
-- SERIALIZABLE transactions take no predicate lock on it and never conflict.
-- A queue: rows live for milliseconds, so it is vacuumed after every 1000.
CREATE TABLE pgsse.incoming (
    seq   bigint      GENERATED ALWAYS AS IDENTITY,
    kind  text        NOT NULL,
    topic text        NOT NULL,
    time  timestamptz NOT NULL,
    data  jsonb       NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
        autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 1000);

-- check_event is publish's rules, in one place.
CREATE FUNCTION pgsse.check_event(kind text, topic text, data jsonb) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog AS $$
BEGIN
    IF kind IS NULL OR kind !~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$' THEN
        RAISE EXCEPTION 'pgsse.publish: kind % must be dotted lowercase words, e.g. video.progress', quote_nullable(kind)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF kind ~ '^(stream|auth)\.' THEN
        RAISE EXCEPTION 'pgsse.publish: kind % is reserved for pgsse', kind
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF topic IS NULL OR octet_length(topic) > 256 OR topic !~ '^([A-Za-z0-9_.~:@-]|%[0-9A-F]{2})+(/([A-Za-z0-9_.~:@-]|%[0-9A-F]{2})+)*$' THEN
        RAISE EXCEPTION 'pgsse.publish: topic % must be /-separated segments of [A-Za-z0-9_.~:@-] and %%XX escapes (uppercase hex) of other bytes, at most 256 bytes; pgsse.topic_segment(text) encodes one', quote_nullable(topic)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF data IS NULL OR jsonb_typeof(data) <> 'object' THEN
        RAISE EXCEPTION 'pgsse.publish: data must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pgsse.check_payload(kind, data);
END
$$;

-- publish adds one event to the current transaction, e.g.
--   SELECT pgsse.publish('video.progress', 'videos/abc', '{"video_id":"abc","percent":40}');
-- time is clock_timestamp(): when the change was made. SECURITY DEFINER: the
-- writer needs no privilege on pgsse's tables. The ring is deduplicated by
-- PostgreSQL within the transaction, so a commit of any size rings once.
CREATE OR REPLACE FUNCTION pgsse.publish(kind text, topic text, data jsonb) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    PERFORM pgsse.check_event(kind, topic, data);
    INSERT INTO pgsse.incoming (kind, topic, time, data) VALUES (kind, topic, clock_timestamp(), data);
    PERFORM pg_notify('pgsse_incoming', '');
END
$$;

-- sequence moves up to batch committed events from incoming into the log and
-- returns how many it moved. The lock serialises sequencers (every replica runs
-- one); each statement below takes its snapshot after the lock, so it sees what
-- the previous holder committed and never moves a row twice. Ids are drawn in
-- seq order (a transaction's own order, and causal order across transactions)
-- and the lock is held until this commit is visible, so a reader that has seen
-- id N never later finds a committed id below N.
CREATE FUNCTION pgsse.sequence(batch integer) RETURNS integer
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
    INSERT INTO pgsse.events (id, kind, topic, time, data)
    SELECT nextval('pgsse.event_id_seq'), kind, topic, time, data
    FROM (SELECT * FROM next ORDER BY seq OFFSET 0) AS ordered; -- OFFSET 0: sort before nextval
    GET DIAGNOSTICS moved = ROW_COUNT;
    IF moved > 0 THEN
        PERFORM pg_notify('pgsse_events', '');
    END IF;
    RETURN moved;
END
$$;
REVOKE ALL ON FUNCTION pgsse.sequence(integer) FROM PUBLIC;

-- A session that staged events under the previous migration commits them
-- through its temporary table's trigger: hand them to the sequencer.
CREATE OR REPLACE FUNCTION pgsse.flush() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM set_config('pgsse.staged', '', true);
    WITH moved AS (
        DELETE FROM pg_temp.pgsse_pending RETURNING seq, kind, topic, time, data
    )
    INSERT INTO pgsse.incoming (kind, topic, time, data)
    SELECT kind, topic, time, data FROM moved ORDER BY seq;
    PERFORM pg_notify('pgsse_incoming', '');
    RETURN NULL;
END
$$;

-- migrate:down

-- Events still in incoming are lost to a downgrade; run pgsse.sequence first.

CREATE OR REPLACE FUNCTION pgsse.flush() RETURNS trigger
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
CREATE OR REPLACE FUNCTION pgsse.publish(kind text, topic text, data jsonb) RETURNS void
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
    IF topic IS NULL OR octet_length(topic) > 256 OR topic !~ '^([A-Za-z0-9_.~:@-]|%[0-9A-F]{2})+(/([A-Za-z0-9_.~:@-]|%[0-9A-F]{2})+)*$' THEN
        RAISE EXCEPTION 'pgsse.publish: topic % must be /-separated segments of [A-Za-z0-9_.~:@-] and %%XX escapes (uppercase hex) of other bytes, at most 256 bytes; pgsse.topic_segment(text) encodes one', quote_nullable(topic)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF data IS NULL OR jsonb_typeof(data) <> 'object' THEN
        RAISE EXCEPTION 'pgsse.publish: data must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pgsse.check_payload(kind, data);

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

DROP FUNCTION pgsse.sequence(integer);
DROP FUNCTION pgsse.check_event(text, text, jsonb);
DROP TABLE pgsse.incoming;
