-- migrate:up

-- check_payload holds a known kind's data to the rules pgsse decodes it by
-- (event/rules.go): exact field names, their JSON types, required fields, a
-- non-empty video_id, percent within 0..100 (compared as numeric, exactly).
-- publish calls it, so a writer hears of a payload pgsse would drop in its own
-- transaction, as invalid_parameter_value. Other kinds need only an object.
CREATE FUNCTION pgsse.check_payload(kind text, data jsonb) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog AS $$
DECLARE
    fields   jsonb;
    required text[];
    k        text;
BEGIN
    CASE kind
    WHEN 'video.status' THEN
        fields := '{"video_id": ["string"], "status": ["string", "null"], "previous_status": ["string", "null"]}';
        required := '{video_id,status}';
    WHEN 'video.progress' THEN
        fields := '{"video_id": ["string"], "percent": ["number"], "stage": ["string", "null"]}';
        required := '{video_id,percent}';
    ELSE
        RETURN;
    END CASE;
    FOR k IN SELECT jsonb_object_keys(data) LOOP
        IF NOT fields ? k THEN
            RAISE EXCEPTION 'pgsse.publish: % data has no field %; its fields are %', kind, quote_literal(k),
                (SELECT string_agg(f, ', ' ORDER BY f) FROM jsonb_object_keys(fields) f)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF NOT fields -> k ? jsonb_typeof(data -> k) THEN
            RAISE EXCEPTION 'pgsse.publish: % field % must be %, not %', kind, k,
                (SELECT string_agg(t, ' or ') FROM jsonb_array_elements_text(fields -> k) t), jsonb_typeof(data -> k)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    FOREACH k IN ARRAY required LOOP
        IF NOT data ? k THEN
            RAISE EXCEPTION 'pgsse.publish: % data lacks field %', kind, k
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    IF data ->> 'video_id' = '' THEN
        RAISE EXCEPTION 'pgsse.publish: % video_id is empty', kind
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF kind = 'video.progress' AND (data ->> 'percent')::numeric NOT BETWEEN 0 AND 100 THEN
        RAISE EXCEPTION 'pgsse.publish: video.progress percent % is outside 0..100', data -> 'percent'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
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
DROP FUNCTION pgsse.check_payload(text, jsonb);
