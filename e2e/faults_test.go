package e2e

import (
	"bufio"
	"database/sql"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"pgsse/db"
	"pgsse/internal/dbtest"
)

// The fault-injection suite: pgsse with a real PostgreSQL behind fault proxies
// (toxiproxy), one for the pool and one for the LISTEN connection, and clients
// that follow videos/* across every reconnect. Each scenario checks, against
// the log, that every client got every event once and in order, how long pgsse
// took to notice and to resume, and that nothing leaked. docs/reliability.md
// lists the scenarios and their figures.

// faultTimeout is PGSSE_DB_TIMEOUT in the suite: short, so that a scenario
// takes seconds; the default's figures are in docs/reliability.md.
const faultTimeout = 3 * time.Second

// The bounds the suite holds pgsse to. Detection: a stalled connection fails
// within PGSSE_DB_TIMEOUT, anything else at once; readiness follows within a
// poll of it. Resumption: a call stuck when the fault ends fails at its
// deadline at worst, then the retry waits its backoff (capped at
// db.MaxRetryBackoff).
const (
	detectBound = faultTimeout + 2*time.Second
	resumeBound = faultTimeout + db.MaxRetryBackoff + time.Second
)

type faultRig struct {
	t            *testing.T
	p            *proc
	pool, listen *dbtest.Proxy
	direct       *sql.DB // writers and the truth, not through a proxy
	followers    []*follower
	stopWriter   func() time.Time
	baseline     map[string]float64
}

// newFaultRig starts pgsse through two proxies, three followers and a writer.
func newFaultRig(t *testing.T, env ...string) *faultRig {
	url := dbtest.New(t)
	return newFaultRigAs(t, url, url, env...)
}

