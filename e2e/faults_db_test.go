package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	neturl "net/url"
	"testing"
	"time"

	"pgsse/db"
	"pgsse/internal/dbtest"
)

// Faults of the network between pgsse and PostgreSQL, one connection kind at a
// time, and of the database itself: delivery goes on (slower) or resumes, and
// loses nothing.

// TestFault_SlowNetwork: 300 ms (±75) of latency, or 8 KB/s, on the pool's or
// the LISTEN connection: slow is not down (pgsse stays ready) and nothing is lost.
func TestFault_SlowNetwork(t *testing.T) {
	faults := map[string]func(*dbtest.Proxy){
		"latency":   func(p *dbtest.Proxy) { p.Latency(300) },
		"bandwidth": func(p *dbtest.Proxy) { p.Bandwidth(8) },
	}
	for _, fault := range []string{"latency", "bandwidth"} {
		for _, which := range []string{"pool", "listener"} {
			t.Run(fault+"/"+which, func(t *testing.T) {
				r := newFaultRig(t)
				proxy := r.proxyFor(which)
				faults[fault](proxy)
				time.Sleep(2 * time.Second)
				if code, body := readyz(r.p.URL); code != http.StatusOK {
					t.Errorf("/readyz %d (%s) under %s: slow is not down", code, body, fault)
				}
				proxy.Heal()
				resumed := r.verify()
				t.Logf("%s on the %s: clients complete %v after healing", fault, which, resumed)
			})
		}
	}
}

func TestFault_ResetPeer(t *testing.T) {
	for _, which := range []string{"pool", "listener"} {
		t.Run(which, func(t *testing.T) {
			r := newFaultRig(t)
			proxy := r.proxyFor(which)
			proxy.ResetPeer()
			detected := r.waitReadyz(http.StatusServiceUnavailable, detectBound)
			time.Sleep(time.Second)
			proxy.Heal()
			ready := r.waitReadyz(http.StatusOK, resumeBound)
			resumed := r.verify()
			t.Logf("%s reset: detected in %v, ready %v after healing, clients complete %v later", which, detected, ready, resumed)
		})
	}
}

func (r *faultRig) proxyFor(which string) *dbtest.Proxy {
	if which == "pool" {
		return r.pool
	}
	return r.listen
}

// TestFault_KillPostgres: the server killed with SIGKILL (crash recovery)
// while a writer commits.
func TestFault_KillPostgres(t *testing.T) {
	cluster := dbtest.NewCluster(t)
	sqlDB := dbtest.Open(t, cluster.URL)
	// The test cluster commits asynchronously, and a crash then loses the last
	// commits, events clients already have included (pgsse then finds the log
	// replaced: stream.reset). Production commits synchronously: so does this.
	dbtest.Exec(t, sqlDB, `ALTER DATABASE pgsse SET synchronous_commit = on`)
	sqlDB.SetMaxIdleConns(0) // no session from before the setting
	sqlDB.SetMaxIdleConns(2)
	p := startPgsse(t, cluster.URL, "PGSSE_DB_TIMEOUT="+faultTimeout.String(), "PGSSE_POLL_INTERVAL=1s")
	var fs []*follower
	for range 3 {
		fs = append(fs, follow(t, "", p.URL+"/events?topic=videos/*"))
	}
	time.Sleep(300 * time.Millisecond)
	stopWriter := startWriter(t, sqlDB, "k", 10*time.Millisecond)
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	cluster.Kill()
	restarted := time.Since(start)
	time.Sleep(time.Second)
	stopWriter()
	begin := time.Now()
	waitAllIDs(t, fs, logIDs(t, sqlDB, 0, "videos/%"))
	t.Logf("kill -9: server back after %v, clients complete %v later", restarted, time.Since(begin))
}

// TestFault_TerminateBackends: pg_terminate_backend of each of pgsse's
// connections, the pool's and the listener's (found by application_name).
func TestFault_TerminateBackends(t *testing.T) {
	for _, app := range []string{db.ApplicationName, db.ListenerApplicationName} {
		t.Run(app, func(t *testing.T) {
			r := newFaultRig(t)
			var n int
			for deadline := time.Now().Add(5 * time.Second); n == 0 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
				if err := r.direct.QueryRow(`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
					WHERE application_name = $1 AND datname = current_database()`, app).Scan(&n); err != nil {
					t.Fatal(err)
				}
			}
			if n == 0 {
				t.Fatalf("no backend with application_name %s", app)
			}
			resumed := r.verify()
			t.Logf("terminated %d %s backends: clients complete %v later", n, app, resumed)
		})
	}
}

