package dbtest

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// PgBouncer is a PgBouncer in transaction mode in front of the test server,
// started by NewPgBouncer and stopped when the test ends.
type PgBouncer struct {
	port int
	dir  string
}

// NewPgBouncer starts PgBouncer (transaction pooling, server connections handed
// out round-robin, so consecutive transactions of one client land on different
// server connections) in front of the server of PGSSE_TEST_DATABASE_URL.
func NewPgBouncer(tb testing.TB) *PgBouncer {
	tb.Helper()
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		bin = "/usr/sbin/pgbouncer"
		if _, err := os.Stat(bin); err != nil {
			tb.Fatal("no pgbouncer: install Debian's pgbouncer package (scripts/deps.sh does)")
		}
	}
	server, err := url.Parse(ServerURL(tb))
	if err != nil {
		tb.Fatal(err)
	}
	b := &PgBouncer{port: freePort(tb), dir: tb.TempDir()}
	// PgBouncer refuses to run as root: run it as postgres, let it into the directory.
	if err := os.Chmod(b.dir, 0o777); err != nil {
		tb.Fatal(err)
	}
	for dir := filepath.Dir(b.dir); dir != "/"; dir = filepath.Dir(dir) {
		if fi, err := os.Stat(dir); err == nil && fi.Mode().Perm()&0o001 == 0 {
			_ = os.Chmod(dir, fi.Mode().Perm()|0o001)
		}
	}
	ini := filepath.Join(b.dir, "pgbouncer.ini")
	config := fmt.Sprintf(`[databases]
* = host=%s port=%s user=%s
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = any
pool_mode = transaction
server_round_robin = 1
default_pool_size = 4
max_client_conn = 500
ignore_startup_parameters = extra_float_digits
logfile = %s
`, server.Hostname(), server.Port(), server.User.Username(), b.port, filepath.Join(b.dir, "pgbouncer.log"))
	if err := os.WriteFile(ini, []byte(config), 0o644); err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, ini)
	if os.Geteuid() == 0 {
		cmd = exec.Command("runuser", "-u", "postgres", "--", bin, ini)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // stopped as a group, runuser and all
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start pgbouncer: %v", err)
	}
	done := make(chan struct{}) // closed once it has exited; then waitErr is set
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(done) }()
	tb.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", b.port))
		if err == nil {
			c.Close()
			return b
		}
		select {
		case <-done:
			log, _ := os.ReadFile(filepath.Join(b.dir, "pgbouncer.log"))
			tb.Fatalf("pgbouncer exited: %v\n%s", waitErr, log)
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatalf("pgbouncer not listening on %d after 10s", b.port)
		}
	}
}

// URL returns dbURL (a database on the test server) through the pooler.
func (b *PgBouncer) URL(dbURL string) string {
	u, err := url.Parse(dbURL)
	if err != nil {
		panic(err)
	}
	u.Host = fmt.Sprintf("127.0.0.1:%d", b.port)
	return u.String()
}
