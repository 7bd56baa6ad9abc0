package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// runCLI runs the command line args with no environment of pgsse's, and
// returns what it printed on stdout and its error.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	t.Setenv("DATABASE_URL", "")
	var out bytes.Buffer
	err := run(context.Background(), args, &out)
	return out.String(), err
}

// TestCLI_Help: help is on stdout, with every flag and each subcommand on a
// line of its own, succeeds, and needs no database — as --help, -h or help.
func TestCLI_Help(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}, {"serve", "--help"}, {"help", "migrate"}} {
		out, err := runCLI(t, args...)
		if err != nil {
			t.Errorf("%v: %v, want success", args, err)
		}
		for _, want := range []string{"\n  serve ", "\n  migrate ", "\n  demo ", "\n  healthcheck ", "\n  version ", "\n  help ", "-jwt-secret", "-database-url"} {
			if !strings.Contains(out, want) {
				t.Errorf("%v: stdout lacks %q:\n%s", args, want, out)
			}
		}
		if strings.Contains(out, "-migrate pgsse migrate") {
			t.Errorf("%v: the -migrate flag's line is garbled:\n%s", args, out)
		}
	}
}

// TestCLI_Version: version and --version print the build's version and need
// no database.
func TestCLI_Version(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}, {"-version"}} {
		out, err := runCLI(t, args...)
		if err != nil || out != "pgsse "+version+"\n" {
			t.Errorf("%v: %q, %v; want \"pgsse %s\"", args, out, err, version)
		}
	}
}

// TestCLI_Mistakes: an unknown command or flag fails, saying where the help is.
func TestCLI_Mistakes(t *testing.T) {
	for _, args := range [][]string{{"serv"}, {"--no-such-flag"}, {"help", "nonsense"}} {
		if _, err := runCLI(t, args...); err == nil || !strings.Contains(err.Error(), "pgsse help") {
			t.Errorf("%v: %v, want an error pointing to pgsse help", args, err)
		}
	}
}
