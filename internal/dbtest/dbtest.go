// Package dbtest gives tests real PostgreSQL databases: New clones a fresh
// database from a migrated template on the server named by PGSSE_TEST_DATABASE_URL (the
// throwaway one `make test` starts); NewCluster starts a private server, for tests
// that restart it.
package dbtest

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lib/pq"

	"pgsse/db"
	"pgsse/internal/testbin"
	"pgsse/migrations"
)

// ServerURL returns the URL of the test server's maintenance database, or
// skips the test when there is none (plain go test; make test always has one).
func ServerURL(tb testing.TB) string {
	tb.Helper()
	u := os.Getenv("PGSSE_TEST_DATABASE_URL")
	if u == "" {
		tb.Skip("PGSSE_TEST_DATABASE_URL is not set: make test runs this against a throwaway PostgreSQL")
	}
	return u
}

// New returns the URL of a new, migrated database, dropped when the test ends.
func New(tb testing.TB) string {
	tb.Helper()
	return newDatabase(tb, ServerURL(tb), true)
}

// NewEmpty returns the URL of a new database with no migrations applied.
func NewEmpty(tb testing.TB) string {
	tb.Helper()
	return newDatabase(tb, ServerURL(tb), false)
}

// Open opens url and closes it when the test ends.
func Open(tb testing.TB, url string) *sql.DB {
	tb.Helper()
	sqlDB, err := sql.Open("postgres", url)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { sqlDB.Close() })
	return sqlDB
}

// Exec runs statements on sqlDB, failing the test on error.
func Exec(tb testing.TB, sqlDB *sql.DB, query string, args ...any) {
	tb.Helper()
	if _, err := sqlDB.Exec(query, args...); err != nil {
		tb.Fatalf("exec %q: %v", query, err)
	}
}

// Begin starts a transaction, runs query in it and leaves it open; the test
// commits it, or it is rolled back when the test ends.
func Begin(tb testing.TB, sqlDB *sql.DB, query string, args ...any) *sql.Tx {
	tb.Helper()
	tx, err := sqlDB.Begin()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { tx.Rollback() })
	if _, err := tx.Exec(query, args...); err != nil {
		tb.Fatalf("exec %q: %v", query, err)
	}
	return tx
}

// CreateVideos creates the legacy application's videos table as table (e.g.
// "videos" or "app.videos"), as the application's own schema has it.
func CreateVideos(tb testing.TB, sqlDB *sql.DB, table string) {
	tb.Helper()
	Exec(tb, sqlDB, `CREATE TABLE `+table+` (
		id TEXT PRIMARY KEY,
		created_at TIMESTAMP WITH TIME ZONE NOT NULL,
		updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
		raw_file_path TEXT NOT NULL,
		processed_file_path TEXT,
		processing_status TEXT NOT NULL DEFAULT 'pending')`)
}

// InsertVideo runs the legacy upload API's statement, unchanged.
func InsertVideo(tb testing.TB, sqlDB *sql.DB, id string) {
	tb.Helper()
	Exec(tb, sqlDB, `INSERT INTO videos (id, created_at, updated_at, raw_file_path) VALUES ($1, now(), now(), $2)`, id, "/raw/"+id)
}

// SetStatus runs the legacy worker's statement, unchanged.
func SetStatus(tb testing.TB, sqlDB *sql.DB, id, status string) {
	tb.Helper()
	Exec(tb, sqlDB, `UPDATE videos SET processing_status = $2 WHERE id = $1`, id, status)
}

func newDatabase(tb testing.TB, server string, migrated bool) string {
	admin := Open(tb, server)
	template := "template0"
	if migrated {
		template = ensureTemplate(tb, admin, server)
	}
	name := fmt.Sprintf("t_%d_%d", os.Getpid(), time.Now().UnixNano())
	var err error
	for attempt := 0; attempt < 50; attempt++ {
		_, err = admin.Exec("CREATE DATABASE " + name + " TEMPLATE " + template)
		if !isCode(err, "55006") { // template busy: another clone is being made
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		tb.Fatalf("create test database: %v", err)
	}
	tb.Cleanup(func() {
		if _, err := admin.Exec("DROP DATABASE " + name + " WITH (FORCE)"); err != nil {
			tb.Errorf("drop test database: %v", err)
		}
	})
	return withDatabase(tb, server, name)
}

// ensureTemplate creates, once per migration set, a database with the migrations
// applied, named after their hash so a changed migration gets a new template.
func ensureTemplate(tb testing.TB, admin *sql.DB, server string) string {
	sum := sha256.New()
	err := fs.WalkDir(migrations.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(migrations.FS, path)
		sum.Write([]byte(path))
		sum.Write(b)
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	name := "pgsse_tmpl_" + hex.EncodeToString(sum.Sum(nil))[:12]

	ctx := context.Background()
	conn, err := admin.Conn(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close()
	// Test packages run in parallel processes: one builds the template.
	if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock($1, $2)", db.LockClass, db.LockTestTemplate); err != nil {
		tb.Fatal(err)
	}
	defer conn.ExecContext(ctx, "SELECT pg_advisory_unlock($1, $2)", db.LockClass, db.LockTestTemplate)

	var exists bool
	if err := conn.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1 AND datistemplate)", name).Scan(&exists); err != nil {
		tb.Fatal(err)
	}
	if exists {
		return name
	}
	if _, err := conn.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name); err != nil {
		tb.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "CREATE DATABASE "+name+" TEMPLATE template0"); err != nil {
		tb.Fatal(err)
	}
	store, err := db.Open(withDatabase(tb, server, name), 0)
	if err != nil {
		tb.Fatal(err)
	}
	err = store.Migrate(ctx, io.Discard)
	store.Close()
	if err != nil {
		tb.Fatalf("migrate template: %v", err)
	}
	if _, err := conn.ExecContext(ctx, "ALTER DATABASE "+name+" WITH IS_TEMPLATE true"); err != nil {
		tb.Fatal(err)
	}
	return name
}

