package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	neturl "net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"pgsse/internal/dbtest"
)

// TestConfig_UnparseableDatabaseURL: a password with a reserved character left
// unencoded makes DATABASE_URL unparseable. pgsse used to retry forever, logging
// the parse error, full URL and password included, at every attempt; it now
// exits 1 at once, says to percent-encode the password, and never prints it.
func TestConfig_UnparseableDatabaseURL(t *testing.T) {
	for _, password := range []string{"sec%zzret", "sec#ret", "sec ret"} {
		for _, variable := range []string{"DATABASE_URL", "PGSSE_LISTEN_DATABASE_URL"} {
			t.Run(variable+"/"+password, func(t *testing.T) {
				bad := "postgres://pgsse:" + password + "@127.0.0.1:1/app?sslmode=disable"
				dbURL, env := bad, []string(nil)
				if variable != "DATABASE_URL" {
					dbURL, env = "postgres://pgsse@127.0.0.1:1/app", []string{variable + "=" + bad}
				}
				base := command(t, dbURL, append(env, "PGSSE_ADDR=127.0.0.1:0"), "serve") // builds pgsse the first time
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				cmd := exec.CommandContext(ctx, base.Path, base.Args[1:]...)
				cmd.Env = base.Env
				out, err := cmd.CombinedOutput()
				var exit *exec.ExitError
				if !errors.As(err, &exit) || exit.ExitCode() != 1 || ctx.Err() != nil {
					t.Fatalf("serve with an unparseable %s: %v (want exit 1 at once)\n%s", variable, err, out)
				}
				if strings.Contains(string(out), password) || strings.Contains(string(out), strings.SplitN(password, "%", 2)[0]+"%") {
					t.Errorf("output contains the password:\n%s", out)
				}
				if !strings.Contains(string(out), variable) || !strings.Contains(string(out), "percent-encode") {
					t.Errorf("output does not say to percent-encode the password in %s:\n%s", variable, out)
				}
			})
		}
	}
}

// TestConfig_PasswordWithAtSign: an unencoded @ in the password still parses
// (the last @ ends the user information); pgsse waits for the unreachable
// database as for any outage, and the password appears in no log line.
func TestConfig_PasswordWithAtSign(t *testing.T) {
	const password = "sec@ret"
	base := command(t, "postgres://pgsse:"+password+"@127.0.0.1:1/app?sslmode=disable", []string{"PGSSE_ADDR=127.0.0.1:0"}, "serve")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, base.Path, base.Args[1:]...)
	cmd.Env = base.Env
	out, _ := cmd.CombinedOutput()
	if ctx.Err() == nil {
		t.Fatalf("serve exited before the deadline; want it waiting for the database:\n%s", out)
	}
	if !strings.Contains(string(out), "retrying") {
		t.Errorf("no retry logged in 3 s:\n%s", out)
	}
	if strings.Contains(string(out), password) {
		t.Errorf("output contains the password:\n%s", out)
	}
}

// TestReadyz_ValidJSON: with two things pending, /readyz is still one JSON
// object (it printed Go's %q of a slice).
func TestReadyz_ValidJSON(t *testing.T) {
	p := launchPgsse(t, freePort(t), "postgres://postgres@127.0.0.1:1/app?sslmode=disable")
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get(p.URL + "/readyz")
		if err != nil {
			continue
		}
		var body struct {
			Status     string   `json:"status"`
			WaitingFor []string `json:"waiting_for"`
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("/readyz is not JSON: %v", err)
		}
		if len(body.WaitingFor) >= 2 {
			return
		}
	}
	t.Fatal("/readyz never named two pending things")
}

