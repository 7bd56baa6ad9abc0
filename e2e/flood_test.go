package e2e

import (
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"pgsse/internal/dbtest"
)

// TestServe_ConnectionFlood: more half-sent requests than the process has file
// descriptors. Accept used to fail ("too many open files") and /healthz and
// /readyz stopped answering; now the main listener holds connections only while
// descriptors remain, and the admin port keeps answering within a second.
func TestServe_ConnectionFlood(t *testing.T) {
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Fatal("no prlimit (util-linux)")
	}
	url := dbtest.New(t)
	port, admin := freePort(t), freePort(t)
	cmd := command(t, url, []string{fmt.Sprintf("PGSSE_ADDR=127.0.0.1:%d", port), fmt.Sprintf("PGSSE_ADMIN_ADDR=127.0.0.1:%d", admin)}, "serve")
	cmd.Args = append([]string{prlimit, "--nofile=600:600", "--", cmd.Path}, cmd.Args[1:]...)
	cmd.Path = prlimit
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("pgsse logs:\n%s", logs)
		}
	})
	client := http.Client{Timeout: time.Second}
	ready := func() error {
		resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", admin))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		return nil
	}
	for deadline := time.Now().Add(30 * time.Second); ready() != nil; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not ready:\n%s", logs)
		}
	}

	var flood []net.Conn
	defer func() {
		for _, c := range flood {
			c.Close()
		}
	}()
	for range 800 { // more than the 600 descriptors
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err != nil {
			break // the kernel's accept queue is full: as far as a flood can go
		}
		fmt.Fprint(c, "GET /events?topic=videos/* HTTP/1.1\r\nHost: x\r\n") // never finished
		flood = append(flood, c)
	}
	time.Sleep(500 * time.Millisecond)
	for i := range 3 {
		if err := ready(); err != nil {
			t.Fatalf("admin /readyz under a flood of %d connections (try %d): %v", len(flood), i, err)
		}
	}
	if strings.Contains(logs.String(), "too many open files") {
		t.Errorf("descriptors ran out under the flood:\n%s", logs)
	}
}
