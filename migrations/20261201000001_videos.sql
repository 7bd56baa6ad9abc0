-- migrate:up

-- The videos table belongs to the application; pgsse creates it only where it does
-- not exist yet (a fresh development database) and never alters an existing one.
CREATE TABLE IF NOT EXISTS videos (
    id TEXT PRIMARY KEY,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
    raw_file_path TEXT NOT NULL,
    processed_file_path TEXT,
    processing_status TEXT NOT NULL DEFAULT 'pending'
);

-- migrate:down

-- Intentionally empty: the table and its rows are the application's.