// TestReadyz_LogFault: when the log cannot be read for a reason that will not
// pass by itself (here its table renamed away), /readyz fails naming the log and
// the SQLSTATE with a hint, and an error line says the same; fixed, pgsse is
// ready again. It used to stay ready with one warning line.
func TestReadyz_LogFault(t *testing.T) {
	url := dbtest.New(t)
	sqlDB := dbtest.Open(t, url)
	p := startPgsse(t, url, "PGSSE_POLL_INTERVAL=200ms")
	dbtest.Exec(t, sqlDB, `ALTER TABLE pgsse.events RENAME TO events_away`)

	type answer struct {
		WaitingFor []string          `json:"waiting_for"`
		Fault      map[string]string `json:"fault"`
	}
	readyz := func() (int, answer) {
		resp, err := http.Get(p.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var a answer
		_ = json.NewDecoder(resp.Body).Decode(&a)
		return resp.StatusCode, a
	}
	var a answer
	for deadline := time.Now().Add(10 * time.Second); a.Fault["sqlstate"] != "42P01"; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never named the fault; last %+v", a)
		}
		_, a = readyz()
	}
	if a.Fault["hint"] == "" || !strings.Contains(strings.Join(a.WaitingFor, ","), "log") {
		t.Errorf("/readyz %+v: want waiting for the log, with a hint", a)
	}
	if !hasLine(p.logs.String(), `"level":"error","sqlstate":"42P01"`) {
		t.Errorf("no error line with the SQLSTATE:\n%s", p.logs)
	}
	if m := scrape(t, p.URL); m["pgsse_log_fault{sqlstate=42P01}"] != 1 || m["pgsse_log_read_errors_total{class=fault}"] < 1 {
		t.Errorf("metrics during the fault: pgsse_log_fault{sqlstate=42P01} = %v, fault errors %v; want 1 and ≥ 1",
			m["pgsse_log_fault{sqlstate=42P01}"], m["pgsse_log_read_errors_total{class=fault}"])
	}

	dbtest.Exec(t, sqlDB, `ALTER TABLE pgsse.events_away RENAME TO events`)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if status, _ := readyz(); status == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("not ready again after the fix")
		}
	}
	if m := scrape(t, p.URL); m["pgsse_log_fault{sqlstate=42P01}"] != 0 {
		t.Error("pgsse_log_fault still set after the fix")
	}
}

// TestStream_FaultLogged: a stream whose snapshot fails for a reason that will
// not pass (the videos table renamed away) waits with heartbeats, as in an
// outage, but says so as an error with the SQLSTATE and a hint, not as a
// "database unavailable" warning; fixed, it is served.
func TestStream_FaultLogged(t *testing.T) {
	url := dbtest.New(t)
	sqlDB := dbtest.Open(t, url)
	dbtest.InsertVideo(t, sqlDB, "a")
	p := startPgsse(t, url)
	dbtest.Exec(t, sqlDB, `ALTER TABLE videos RENAME TO videos_away`)
	s := open(t, p.URL+"/videos/a/events", "")
	for deadline := time.Now().Add(10 * time.Second); !hasLine(p.logs.String(), `"message":"database fault; stream waits"`); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no fault line:\n%s", p.logs)
		}
	}
	if !hasLine(p.logs.String(), `"sqlstate":"42P01"`) {
		t.Errorf("the fault line lacks the SQLSTATE:\n%s", p.logs)
	}
	if code, body := readyz(p.URL); code != http.StatusServiceUnavailable || !strings.Contains(body, `"streams"`) || !strings.Contains(body, "42P01") {
		t.Errorf("/readyz while snapshots fail: %d %s, want 503 naming streams and 42P01", code, body)
	}
	dbtest.Exec(t, sqlDB, `ALTER TABLE videos_away RENAME TO videos`)
	if snap := s.next(t); !snap.env.Snapshot {
		t.Fatalf("after the fix got %s %s, want a's snapshot", snap.Type, snap.Data)
	}
	if code, body := readyz(p.URL); code != http.StatusOK {
		t.Errorf("/readyz after the fix: %d %s", code, body)
	}
}

// TestReadyz_MissingDatabase: DATABASE_URL naming a database that does not
// exist is a fault, not an outage: /readyz names 3D000 with a hint, and the
// error line says so (it used to be waited out in silence, /readyz saying only
// "migrations").
func TestReadyz_MissingDatabase(t *testing.T) {
	u, _ := neturl.Parse(dbtest.ServerURL(t))
	u.Path = "/pgsse_no_such_database"
	p := launchPgsse(t, freePort(t), u.String())
	var body string
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(body, "3D000"); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never named 3D000; last: %s\n%s", body, p.logs)
		}
		_, body = readyz(p.URL)
	}
	if !strings.Contains(body, "does not exist") {
		t.Errorf("/readyz %s: want the hint", body)
	}
	if !hasLine(p.logs.String(), `"sqlstate":"3D000"`) {
		t.Errorf("no error line with 3D000:\n%s", p.logs)
	}
}