// TestFault_LogLocked: an ACCESS EXCLUSIVE lock on the log for longer than the
// statement timeout: pgsse's statements are cancelled by the server, readiness
// names the fault, and everything arrives once the lock is released.
func TestFault_LogLocked(t *testing.T) {
	r := newFaultRig(t)
	tx := dbtest.Begin(t, r.direct, `LOCK TABLE pgsse.events IN ACCESS EXCLUSIVE MODE`)
	detected := r.waitReadyz(http.StatusServiceUnavailable, detectBound)
	fault := r.waitFault("57014")
	time.Sleep(faultTimeout)
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	ready := r.waitReadyz(http.StatusOK, resumeBound)
	resumed := r.verify()
	// None stuck: a backend may wait a moment on the sequencers' lock, never
	// for long.
	var waiting int
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		err := r.direct.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'pgsse%' AND wait_event_type = 'Lock'`).Scan(&waiting)
		if err != nil {
			t.Fatal(err)
		}
		if waiting == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%d pgsse backends still waiting on a lock 2s after the release was served", waiting)
			break
		}
	}
	t.Logf("log locked: not ready in %v, fault %s, ready %v after the release, clients complete %v later", detected, fault, ready, resumed)
}

// TestFault_ReadOnlyDatabase: default_transaction_read_only on the database
// (a primary demoted, a database put in maintenance): sequencing fails with
// 25006, readiness says so, and events arrive once it is lifted.
func TestFault_ReadOnlyDatabase(t *testing.T) {
	r := newFaultRig(t)
	name := r.databaseName()
	// One session from before the setting, to lift it again: sessions opened
	// after it are read-only for life.
	admin, err := r.direct.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.ExecContext(context.Background(), `ALTER DATABASE `+name+` SET default_transaction_read_only = on`); err != nil {
		t.Fatal(err)
	}
	terminate(t, r, db.ApplicationName) // new sessions take the setting; the writer's keep writing
	r.waitReadyz(http.StatusServiceUnavailable, detectBound)
	fault := r.waitFault("25006")
	if _, err := admin.ExecContext(context.Background(), `ALTER DATABASE `+name+` RESET default_transaction_read_only`); err != nil {
		t.Fatal(err)
	}
	terminate(t, r, db.ApplicationName)
	ready := r.waitReadyz(http.StatusOK, resumeBound)
	resumed := r.verify()
	t.Logf("read-only database: fault %s, ready %v after lifting, clients complete %v later", fault, ready, resumed)
}

// TestFault_RevokedPrivilege: SELECT on the log revoked from pgsse's role.
func TestFault_RevokedPrivilege(t *testing.T) {
	url := dbtest.New(t)
	role, roleURL := newRole(t, url)
	r := newFaultRigAs(t, url, roleURL, "PGSSE_MIGRATE=false")
	dbtest.Exec(t, r.direct, `REVOKE SELECT ON pgsse.events FROM `+role)
	detected := r.waitReadyz(http.StatusServiceUnavailable, detectBound)
	fault := r.waitFault("42501")
	dbtest.Exec(t, r.direct, `GRANT SELECT ON pgsse.events TO `+role)
	ready := r.waitReadyz(http.StatusOK, resumeBound)
	resumed := r.verify()
	t.Logf("revoked SELECT: not ready in %v, fault %s, ready %v after the grant, clients complete %v later", detected, fault, ready, resumed)
}

// newRole creates a role with the privileges pgsse needs on the migrated
// database of url (not a superuser: limits apply to it) and returns its URL.
func newRole(t *testing.T, url string) (role, roleURL string) {
	admin := dbtest.Open(t, url)
	role = fmt.Sprintf("pgsse_role_%d", time.Now().UnixNano())
	dbtest.Exec(t, admin, `CREATE ROLE `+role+` LOGIN`)
	t.Cleanup(func() {
		dbtest.Exec(t, admin, `DROP OWNED BY `+role)
		dbtest.Exec(t, admin, `DROP ROLE `+role)
	})
	dbtest.Exec(t, admin, `GRANT USAGE ON SCHEMA pgsse, public TO `+role)
	dbtest.Exec(t, admin, `GRANT SELECT ON public.videos TO `+role)
	dbtest.Exec(t, admin, `GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA pgsse TO `+role)
	dbtest.Exec(t, admin, `GRANT USAGE ON ALL SEQUENCES IN SCHEMA pgsse TO `+role)
	dbtest.Exec(t, admin, `GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA pgsse TO `+role)
	u, _ := neturl.Parse(url)
	u.User = neturl.User(role)
	return role, u.String()
}

// TestFault_RoleStatementTimeout: a statement_timeout far too short on the
// role pgsse connects as. pgsse's own statement_timeout (half of
// PGSSE_DB_TIMEOUT, a startup parameter) takes precedence over the role's:
// delivery is unaffected.
func TestFault_RoleStatementTimeout(t *testing.T) {
	url := dbtest.New(t)
	admin := dbtest.Open(t, url)
	role := fmt.Sprintf("pgsse_role_%d", time.Now().UnixNano())
	dbtest.Exec(t, admin, `CREATE ROLE `+role+` LOGIN SUPERUSER`)
	t.Cleanup(func() { dbtest.Exec(t, admin, `DROP ROLE `+role) })
	dbtest.Exec(t, admin, `ALTER ROLE `+role+` SET statement_timeout = '1ms'`)
	u, _ := neturl.Parse(url)
	u.User = neturl.User(role)
	p := startPgsse(t, u.String(), "PGSSE_POLL_INTERVAL=1s", "PGSSE_MIGRATE=false") // dbmate's statements get the role's timeout
	f := follow(t, "", p.URL+"/events?topic=videos/*")
	time.Sleep(300 * time.Millisecond)
	stopWriter := startWriter(t, admin, "s", 10*time.Millisecond)
	time.Sleep(time.Second)
	stopWriter()
	waitAllIDs(t, []*follower{f}, logIDs(t, admin, 0, "videos/%"))
}

// TestFault_ConnectionsExhausted: every connection slot taken by others
// (53300, an outage: waited out); pgsse serves again once slots free.
func TestFault_ConnectionsExhausted(t *testing.T) {
	url := dbtest.New(t)
	_, roleURL := newRole(t, url)
	r := newFaultRigAs(t, url, roleURL, "PGSSE_MIGRATE=false")
	name := r.databaseName()
	dbtest.Exec(t, r.direct, `ALTER DATABASE `+name+` CONNECTION LIMIT 0`)
	terminate(t, r, db.ApplicationName)
	terminate(t, r, db.ListenerApplicationName)
	detected := r.waitReadyz(http.StatusServiceUnavailable, detectBound)
	time.Sleep(time.Second)
	dbtest.Exec(t, r.direct, `ALTER DATABASE `+name+` CONNECTION LIMIT -1`)
	ready := r.waitReadyz(http.StatusOK, resumeBound)
	resumed := r.verify()
	t.Logf("no connection slots: not ready in %v, ready %v after freeing, clients complete %v later", detected, ready, resumed)
}

func (r *faultRig) databaseName() string {
	var name string
	if err := r.direct.QueryRow(`SELECT quote_ident(current_database())`).Scan(&name); err != nil {
		r.t.Fatal(err)
	}
	return name
}

// waitFault waits until /readyz names the fault with the SQLSTATE.
func (r *faultRig) waitFault(sqlstate string) string {
	r.t.Helper()
	var body string
	for deadline := time.Now().Add(detectBound); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var a struct {
			Fault map[string]string `json:"fault"`
		}
		_, body = readyz(r.p.URL)
		if json.Unmarshal([]byte(body), &a) == nil && a.Fault["sqlstate"] == sqlstate {
			return sqlstate + " (" + a.Fault["hint"] + ")"
		}
	}
	r.t.Fatalf("/readyz never named %s; last: %s", sqlstate, body)
	return ""
}

func terminate(t *testing.T, r *faultRig, app string) {
	t.Helper()
	dbtest.Exec(t, r.direct, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()`, app)
}

