package auth

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"

	"pgsse/event"
	"pgsse/stream"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func pemFile(t *testing.T, dir string, pubs ...any) string {
	t.Helper()
	var b []byte
	for _, pub := range pubs {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})...)
	}
	path := filepath.Join(dir, "keys.pem")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func token(t *testing.T, m jwt.SigningMethod, key any, topics ...string) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, jwt.MapClaims{
		"sub": "u", "exp": time.Now().Add(time.Minute).Unix(), "pgsse": map[string]any{"topics": topics},
	}).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func authorize(v *Verifier, tok string, topics ...string) (stream.Access, error) {
	r := httptest.NewRequest(http.MethodGet, "/events", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	return v.Authorize(r, topics)
}

func status(err error) int {
	var re *stream.RequestError
	if errors.As(err, &re) {
		return re.Status
	}
	return 0
}

func TestVerifier_PEM(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	edPub, edKey, _ := ed25519.GenerateKey(rand.Reader)
	v, err := New(Config{KeyFile: pemFile(t, t.TempDir(), &rsaKey.PublicKey, edPub)})
	if err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{
		"RS256": token(t, jwt.SigningMethodRS256, rsaKey, "videos/a"),
		"PS256": token(t, jwt.SigningMethodPS256, rsaKey, "videos/a"),
		"EdDSA": token(t, jwt.SigningMethodEdDSA, edKey, "videos/a"),
	} {
		if access, err := authorize(v, tok, "videos/a"); err != nil || access.Subject != "u" || access.Expires.IsZero() {
			t.Errorf("%s: %+v, %v", name, access, err)
		}
	}
	// No secret configured: HMAC tokens are refused, whatever key signed them.
	der, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	if _, err := authorize(v, token(t, jwt.SigningMethodHS256, pubPEM, "videos/a"), "videos/a"); status(err) != 401 {
		t.Errorf("HS256 signed with the public key: %v, want 401", err)
	}
}

func TestNew_Refuses(t *testing.T) {
	for name, cfg := range map[string]Config{
		"NoKey":       {},
		"ShortSecret": {Secret: []byte("short")},
		// The example Secret's own value (deploy/k8s/secret.example.yaml), and
		// others as long as the check wants and as public.
		"ExamplePlaceholder": {Secret: []byte("change-me-to-at-least-32-random-bytes")},
		"Placeholder":        {Secret: []byte("replace-this-with-your-own-secret-value")},
		"Repeated":           {Secret: []byte(strings.Repeat("a", 48))},
		"Pattern":            {Secret: []byte(strings.Repeat("ab12", 12))},
		"ShortHex":           {Secret: []byte("00112233445566778899aabbccddeeff")},
		"MissingFile":        {KeyFile: "/nonexistent/keys.pem"},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// What the docs tell operators to generate is accepted.
	for _, ok := range []string{
		"q7JcV1m4yXz0fR2kP9sT3uW8bN5dH6gL0aE1iO4rY7vC2xZ9nM3jK8pQ5wS6tU",   // openssl rand -base64 48
		"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", // openssl rand -hex 32
	} {
		if _, err := New(Config{Secret: []byte(ok)}); err != nil {
			t.Errorf("random secret %q refused: %v", ok, err)
		}
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.pem")
	os.WriteFile(bad, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600)
	if _, err := New(Config{KeyFile: bad}); err == nil {
		t.Error("a private key block was accepted as a public key file")
	}
}

// TestVerifier_Reload: replacing the key file swaps the keys without a restart;
// a broken replacement keeps the previous keys.
func TestVerifier_Reload(t *testing.T) {
	dir := t.TempDir()
	oldKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	newKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	path := pemFile(t, dir, &oldKey.PublicKey)
	v, err := New(Config{KeyFile: path})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- v.Run(ctx) }()
	defer func() { cancel(); <-done }()

	oldTok, newTok := token(t, jwt.SigningMethodRS256, oldKey, "videos/a"), token(t, jwt.SigningMethodRS256, newKey, "videos/a")
	if _, err := authorize(v, newTok, "videos/a"); err == nil {
		t.Fatal("token of a key not yet in the file accepted")
	}
	replace := func(write func()) {
		write()
		later := time.Now().Add(time.Minute)
		os.Chtimes(path, later, later) // a new mtime, whatever the clock's resolution
	}
	replace(func() { pemFile(t, dir, &newKey.PublicKey) })
	deadline := time.Now().Add(10 * time.Second)
	for _, err := authorize(v, newTok, "videos/a"); err != nil; _, err = authorize(v, newTok, "videos/a") {
		if time.Now().After(deadline) {
			t.Fatal("new key not picked up within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := authorize(v, oldTok, "videos/a"); err == nil {
		t.Error("the replaced key still verifies")
	}

	replace(func() { os.WriteFile(path, []byte("garbage"), 0o600) })
	time.Sleep(2500 * time.Millisecond)
	if _, err := authorize(v, newTok, "videos/a"); err != nil {
		t.Errorf("a broken key file dropped the working keys: %v", err)
	}
}

func TestCovers(t *testing.T) {
	grants := []event.Topic{}
	for _, s := range []string{"videos/a", "org/1/*"} {
		g, _ := event.ParseTopic(s)
		grants = append(grants, g)
	}
	for topic, want := range map[string]bool{
		"videos/a": true, "videos/b": false, "videos/*": false,
		"org/1/x": true, "org/1/*": true, "org/1/x/*": true, "org/2/x": false, "org/*": false,
	} {
		if got := covers(grants, topic); got != want {
			t.Errorf("covers(%s) = %v, want %v", topic, got, want)
		}
	}
}

// TestVerifier_ReloadSymlinkSwap: a key file mounted from a Kubernetes Secret
// is replaced the way the kubelet's atomic writer does it (pkg/volume/util/
// atomic_writer.go): a new timestamped directory, a "..data" symlink renamed
// over the old one, the old directory removed. The new file keeps the old
// one's size and mtime, so only its identity tells it apart.
func TestVerifier_ReloadSymlinkSwap(t *testing.T) {
	mount := t.TempDir()
	write := func(version string, pub any) string {
		dir := filepath.Join(mount, "..2026_12_03_19_00_00."+version)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		pemFile(t, dir, pub)
		return filepath.Base(dir)
	}
	oldKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	newKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	oldDir := write("1", &oldKey.PublicKey)
	must(t, os.Symlink(oldDir, filepath.Join(mount, "..data")))
	path := filepath.Join(mount, "keys.pem")
	must(t, os.Symlink(filepath.Join("..data", "keys.pem"), path))

	v, err := New(Config{KeyFile: path})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- v.Run(ctx) }()
	defer func() { cancel(); <-done }()

	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	newDir := write("2", &newKey.PublicKey)
	newFile := filepath.Join(mount, newDir, "keys.pem")
	must(t, os.Chtimes(newFile, before.ModTime(), before.ModTime()))
	if after, _ := os.Stat(newFile); after.Size() != before.Size() {
		t.Fatalf("sizes differ (%d, %d): the test would not isolate the swap", after.Size(), before.Size())
	}
	must(t, os.Symlink(newDir, filepath.Join(mount, "..data_tmp")))
	must(t, os.Rename(filepath.Join(mount, "..data_tmp"), filepath.Join(mount, "..data")))
	must(t, os.RemoveAll(filepath.Join(mount, oldDir)))

	newTok := token(t, jwt.SigningMethodRS256, newKey, "videos/a")
	deadline := time.Now().Add(10 * time.Second)
	for _, err := authorize(v, newTok, "videos/a"); err != nil; _, err = authorize(v, newTok, "videos/a") {
		if time.Now().After(deadline) {
			t.Fatal("the swapped-in key was not picked up within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := authorize(v, token(t, jwt.SigningMethodRS256, oldKey, "videos/a"), "videos/a"); err == nil {
		t.Error("the swapped-out key still verifies")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
