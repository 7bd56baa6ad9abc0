-- migrate:up

-- The videos table belongs to the application. This migration used to create it
-- here when absent, as an unqualified `videos`: with a role named like a schema
-- on its search_path ("$user"), that made an empty table in the wrong schema.
-- pgsse.attach_videos (20261203000005_videos_table.sql) now finds the table in
-- the configured schema, and creates it only in a database that has none.
SELECT 1;

-- migrate:down

-- Intentionally empty: the table and its rows are the application's.
