package e2e

import (
	"database/sql"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"pgsse/internal/dbtest"
)

// makeRun is `make run` started in its own process group, as a terminal runs
// it, so that interrupt reaches every process of it, as Ctrl-C does.
type makeRun struct {
	t    *testing.T
	cmd  *exec.Cmd
	url  string
	out  *syncBuffer
	done chan struct{}
}

func startMakeRun(t *testing.T, env []string, args ...string) *makeRun {
	t.Helper()
	m := &makeRun{t: t, url: fmt.Sprintf("http://127.0.0.1:%d", freePort(t)), out: &syncBuffer{}, done: make(chan struct{})}
	m.cmd = exec.Command("make", append([]string{"--no-print-directory", "run"}, args...)...)
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "DATABASE_URL=") && !strings.HasPrefix(e, "PGSSE_") && !strings.HasPrefix(e, "SIMULATE=") {
			m.cmd.Env = append(m.cmd.Env, e)
		}
	}
	m.cmd.Env = append(m.cmd.Env, append([]string{"PGSSE_ADDR=" + strings.TrimPrefix(m.url, "http://"),
		fmt.Sprintf("PGSSE_ADMIN_ADDR=127.0.0.1:%d", freePort(t)), "PGSSE_DRAIN=1s"}, env...)...)
	m.cmd.Stdout, m.cmd.Stderr = m.out, m.out
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = m.cmd.Wait(); close(m.done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
		<-m.done
		if t.Failed() {
			t.Logf("make run:\n%s", m.out)
		}
	})
	deadline := time.Now().Add(3 * time.Minute) // make run builds pgsse first
	for {
		if resp, err := http.Get(m.url + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return m
			}
		}
		select {
		case <-m.done:
			t.Fatalf("make run exited early:\n%s", m.out)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("make run not ready within 3 minutes:\n%s", m.out)
		}
	}
}

// simulating: a `pgsse demo` runs in make run's process group. make run
// starts it before pgsse serve, so once pgsse is ready the answer is final.
func (m *makeRun) simulating() bool {
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		pid, err := strconv.Atoi(filepath.Base(p))
		if err != nil {
			continue
		}
		if pgid, err := syscall.Getpgid(pid); err != nil || pgid != m.cmd.Process.Pid {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join(p, "cmdline"))
		if args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00"); len(args) == 2 && strings.HasSuffix(args[0], "pgsse") && args[1] == "demo" {
			return true
		}
	}
	return false
}

// interrupt is Ctrl-C: SIGINT to the whole group, then wait for make to end.
func (m *makeRun) interrupt() string {
	m.t.Helper()
	if err := syscall.Kill(-m.cmd.Process.Pid, syscall.SIGINT); err != nil {
		m.t.Fatal(err)
	}
	select {
	case <-m.done:
	case <-time.After(time.Minute):
		m.t.Fatalf("make run did not end within a minute of Ctrl-C:\n%s", m.out)
	}
	return m.out.String()
}

func videoCount(t *testing.T, sqlDB *sql.DB) int {
	t.Helper()
	var n int
	if err := sqlDB.QueryRow(`SELECT count(*) FROM videos`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestMakeRun_OwnDatabase: with DATABASE_URL exported, make run serves that
// database but writes no demo data into it, starts no throwaway server, and
// never prints the password; SIMULATE=true is the explicit way to have demo
// videos written there.
func TestMakeRun_OwnDatabase(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs make run")
	}
	own := strings.Replace(dbtest.New(t), "postgres@", "postgres:n0t-printed@", 1) // trust auth ignores it
	sqlDB := dbtest.Open(t, own)
	throwaway := dbtest.ServerDir(t)

	m := startMakeRun(t, []string{"DATABASE_URL=" + own}, "RUN_PG_DIR="+throwaway, fmt.Sprintf("RUN_PG_PORT=%d", freePort(t)))
	if m.simulating() {
		t.Error("the simulator runs against the user's own database")
	}
	out := m.interrupt()
	if n := videoCount(t, sqlDB); n != 0 {
		t.Errorf("make run wrote %d demo videos into the user's database", n)
	}
	if _, err := os.Stat(throwaway); !os.IsNotExist(err) {
		t.Errorf("make run started a throwaway server beside the user's database (%v)", err)
	}
	if strings.Contains(out, "n0t-printed") {
		t.Errorf("make run printed the database password:\n%s", out)
	}

	t.Run("SIMULATE=true", func(t *testing.T) {
		m := startMakeRun(t, []string{"DATABASE_URL=" + own, "SIMULATE=true"}, "RUN_PG_DIR="+throwaway)
		if !m.simulating() {
			t.Fatal("SIMULATE=true did not start the simulator")
		}
		for deadline := time.Now().Add(30 * time.Second); videoCount(t, sqlDB) == 0; time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the simulator wrote no video within 30 s")
			}
		}
		m.interrupt()
	})
}

// TestMakeRun_Throwaway: without DATABASE_URL, make run starts its own server
// and the simulator, and Ctrl-C stops that server again, saying so.
func TestMakeRun_Throwaway(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs make run")
	}
	dir := dbtest.ServerDir(t)
	m := startMakeRun(t, nil, "RUN_PG_DIR="+dir, fmt.Sprintf("RUN_PG_PORT=%d", freePort(t)))
	if !m.simulating() {
		t.Error("the simulator does not run against the throwaway database")
	}
	out := m.interrupt()
	if !strings.Contains(out, "stopped the throwaway PostgreSQL") {
		t.Errorf("make run did not say the throwaway server stopped:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "postmaster.pid")); !os.IsNotExist(err) {
		t.Errorf("the throwaway server still runs after Ctrl-C (postmaster.pid: %v)", err)
	}
}
