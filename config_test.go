package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// TestConfig_Refused: settings that would be ignored or make no sense are
// refused with a message naming them (they used to pass silently: a misspelt
// variable ignored, an empty address listening on a random port, a zero
// retention emptying the log a minute later, zeros meaning the default).
// Kubernetes' service links for a Service named pgsse pass.
func TestConfig_Refused(t *testing.T) {
	if server, ok := os.LookupEnv("PGSSE_TEST_DATABASE_URL"); ok {
		os.Unsetenv("PGSSE_TEST_DATABASE_URL") // the harness's, no setting; restored below
		t.Cleanup(func() { os.Setenv("PGSSE_TEST_DATABASE_URL", server) })
	}
	t.Setenv("PGSSE_AUTH_MODE", "none")
	t.Setenv("DATABASE_URL", "postgres://pgsse@127.0.0.1/app")
	for _, tc := range []struct{ variable, value, want string }{
		{"PGSSE_ADRR", ":9000", "did you mean $PGSSE_ADDR"},
		{"PGSSE_RETENTON", "1h", "did you mean $PGSSE_RETENTION"},
		{"PGSSE_ADDR", "", "PGSSE_ADDR is empty"},
		{"PGSSE_RETENTION", "0s", "PGSSE_RETENTION=0s"},
		{"PGSSE_HEARTBEAT", "0s", "PGSSE_HEARTBEAT=0s"},
		{"PGSSE_HEARTBEAT", "90s", "PGSSE_HEARTBEAT=1m30s"},
		{"PGSSE_WRITE_TIMEOUT", "0s", "PGSSE_WRITE_TIMEOUT=0s"},
		{"PGSSE_DB_TIMEOUT", "500ms", "PGSSE_DB_TIMEOUT=500ms"},
		{"PGSSE_QUEUE", "0", "PGSSE_QUEUE=0"},
		{"PGSSE_MAX_TOPICS", "0", "PGSSE_MAX_TOPICS=0"},
	} {
		t.Run(tc.variable+"="+tc.value, func(t *testing.T) {
			t.Setenv(tc.variable, tc.value)
			_, err := parseConfig("serve", nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	t.Run("OtherToolsVariable", func(t *testing.T) {
		t.Setenv("PGSSE_BLACKBOX_TARGET", "http://x")
		cfg, err := parseConfig("serve", nil)
		if err != nil || len(cfg.UnknownVariables) != 1 || cfg.UnknownVariables[0] != "PGSSE_BLACKBOX_TARGET" {
			t.Errorf("a variable unlike any setting: %v, %v; want it passed on to be warned about", cfg.UnknownVariables, err)
		}
	})
	t.Run("KubernetesServiceLinks", func(t *testing.T) {
		t.Setenv("PGSSE_SERVICE_HOST", "10.0.0.1")
		t.Setenv("PGSSE_PORT", "tcp://10.0.0.1:80")
		t.Setenv("PGSSE_PORT_80_TCP_ADDR", "10.0.0.1")
		if _, err := parseConfig("serve", nil); err != nil {
			t.Errorf("service links refused: %v", err)
		}
	})
}

// TestConfig_ExampleSecretRefused: the example Secret's value, applied as is,
// stops pgsse at start (anyone could forge tokens with it), and the error does
// not repeat it.
func TestConfig_ExampleSecretRefused(t *testing.T) {
	example, err := os.ReadFile("deploy/k8s/secret.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var secret string
	for _, line := range strings.Split(string(example), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "PGSSE_JWT_SECRET:"); ok {
			secret = strings.TrimSpace(v)
		}
	}
	if secret == "" {
		t.Fatal("no PGSSE_JWT_SECRET in the example Secret")
	}
	t.Setenv("DATABASE_URL", "postgres://pgsse@127.0.0.1:1/app?connect_timeout=1")
	t.Setenv("PGSSE_AUTH_MODE", "jwt")
	t.Setenv("PGSSE_JWT_SECRET", secret)
	t.Setenv("PGSSE_ADDR", "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second) // had it started
	defer cancel()
	var out strings.Builder
	err = run(ctx, []string{"serve"}, &out)
	if err == nil || !strings.Contains(err.Error(), "PGSSE_JWT_SECRET refused") {
		t.Fatalf("serve with the example secret: %v, want it refused", err)
	}
	if strings.Contains(err.Error()+out.String(), secret) {
		t.Errorf("the refusal repeats the secret: %v\n%s", err, out.String())
	}
}
