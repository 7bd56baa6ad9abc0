// Package testbin builds the pgsse binary for the tests that run it as a
// process (e2e, bench, deploy): the one way they all get it, built once per
// test process.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// Version is stamped into the binaries built here.
const Version = "v0.0.0-test"

// build is one kind of binary, built at most once per process.
type build struct {
	once  sync.Once
	flags []string
	dir   string // holds path; removed by Remove
	path  string
	err   error
}

var (
	// withRace is built like the tests: with the race detector when they
	// have it, so a race in the server fails them too.
	withRace = &build{flags: raceFlags}
	// release is built as the image builds it: no race detector, which
	// would multiply the memory that memory-bound tests measure.
	release = &build{flags: []string{"-trimpath"}}
)

// Build returns the path of pgsse built like the tests are (race detector
// included when they have it).
func Build(tb testing.TB) string { tb.Helper(); return withRace.get(tb) }

// BuildRelease returns the path of pgsse built as it ships, for measuring it.
func BuildRelease(tb testing.TB) string { tb.Helper(); return release.get(tb) }

func (b *build) get(tb testing.TB) string {
	tb.Helper()
	root := RepoRoot(tb) // outside once.Do: a Fatal there would leave it done
	b.once.Do(func() {
		if b.dir, b.err = os.MkdirTemp("", "pgsse-testbin-"); b.err != nil {
			return
		}
		b.path = filepath.Join(b.dir, "pgsse")
		args := append(append([]string{"build", "-o", b.path}, b.flags...), "-ldflags", "-X main.version="+Version, ".")
		cmd := exec.Command("go", args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED="+cgo(b.flags))
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go %v: %w\n%s", args, err, out)
		}
	})
	if b.err != nil {
		tb.Fatalf("build pgsse: %v", b.err)
	}
	return b.path
}

// cgo: the race detector needs cgo; a release binary is static.
func cgo(flags []string) string {
	for _, f := range flags {
		if f == "-race" {
			return "1"
		}
	}
	return "0"
}

// Remove deletes what Build and BuildRelease made; TestMain calls it after
// the tests.
func Remove() {
	for _, b := range []*build{withRace, release} {
		if b.dir != "" {
			os.RemoveAll(b.dir)
		}
	}
}

// RepoRoot is the directory of go.mod, above the working directory.
func RepoRoot(tb testing.TB) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for ; dir != "/"; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
	}
	tb.Fatal("go.mod not found above the working directory")
	return ""
}
