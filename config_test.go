package main

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"
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
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				base := command(t, dbURL, append(env, "PGSSE_ADDR=127.0.0.1:0"), "serve")
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
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	base := command(t, "postgres://pgsse:"+password+"@127.0.0.1:1/app?sslmode=disable", []string{"PGSSE_ADDR=127.0.0.1:0"}, "serve")
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
