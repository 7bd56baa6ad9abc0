package e2e

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestRelease_Make: make build and make image stamp the version (the nearest
// tag, else the commit, unless VERSION is given) the way the Dockerfile does,
// and tag the image with it.
func TestRelease_Make(t *testing.T) {
	makeN := func(args ...string) string {
		out, err := exec.Command("make", append([]string{"-n"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("make -n %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if out, want := makeN("image", "IMAGE=registry.example.com/pgsse", "VERSION=v9.9.9"),
		"docker build --build-arg VERSION=v9.9.9 -t registry.example.com/pgsse:v9.9.9 ."; !strings.Contains(out, want) {
		t.Errorf("make image: %q, want %q", out, want)
	}
	if out, want := makeN("build", "VERSION=v9.9.9"), `-ldflags "-X main.version=v9.9.9"`; !strings.Contains(out, want) {
		t.Errorf("make build: %q, want %q", out, want)
	}
	described, err := exec.Command("git", "describe", "--tags", "--always", "--dirty").Output()
	if err != nil {
		t.Fatal(err)
	}
	if out, want := makeN("image"), "-t pgsse:"+strings.TrimSpace(string(described))+" ."; !strings.Contains(out, want) {
		t.Errorf("make image: %q, want %q", out, want)
	}
	dockerfile, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ARG VERSION", "-X main.version=${VERSION}"} {
		if !strings.Contains(string(dockerfile), want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
}

// TestRelease_Files: the license and the changelog the README links to exist.
func TestRelease_Files(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"LICENSE", "CHANGELOG.md"} {
		if _, err := os.Stat(f); err != nil {
			t.Error(err)
		}
		if !strings.Contains(string(readme), "("+f+")") {
			t.Errorf("README does not link %s", f)
		}
	}
}
