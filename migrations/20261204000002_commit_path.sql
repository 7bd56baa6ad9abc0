-- migrate:up

-- The commit path, measured (BENCHMARKS.md, "The commit path"): what a writer's
-- UPDATE of videos pays for its event.
--
-- topic_segment had SET search_path, so it was never inlined: each call set up
-- a SQL function and a GUC level, which cost a third of a durable single-row
-- UPDATE's throughput. The common case (an id needing no escape) is now one
-- inlinable regular-expression test; escaping moves to topic_segment_escaped.
-- Operators and functions are schema-qualified, as an inlined body is parsed
-- with the caller's search_path.
CREATE FUNCTION pgsse.topic_segment_escaped(s text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog AS $$
    SELECT string_agg(CASE WHEN b BETWEEN 48 AND 57 OR b BETWEEN 65 AND 90 OR b BETWEEN 97 AND 122
                                OR b IN (45, 46, 58, 64, 95, 126)
                           THEN chr(b) ELSE '%' || lpad(upper(to_hex(b)), 2, '0') END, '' ORDER BY i)
    FROM (SELECT convert_to(s, 'UTF8') AS bytes) AS x,
         generate_series(0, octet_length(x.bytes) - 1) AS i,
         LATERAL get_byte(x.bytes, i) AS b
$$;

CREATE OR REPLACE FUNCTION pgsse.topic_segment(s text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ -- not STRICT, which would keep it from being inlined (NULL still gives NULL)
    SELECT CASE WHEN s OPERATOR(pg_catalog.~) '^[A-Za-z0-9_.~:@-]*$' THEN s ELSE pgsse.topic_segment_escaped(s) END
$$;

-- The videos trigger appends its event to incoming itself: its kind is a
-- constant, its topic encoded above and its data the three fields of
-- video.status, so publish's checks (check_event, check_payload) could only
-- pass, and cost as much again. It runs as pgsse's role (writers need no
-- privilege on incoming) without SET search_path, which cost a GUC level per
-- row (a fifth of a 10 000-row UPDATE); instead every name, type and operator
-- is schema-qualified, so a writer's search_path reaches nothing here.
CREATE OR REPLACE FUNCTION pgsse.video_status() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    topic pg_catalog.text := 'videos/' OPERATOR(pg_catalog.||) pgsse.topic_segment(NEW.id::pg_catalog.text);
BEGIN
    IF NEW.id::pg_catalog.text OPERATOR(pg_catalog.=) '' OR pg_catalog.octet_length(topic) OPERATOR(pg_catalog.>) 256 THEN
        RETURN NULL;
    END IF;
    INSERT INTO pgsse.incoming (kind, topic, time, data) VALUES ('video.status', topic, pg_catalog.clock_timestamp(), pg_catalog.jsonb_build_object(
        'video_id', NEW.id::pg_catalog.text,
        'status', NEW.processing_status::pg_catalog.text,
        'previous_status', CASE WHEN TG_OP OPERATOR(pg_catalog.=) 'UPDATE' THEN OLD.processing_status::pg_catalog.text END));
    PERFORM pg_catalog.pg_notify('pgsse_incoming', '');
    RETURN NULL;
END
$$;

-- sequence no longer rings pgsse_events: every replica hears the writers'
-- pgsse_incoming ring, sequences (waiting for the lock while another one does)
-- and reads the log after it, so the ring only made every sequencing commit a
-- notifying one, serialised with the writers' (pgsse still listens on
-- pgsse_events, for replicas of earlier versions during a rollout).
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

-- migrate:down

CREATE OR REPLACE FUNCTION pgsse.video_status() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    topic text := 'videos/' || pgsse.topic_segment(NEW.id::text);
BEGIN
    IF NEW.id::text = '' OR octet_length(topic) > 256 THEN
        RETURN NULL;
    END IF;
    PERFORM pgsse.publish('video.status', topic, jsonb_build_object(
        'video_id', NEW.id::text,
        'status', NEW.processing_status::text,
        'previous_status', CASE WHEN TG_OP = 'UPDATE' THEN OLD.processing_status::text END));
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION pgsse.topic_segment(s text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog AS $$
    SELECT CASE WHEN s ~ '^[A-Za-z0-9_.~:@-]*$' THEN s ELSE (
        SELECT string_agg(CASE WHEN b BETWEEN 48 AND 57 OR b BETWEEN 65 AND 90 OR b BETWEEN 97 AND 122
                                    OR b IN (45, 46, 58, 64, 95, 126)
                               THEN chr(b) ELSE '%' || lpad(upper(to_hex(b)), 2, '0') END, '' ORDER BY i)
        FROM (SELECT convert_to(s, 'UTF8') AS bytes) AS x,
             generate_series(0, octet_length(x.bytes) - 1) AS i,
             LATERAL get_byte(x.bytes, i) AS b)
    END
$$;

DROP FUNCTION pgsse.topic_segment_escaped(text);

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
    IF moved > 0 THEN
        PERFORM pg_notify('pgsse_events', '');
    END IF;
    RETURN moved;
END
$$;
