package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// Pinned runs put the server alone on CPU 0 and the load (this process, its
// workers, PostgreSQL) on the others, so that the load tool does not starve
// the server it measures.
const serverCPU = "0"

func loadCPUs() string { return fmt.Sprintf("1-%d", runtime.NumCPU()-1) }
func allCPUs() string  { return fmt.Sprintf("0-%d", runtime.NumCPU()-1) }

// pinLoad moves this process and PostgreSQL (the postmaster, whose new
// backends inherit it, and its children) to cpus.
func pinLoad(ctx context.Context, db *sql.DB, cpus string) error {
	pids := []int{os.Getpid()}
	var dataDir string
	if err := db.QueryRowContext(ctx, `SELECT current_setting('data_directory')`).Scan(&dataDir); err != nil {
		return fmt.Errorf("find PostgreSQL's data directory: %w", err)
	}
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return fmt.Errorf("find the postmaster: %w", err)
	}
	postmaster, err := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
	if err != nil {
		return fmt.Errorf("postmaster.pid: %w", err)
	}
	pids = append(pids, postmaster)
	pids = append(pids, childrenOf(postmaster)...)
	for _, pid := range pids {
		if out, err := exec.CommandContext(ctx, "taskset", "-a", "-c", "-p", cpus, strconv.Itoa(pid)).CombinedOutput(); err != nil {
			return fmt.Errorf("taskset %d: %v: %s", pid, err, out)
		}
	}
	return nil
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(pid int) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			out = append(out, child)
		}
	}
	return out
}
