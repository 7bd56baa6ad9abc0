-- migrate:up

-- The videos triggers publish as pgsse's role, like pgsse.publish itself: an
-- operator may then revoke EXECUTE on pgsse.publish from PUBLIC (to choose who
-- publishes events of their own) without stopping the writers of videos from
-- publishing their changes. A fixed search_path, as every SECURITY DEFINER
-- function needs: a writer's own search_path must not reach its functions or
-- operators.
ALTER FUNCTION pgsse.video_status() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

-- migrate:down

ALTER FUNCTION pgsse.video_status() SECURITY INVOKER RESET search_path;
