-- migrate:up

-- video.status on every real change of processing_status, however it was made:
-- `AFTER UPDATE OF processing_status` does not fire when the application's own
-- BEFORE trigger sets the column, so the trigger fires on every UPDATE and the
-- WHEN clause (evaluated when the row is updated, so an unrelated update queues
-- nothing) keeps only real changes.
DROP TRIGGER pgsse_video_status_update ON videos;
CREATE TRIGGER pgsse_video_status_update
AFTER UPDATE ON videos
FOR EACH ROW WHEN (OLD.processing_status IS DISTINCT FROM NEW.processing_status)
EXECUTE FUNCTION pgsse.video_status();

-- migrate:down

DROP TRIGGER pgsse_video_status_update ON videos;
CREATE TRIGGER pgsse_video_status_update
AFTER UPDATE OF processing_status ON videos
FOR EACH ROW WHEN (OLD.processing_status IS DISTINCT FROM NEW.processing_status)
EXECUTE FUNCTION pgsse.video_status();
