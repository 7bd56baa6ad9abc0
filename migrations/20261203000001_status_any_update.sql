-- migrate:up

-- video.status on every real change of processing_status, however it was made:
-- `AFTER UPDATE OF processing_status` does not fire when the application's own
-- BEFORE trigger sets the column, so the trigger fires on every UPDATE and the
-- WHEN clause (evaluated when the row is updated, so an unrelated update queues
-- nothing) keeps only real changes. A database migrated before
-- 20261203000005_videos_table.sql had its trigger replaced here, on an
-- unqualified `videos`; pgsse.attach_videos now creates it that way, on the
-- configured table.
DO $$
BEGIN
    IF to_regclass('videos') IS NOT NULL AND EXISTS (
        SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass('videos') AND tgname = 'pgsse_video_status_update') THEN
        DROP TRIGGER pgsse_video_status_update ON videos;
        CREATE TRIGGER pgsse_video_status_update
        AFTER UPDATE ON videos
        FOR EACH ROW WHEN (OLD.processing_status IS DISTINCT FROM NEW.processing_status)
        EXECUTE FUNCTION pgsse.video_status();
    END IF;
END
$$;

-- migrate:down

-- Nothing: attach_videos owns the trigger's definition now.
