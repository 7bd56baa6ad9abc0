-- migrate:up

-- Any videos.id works. A video's topic is videos/ and its id as one segment:
-- each byte outside A-Za-z0-9_.~:@- is percent-encoded in uppercase hex (the
-- same encoding as event.EncodeSegment). An id no topic can carry (empty, or over
-- 256 bytes once encoded) publishes nothing, and its writes still succeed: pgsse
-- never makes an application write fail. Ids and statuses of any type are
-- published as text.
CREATE FUNCTION pgsse.topic_segment(s text) RETURNS text
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

CREATE OR REPLACE FUNCTION pgsse.video_status() RETURNS trigger
LANGUAGE plpgsql AS $$
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

-- migrate:down

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
    IF topic IS NULL OR length(topic) > 256 OR topic !~ '^[A-Za-z0-9_.~:@-]+(/[A-Za-z0-9_.~:@-]+)*$' THEN
        RAISE EXCEPTION 'pgsse.publish: topic % must be /-separated segments of [A-Za-z0-9_.~:@-], at most 256 bytes', quote_nullable(topic)
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

CREATE OR REPLACE FUNCTION pgsse.video_status() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pgsse.publish('video.status', 'videos/' || NEW.id, jsonb_build_object(
        'video_id', NEW.id,
        'status', NEW.processing_status,
        'previous_status', CASE WHEN TG_OP = 'UPDATE' THEN OLD.processing_status END));
    RETURN NULL;
END
$$;

DROP FUNCTION pgsse.topic_segment(text);
