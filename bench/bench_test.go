package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"pgsse/internal/dbtest"
	"pgsse/internal/testbin"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Remove()
	os.Exit(code)
}

// TestSmoke runs the load tool briefly against a real pgsse: 500 streams over
// 10 topics, 100 events/s for 5 s, both ways of writing. Correctness, not
// timing: every stream gets every event of its topic once.
func TestSmoke(t *testing.T) {
	bin := testbin.BuildRelease(t)
	url := dbtest.New(t)
	db, err := sql.Open("postgres", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, mode := range []string{"update", "publish"} {
		t.Run(mode, func(t *testing.T) {
			sc := scenario{Name: "smoke", Streams: 500, Topics: 10, Rate: 100, Mode: mode, Duration: 5 * time.Second, Conns: 2, Procs: 1}
			r, err := withServer(context.Background(), bin, url, false, func(p proc) (result, error) {
				return runScenario(context.Background(), db, p, sc)
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

var largeClients = flag.Int("large-clients", 8, "clients of TestLargeReplay_MemoryBounded: 8 or 50")

// TestLargeReplay_MemoryBounded: a transaction of 100 events of 1 MB replayed
// from the log by 8 clients at once, then by 50: the server's peak resident
// memory stays under 256 MiB and 512 MiB (it was 4.9 GB: whole batches read,
// decoded and encoded at once per client).
//
// make test runs the 8-client case; -large-clients=50 runs the other
// (a minute: 5 GB delivered).
func TestLargeReplay_MemoryBounded(t *testing.T) {
	bin := testbin.BuildRelease(t)
	limits := map[int]float64{8: 256 << 20, 50: 512 << 20}
	for _, c := range []struct {
		clients int
		limit   float64
	}{{*largeClients, limits[*largeClients]}} {
		t.Run(fmt.Sprint(c.clients, "_clients"), func(t *testing.T) {
			url := dbtest.New(t)
			db := dbtest.Open(t, url)
			var peak float64
			_, err := withServer(context.Background(), bin, url, false, func(p proc) (result, error) {
				var err error
				peak, err = largeReplay(context.Background(), db, p.URL, p.PID, c.clients, 100, 1<<20)
				return result{}, err
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%d clients replaying 100 × 1 MB: peak RSS %.0f MiB", c.clients, peak/(1<<20))
			if peak > c.limit {
				t.Errorf("peak RSS %.0f MiB, want under %.0f MiB", peak/(1<<20), c.limit/(1<<20))
			}
		})
	}
}

var (
	burstStreams = flag.Int("burst-streams", 0, "streams of TestBurst_CaughtUpInPlace (0: skip; the issue's case is 100)")
	burstRows    = flag.Int("burst-rows", 50000, "rows of TestBurst_CaughtUpInPlace's UPDATE")
)

// TestBurst_CaughtUpInPlace: one UPDATE of -burst-rows videos watched by
// -burst-streams videos/* streams, against a non-race build: every stream gets
// every event once, in order, on its first connection; it reports peak RSS.
// make test runs e2e's smaller TestStream_BurstCaughtUpInPlace;
// this one takes minutes: go test ./bench -run TestBurst -burst-streams=100 -v
func TestBurst_CaughtUpInPlace(t *testing.T) {
	if *burstStreams == 0 {
		t.Skip("set -burst-streams")
	}
	bin := testbin.BuildRelease(t)
	url := dbtest.New(t)
	db := dbtest.Open(t, url)
	var peak float64
	start := time.Now()
	_, err := withServer(context.Background(), bin, url, false, func(p proc) (result, error) {
		var err error
		peak, err = burst(context.Background(), db, p.URL, p.PID, *burstStreams, *burstRows)
		return result{}, err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d streams × %d-row UPDATE: all delivered, no reconnect, in %v; peak RSS %.0f MiB", *burstStreams, *burstRows, time.Since(start).Round(time.Second), peak/(1<<20))
}

// TestCommitPath_Smoke runs make bench-commit's comparison briefly on the test
// server: pgbench through the bare trigger, pgsse's triggers alone, and pgsse,
// then the big statement both ways. Correctness, not timing: the log holds
// exactly one event per committed change in both pgsse databases.
func TestCommitPath_Smoke(t *testing.T) {
	if _, err := exec.LookPath("pgbench"); err != nil {
		t.Skip("no pgbench")
	}
	bin := testbin.BuildRelease(t)
	var out strings.Builder
	run := commitRun{Writers: []int{2}, Rounds: 1, Duration: time.Second, Rows: 1000}
	if err := runCommitPath(context.Background(), bin, []cluster{{"test", dbtest.ServerURL(t)}}, run, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	t.Log(out.String())
	if rows := strings.Count(out.String(), "\n| test | "); rows != 2 {
		t.Errorf("%d rows of results, want 2 (pgbench, the big statement)", rows)
	}
}