func withDatabase(tb testing.TB, server, name string) string {
	u, err := url.Parse(server)
	if err != nil {
		tb.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

func isCode(err error, code string) bool {
	pqErr, ok := err.(*pq.Error)
	return ok && string(pqErr.Code) == code
}

// Cluster is a private PostgreSQL server that a test may stop and restart.
type Cluster struct {
	tb     testing.TB
	dir    string
	script string
	port   int
	URL    string // of its database pgsse, not migrated
}

// NewCluster starts a private server in a temporary directory; it is stopped
// when the test ends.
func NewCluster(tb testing.TB) *Cluster {
	tb.Helper()
	c := &Cluster{tb: tb, dir: ServerDir(tb), script: filepath.Join(testbin.RepoRoot(tb), "scripts", "pg.sh"), port: freePort(tb)}
	c.URL = strings.TrimSpace(c.run("start", c.dir, fmt.Sprint(c.port)))
	tb.Cleanup(func() { c.run("stop", c.dir) })
	return c
}

// ServerDir returns a data directory for a server that scripts/pg.sh starts,
// not yet created, in a temporary directory removed when the test ends.
func ServerDir(tb testing.TB) string {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "pg")
	// The server runs as postgres when tests run as root: let it into the directory.
	if err := os.Chmod(filepath.Dir(dir), 0o777); err != nil {
		tb.Fatal(err)
	}
	for d := filepath.Dir(dir); d != "/"; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o001 == 0 {
			_ = os.Chmod(d, fi.Mode().Perm()|0o001)
		}
	}
	return dir
}

// Restart restarts the server with a fast shutdown, ending every connection.
func (c *Cluster) Restart() {
	c.tb.Helper()
	c.run("restart", c.dir)
}

// Freeze stops the server and every backend with SIGSTOP: sockets stay open
// and the kernel keeps acknowledging, nothing answers (a frozen host, a
// stalled disk). Thaw lets them go on where they were.
func (c *Cluster) Freeze() { c.signalAll(syscall.SIGSTOP) }

// Thaw resumes a frozen server.
func (c *Cluster) Thaw() { c.signalAll(syscall.SIGCONT) }

// serverPIDs returns the postmaster's pid and its children's.
func (c *Cluster) serverPIDs() []int {
	c.tb.Helper()
	pidFile, err := os.ReadFile(filepath.Join(c.dir, "postmaster.pid"))
	if err != nil {
		c.tb.Fatal(err)
	}
	var pid int
	if _, err := fmt.Sscan(string(pidFile), &pid); err != nil {
		c.tb.Fatalf("postmaster.pid: %v", err)
	}
	children, _ := exec.Command("pgrep", "-P", fmt.Sprint(pid)).Output()
	pids := []int{pid}
	for _, f := range strings.Fields(string(children)) {
		var child int
		if _, err := fmt.Sscan(f, &child); err == nil {
			pids = append(pids, child)
		}
	}
	return pids
}

func (c *Cluster) signalAll(sig syscall.Signal) []int {
	pids := c.serverPIDs()
	for _, p := range pids {
		_ = syscall.Kill(p, sig)
	}
	return pids
}

// Kill kills the server with SIGKILL, the postmaster and every process it
// started (a crash), and starts it again: crash recovery, every connection gone.
func (c *Cluster) Kill() {
	c.tb.Helper()
	pids := c.signalAll(syscall.SIGKILL)
	for _, p := range pids {
		for running(p) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	// A zombie postmaster nobody reaps (a container's init may not) would still
	// pass the lock files' liveness checks.
	locks, _ := filepath.Glob(filepath.Join(c.dir, ".s.PGSQL.*.lock"))
	for _, f := range append(locks, filepath.Join(c.dir, "postmaster.pid")) {
		_ = os.Remove(f)
	}
	c.Start()
}

// running: the process exists and is not a zombie (whoever adopted it may
// never reap it).
func running(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(stat), ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}

// Stop stops the server; Start brings it back.
func (c *Cluster) Stop() {
	c.tb.Helper()
	c.run("stop", c.dir)
}

// Start starts a stopped server again.
func (c *Cluster) Start() {
	c.tb.Helper()
	c.run("start", c.dir, fmt.Sprint(c.port))
}

func (c *Cluster) run(args ...string) string {
	c.tb.Helper()
	out, err := exec.Command(c.script, args...).Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		c.tb.Fatalf("pg.sh %v: %v\n%s", args, err, msg)
	}
	return string(out)
}

func freePort(tb testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
