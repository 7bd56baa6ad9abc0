package main

import (
	"context"
	"database/sql"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"pgsse/internal/dbtest"
)

// TestSmoke runs the load tool briefly against a real pgsse: 500 streams over
// 10 topics, 100 events/s for 5 s, both ways of writing. Correctness, not
// timing: every stream gets every event of its topic once.
func TestSmoke(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "pgsse")
	if out, err := exec.Command("go", "build", "-o", bin, "..").CombinedOutput(); err != nil {
		t.Fatalf("build pgsse: %v\n%s", err, out)
	}
	url := dbtest.New(t)
	db, err := sql.Open("postgres", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, mode := range []string{"update", "publish"} {
		t.Run(mode, func(t *testing.T) {
			sc := scenario{Name: "smoke", Streams: 500, Topics: 10, Rate: 100, Mode: mode, Duration: 5 * time.Second, Conns: 2, Procs: 1}
			r, err := withServer(context.Background(), bin, url, func(base string, pid int) (result, error) {
				return runScenario(context.Background(), db, base, pid, sc)
			})
			if err != nil {
				t.Fatal(err)
			}
			report(os.Stderr, []result{r})
			if r.Missing != 0 || r.Duplicated != 0 || r.Expected == 0 || r.Delivered != r.Expected {
				t.Errorf("delivered %d of %d expected: %d missing, %d duplicated", r.Delivered, r.Expected, r.Missing, r.Duplicated)
			}
		})
	}
}
