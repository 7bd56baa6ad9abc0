-- The role pgsse connects as, and what it needs on an existing application
-- database (docs/database.md). Run it once per database, with psql, as a role
-- that may create roles (a superuser, or your managed service's admin) and
-- grant on the videos table (its owner, or an admin):
--
--   psql "$ADMIN_URL" -v ON_ERROR_STOP=1 -f deploy/postgres/roles.sql
--
-- Options, each with -v name=value:
--   pgsse_role      the role pgsse logs in as            (default pgsse)
--   videos_schema   the schema of the videos table,
--                   PGSSE_VIDEOS_SCHEMA                  (default public)
--
-- Running it again changes nothing. It sets no password: set one with
-- \password, or use your service's IAM login.

\if :{?pgsse_role}
\else
  \set pgsse_role pgsse
\endif
\if :{?videos_schema}
\else
  \set videos_schema public
\endif

BEGIN;

SELECT format('CREATE ROLE %I LOGIN', :'pgsse_role')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'pgsse_role') \gexec

-- The first migration creates schema pgsse, which pgsse's role then owns: its
-- log, its functions and their triggers. Nothing else is created anywhere.
SELECT format('GRANT CREATE ON DATABASE %I TO %I', current_database(), :'pgsse_role') \gexec

-- The application's table: SELECT for snapshots, TRIGGER to attach the two
-- triggers that publish its changes. The table stays the application's.
SELECT format('GRANT USAGE ON SCHEMA %I TO %I', :'videos_schema', :'pgsse_role') \gexec
SELECT format('GRANT SELECT, TRIGGER ON %I.videos TO %I', :'videos_schema', :'pgsse_role') \gexec

-- Writers need nothing from pgsse: the triggers and pgsse.publish run as
-- pgsse's role (SECURITY DEFINER). To choose who may call pgsse.publish, see
-- docs/database.md ("Who may publish").

COMMIT;
