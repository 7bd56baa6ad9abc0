-- migrate:up

-- size is the length of an event's data as sent (its JSON text), so readers
-- can bound a batch by bytes before reading it: the stored size says little
-- (TOAST compresses a megabyte of repetitive JSON to kilobytes). It is
-- computed once, when the event is sequenced; rows from before have none
-- (readers fall back to the stored size).
ALTER TABLE pgsse.events ADD COLUMN size integer;

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

-- migrate:down

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

ALTER TABLE pgsse.events DROP COLUMN size;