// newFaultRigAs is newFaultRig with pgsse connecting to pgsseURL (another role
// on the database of url).
func newFaultRigAs(t *testing.T, url, pgsseURL string, env ...string) *faultRig {
	r := &faultRig{t: t, pool: dbtest.NewProxy(t, url), listen: dbtest.NewProxy(t, url), direct: dbtest.Open(t, url)}
	env = append([]string{
		"PGSSE_LISTEN_DATABASE_URL=" + r.listen.URL(pgsseURL),
		"PGSSE_DB_TIMEOUT=" + faultTimeout.String(),
		"PGSSE_HEARTBEAT=1s",
		"PGSSE_POLL_INTERVAL=1s",
	}, env...)
	r.p = startPgsse(t, r.pool.URL(pgsseURL), env...)
	for range 3 {
		r.followers = append(r.followers, follow(t, "", r.p.URL+"/events?topic=videos/*"))
	}
	time.Sleep(300 * time.Millisecond)
	r.baseline = scrape(t, r.p.URL)
	r.stopWriter = startWriter(t, r.direct, "f", 20*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	return r
}

// waitReady waits up to d for /readyz to answer want (200 or 503) and returns
// how long it took.
func (r *faultRig) waitReadyz(want int, d time.Duration) time.Duration {
	r.t.Helper()
	start := time.Now()
	for time.Since(start) < d {
		if code, _ := readyz(r.p.URL); code == want {
			return time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	_, body := readyz(r.p.URL)
	r.t.Fatalf("/readyz did not answer %d within %v (last: %s)", want, d, body)
	return 0
}

func readyz(url string) (int, string) {
	client := http.Client{Timeout: time.Second}
	resp, err := client.Get(url + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// verify stops the writer and checks every follower against the log, then
// that goroutines and file descriptors are back where they were.
func (r *faultRig) verify() time.Duration {
	r.t.Helper()
	time.Sleep(300 * time.Millisecond)
	r.stopWriter()
	// Drop idle sessions the fault may have marked (read-only ones, say).
	r.direct.SetMaxIdleConns(0)
	r.direct.SetMaxIdleConns(2)
	start := time.Now()
	waitAllIDs(r.t, r.followers, logIDs(r.t, r.direct, 0, "videos/%"))
	resumed := time.Since(start)
	if resumed > resumeBound {
		r.t.Errorf("clients complete %v after the fault, want within %v", resumed, resumeBound)
	}
	r.checkNoGrowth()
	return resumed
}

// checkNoGrowth: after a fault has passed, the process holds about the
// goroutines and descriptors it held before it (the pool may have reconnected
// some of its connections; it never holds more than its size).
func (r *faultRig) checkNoGrowth() {
	r.t.Helper()
	var after map[string]float64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		after = scrape(r.t, r.p.URL)
		if after["go_goroutines"] <= r.baseline["go_goroutines"]+10 && after["process_open_fds"] <= r.baseline["process_open_fds"]+10 {
			return
		}
		if time.Now().After(deadline) {
			break
		}
	}
	r.t.Errorf("after the fault: %v goroutines and %v fds, before it %v and %v",
		after["go_goroutines"], after["process_open_fds"], r.baseline["go_goroutines"], r.baseline["process_open_fds"])
}

// TestFault_BlackHole: every pgsse connection black-holed (open, nothing
// answering). pgsse used to notice nothing: /readyz 200, /metrics hanging, new
// streams without heartbeats, SIGTERM waiting for the stall. Now: /readyz 503
// within PGSSE_DB_TIMEOUT, /metrics and heartbeats answering throughout, and
// everything delivered once the network heals.
func TestFault_BlackHole(t *testing.T) {
	r := newFaultRig(t)
	r.pool.BlackHole()
	r.listen.BlackHole()
	detected := r.waitReadyz(http.StatusServiceUnavailable, detectBound)

	// /metrics answers within a second, every time.
	client := http.Client{Timeout: time.Second}
	for range 3 {
		resp, err := client.Get(r.p.URL + "/metrics")
		if err != nil {
			t.Fatalf("/metrics during the black hole: %v", err)
		}
		resp.Body.Close()
	}
	// A stream opened now (its snapshot query stalls) gets heartbeats.
	beats := heartbeats(r.p.URL+"/videos/nope/events", 3*time.Second)
	if beats < 2 {
		t.Errorf("a stream opened during the black hole got %d heartbeats in 3s, want ≥ 2 (PGSSE_HEARTBEAT=1s)", beats)
	}

	time.Sleep(faultTimeout) // the retries meet the black hole too
	r.pool.Heal()
	r.listen.Heal()
	ready := r.waitReadyz(http.StatusOK, resumeBound)
	resumed := r.verify()
	t.Logf("black hole: detected in %v, ready %v after healing, clients complete %v later", detected, ready, resumed)
}

// TestFault_BlackHoleListenerOnly: only the LISTEN connection black-holed.
// Its ping stops being answered; lib/pq reconnects after PGSSE_DB_TIMEOUT.
func TestFault_BlackHoleListenerOnly(t *testing.T) {
	r := newFaultRig(t, "PGSSE_POLL_INTERVAL=1h") // delivery by the doorbell only
	r.listen.BlackHole()
	detected := r.waitReadyz(http.StatusServiceUnavailable, detectBound)
	r.listen.Heal()
	ready := r.waitReadyz(http.StatusOK, resumeBound)
	resumed := r.verify()
	if !hasLine(r.p.logs.String(), "listener reconnected") {
		t.Error("the listener never reconnected")
	}
	t.Logf("listener black hole: detected in %v, ready %v after healing, clients complete %v later", detected, ready, resumed)
}

// TestFault_SIGTERMDuringBlackHole: SIGTERM exits within PGSSE_DRAIN + 5 s
// whatever the database does.
func TestFault_SIGTERMDuringBlackHole(t *testing.T) {
	r := newFaultRig(t, "PGSSE_DRAIN=1s", "PGSSE_DB_TIMEOUT=1m")
	r.pool.BlackHole()
	r.listen.BlackHole()
	var stuck sync.WaitGroup // requests stuck on the database; they end when the process does
	defer stuck.Wait()
	for range 5 {
		stuck.Go(func() { heartbeats(r.p.URL+"/videos/nope/events", 10*time.Second) })
	}
	time.Sleep(time.Second)
	start := time.Now()
	r.p.signal(syscall.SIGTERM)
	select {
	case <-r.p.done:
	case <-time.After(1*time.Second + exitGrace + time.Second): // the drain, the grace, and a second to exit
		t.Fatalf("pgsse still running %v after SIGTERM with PGSSE_DRAIN=1s", time.Since(start))
	}
	t.Logf("exited %v after SIGTERM", time.Since(start))
}

// exitGrace is the README's promise: pgsse exits within PGSSE_DRAIN + 5 s.
const exitGrace = 5 * time.Second

// heartbeats opens a stream and counts its heartbeat comments for d.
func heartbeats(url string, d time.Duration) int {
	client := http.Client{Timeout: d}
	resp, err := client.Get(url)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	n := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), ":") {
			n++
		}
	}
	return n
}

// TestFault_BlackHoleAtStart: pgsse starting while its database is
// black-holed (migrations already applied, as on any restart) becomes ready
// once the network heals: the migration check runs with deadlines and is
// retried, instead of hanging for good on a connection without them.
func TestFault_BlackHoleAtStart(t *testing.T) {
	url := dbtest.New(t)
	pool, listen := dbtest.NewProxy(t, url), dbtest.NewProxy(t, url)
	pool.BlackHole()
	listen.BlackHole()
	p := launchPgsse(t, freePort(t), pool.URL(url), "PGSSE_LISTEN_DATABASE_URL="+listen.URL(url), "PGSSE_DB_TIMEOUT="+faultTimeout.String())
	r := &faultRig{t: t, p: p}
	time.Sleep(2 * faultTimeout)
	if code, body := readyz(p.URL); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz %d (%s) while the database is black-holed", code, body)
	}
	pool.Heal()
	listen.Heal()
	ready := r.waitReadyz(http.StatusOK, resumeBound)
	t.Logf("black hole at start: ready %v after healing", ready)
}