// TestFault_ServerFrozen: every server process stopped with SIGSTOP for twice
// PGSSE_DB_TIMEOUT (the kernel still acknowledges; nothing answers), then
// resumed: pgsse gives its connections up within the timeout, is ready again
// soon after the thaw, and nothing is lost.
func TestFault_ServerFrozen(t *testing.T) {
	cluster := dbtest.NewCluster(t)
	sqlDB := dbtest.Open(t, cluster.URL)
	p := startPgsse(t, cluster.URL, "PGSSE_DB_TIMEOUT="+faultTimeout.String(), "PGSSE_POLL_INTERVAL=1s", "PGSSE_HEARTBEAT=1s")
	r := &faultRig{t: t, p: p, direct: sqlDB}
	for range 3 {
		r.followers = append(r.followers, follow(t, "", p.URL+"/events?topic=videos/*"))
	}
	time.Sleep(300 * time.Millisecond)
	r.baseline = scrape(t, p.URL)
	r.stopWriter = startWriter(t, sqlDB, "z", 20*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	cluster.Freeze()
	t.Cleanup(cluster.Thaw) // never leave a frozen server to the cleanup's stop
	detected := r.waitReadyz(http.StatusServiceUnavailable, detectBound)
	time.Sleep(faultTimeout)
	cluster.Thaw()
	ready := r.waitReadyz(http.StatusOK, resumeBound)
	resumed := r.verify()
	t.Logf("server frozen: detected in %v, ready %v after the thaw, clients complete %v later", detected, ready, resumed)
}
