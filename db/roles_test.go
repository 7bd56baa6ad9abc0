package db_test

import (
	"context"
	"errors"
	neturl "net/url"
	"os/exec"
	"strings"
	"testing"

	"github.com/lib/pq"

	"pgsse/internal/dbtest"
	"pgsse/internal/doctest"
)

// TestRolesScript: deploy/postgres/roles.sql creates a role that is neither
// superuser nor role creator, runs again without error, and gives it enough to
// migrate and publish the application's changes; docs/database.md's "Who may
// publish" then leaves pgsse.publish to the roles it names while every writer
// of videos still publishes through the triggers.
func TestRolesScript(t *testing.T) {
	const role, worker, other = "pgsse_roles_script", "pgsse_roles_worker", "pgsse_roles_other"
	admin := dbtest.Open(t, dbtest.ServerURL(t))
	// Left by an earlier run whose databases are gone: dropping them makes the
	// script create the role again.
	dbtest.Exec(t, admin, `DROP ROLE IF EXISTS `+role+`, `+worker+`, `+other)

	adminURL, url := appDatabase(t, "public", role) // runs the script
	if out, err := exec.Command("psql", adminURL, "-v", "ON_ERROR_STOP=1", "-v", "pgsse_role="+role,
		"-f", "../deploy/postgres/roles.sql").CombinedOutput(); err != nil {
		t.Fatalf("roles.sql a second time: %v\n%s", err, out)
	}
	var super, createRole, login bool
	if err := admin.QueryRow(`SELECT rolsuper, rolcreaterole, rolcanlogin FROM pg_roles WHERE rolname = $1`, role).Scan(&super, &createRole, &login); err != nil {
		t.Fatal(err)
	}
	if super || createRole || !login {
		t.Errorf("role: superuser %v, createrole %v, login %v; want a plain login role", super, createRole, login)
	}
	if err := mustOpen(t, url).Migrate(context.Background(), nil); err != nil {
		t.Fatalf("migrate as the script's role: %v", err)
	}

	app := dbtest.Open(t, adminURL)
	dbtest.Exec(t, app, `CREATE ROLE `+worker+` LOGIN; CREATE ROLE `+other+` LOGIN;
		GRANT SELECT, INSERT, UPDATE ON public.videos TO `+worker+`, `+other)
	t.Cleanup(func() { dbtest.Exec(t, app, `DROP OWNED BY `+worker+`, `+other+`; DROP ROLE `+worker+`, `+other) })
	restrict := strings.ReplaceAll(doctest.Find(t, "../docs/database.md", "REVOKE EXECUTE ON FUNCTION pgsse.publish").Text, "app_worker", worker)
	dbtest.Exec(t, dbtest.Open(t, url), restrict) // as pgsse's role, the function's owner

	as := func(name string) *dbURL {
		u, _ := neturl.Parse(adminURL)
		u.User = neturl.User(name)
		return &dbURL{t, u.String()}
	}
	publish := `SELECT pgsse.publish('video.progress', 'videos/a', '{"video_id": "a", "percent": 1, "stage": "probe"}')`
	var pqErr *pq.Error
	if err := as(other).exec(publish); !errors.As(err, &pqErr) || pqErr.Code != "42501" {
		t.Errorf("%s, not granted, called pgsse.publish: %v; want permission denied", other, err)
	}
	if err := as(worker).exec(publish); err != nil {
		t.Errorf("%s, granted, could not publish: %v", worker, err)
	}
	if err := as(other).exec(`INSERT INTO public.videos (id, created_at, updated_at, raw_file_path) VALUES ('b', now(), now(), '/raw/b')`); err != nil {
		t.Fatalf("%s writes videos: %v", other, err)
	}
	raws := eventsAfter(t, mustOpen(t, url), 0)
	if len(raws) != 2 || raws[0].Kind != "video.progress" || raws[1].Kind != "video.status" {
		t.Errorf("events %+v, want the worker's progress and the other writer's insert", raws)
	}
}

type dbURL struct {
	t   *testing.T
	url string
}

func (d *dbURL) exec(query string) error {
	_, err := dbtest.Open(d.t, d.url).Exec(query)
	return err
}
