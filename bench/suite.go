package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lib/pq"
)

// suite is the standard set of scenarios behind BENCHMARKS.md.
var suite = []scenario{
	{Name: "ingest, max rate, 1 stream per topic", Streams: 100, Topics: 100, Rate: 0, Mode: "update", Duration: 5 * time.Second, Conns: 4, Procs: 1},
	{Name: "ingest, max rate, publish", Streams: 100, Topics: 100, Rate: 0, Mode: "publish", Duration: 5 * time.Second, Conns: 4, Procs: 1},
	{Name: "100 streams, 200 ev/s", Streams: 100, Topics: 1, Rate: 200, Mode: "update", Duration: 10 * time.Second, Conns: 2, Procs: 1},
	{Name: "100 streams, 200 ev/s, publish", Streams: 100, Topics: 1, Rate: 200, Mode: "publish", Duration: 10 * time.Second, Conns: 2, Procs: 1},
	{Name: "19 000 streams, 100 topics, 100 ev/s", Streams: 19000, Topics: 100, Rate: 100, Mode: "update", Duration: 10 * time.Second, Conns: 2, Procs: 2},
}

// compared are the scenarios also run against the baseline binary, one after
// the other, so that each figure is also a ratio from one run.
var compared = []scenario{
	{Name: "5 000 idle streams", Streams: 5000, Topics: 100, Mode: "update", Conns: 1, Procs: 1},
	// 17 500: the baseline holds at most 17 936 connections under a 20 000
	// descriptor limit (this machine's hard limit); pgsse's 19 000 are the scenario above.
	{Name: "17 500 idle streams", Streams: 17500, Topics: 100, Mode: "update", Conns: 1, Procs: 1},
	{Name: "1 000 streams, 1 topic, 20 ev/s", Streams: 1000, Topics: 1, Rate: 20, Mode: "update", Duration: 10 * time.Second, Conns: 1, Procs: 1},
	{Name: "10 000 streams, 1 topic, 10 ev/s, pgsse on one core", Streams: 10000, Topics: 1, Rate: 10, Mode: "update", Duration: 10 * time.Second, Conns: 1, Procs: 1, Pinned: true},
}

func runSuite(ctx context.Context, db *sql.DB, dbURL, bin, baseline string, only *regexp.Regexp, out string) error {
	if bin == "" {
		return fmt.Errorf("-suite needs -pgsse, the binary to start")
	}
	var results []result
	if only.MatchString("baseline") {
		raws, err := rawBaselines(ctx, db, dbURL)
		if err != nil {
			return err
		}
		results = append(results, raws...)
	}
	servers := []server{{"pgsse", bin}}
	if baseline != "" {
		servers = append(servers, server{"baseline", baseline})
	}
	run := func(sc scenario, srvs []server) ([]result, error) {
		var rs []result
		for _, srv := range srvs {
			fmt.Fprintf(os.Stderr, "scenario: %s (%s)\n", sc.Name, srv.name)
			r, err := runOn(ctx, db, dbURL, srv.bin, sc)
			if err != nil {
				return nil, fmt.Errorf("%s (%s): %w", sc.Name, srv.name, err)
			}
			r.Server = srv.name
			rs = append(rs, r)
		}
		return rs, nil
	}
	for _, sc := range suite {
		if !only.MatchString(sc.Name) {
			continue
		}
		rs, err := run(sc, servers[:1])
		if err != nil {
			return err
		}
		results = append(results, rs...)
	}
	var pairs [][]result
	for _, sc := range compared {
		if !only.MatchString(sc.Name) {
			continue
		}
		rs, err := run(sc, servers)
		if err != nil {
			return err
		}
		results = append(results, rs...)
		if len(rs) == 2 {
			pairs = append(pairs, rs)
		}
	}
	if err := report(os.Stdout, results); err != nil {
		return err
	}
	reportRatios(os.Stdout, pairs)
	if out != "" {
		f, err := os.Create(out + ".md")
		if err != nil {
			return err
		}
		defer f.Close()
		if err := report(f, results); err != nil {
			return err
		}
		reportRatios(f, pairs)
	}
	return nil
}

// rawBaselines are what PostgreSQL alone does (see rawBaseline).
func rawBaselines(ctx context.Context, db *sql.DB, dbURL string) ([]result, error) {
	raw, err := rawBaseline(ctx, db, dbURL, 0, 5*time.Second, 4, 1)
	if err != nil {
		return nil, fmt.Errorf("raw baseline: %w", err)
	}
	paced, err := rawBaseline(ctx, db, dbURL, 200, 10*time.Second, 2, 1)
	if err != nil {
		return nil, fmt.Errorf("raw baseline at 200/s: %w", err)
	}
	results := []result{raw, paced}
	for _, n := range []int{100, 400} {
		naive, err := rawBaseline(ctx, db, dbURL, 200, 5*time.Second, 2, n)
		if err != nil {
			fmt.Fprintf(os.Stderr, "naive design with %d listeners: %v\n", n, err)
		}
		results = append(results, naive)
	}
	return results, nil
}

// server is a pgsse binary the suite runs, and what the report calls it.
type server struct{ name, bin string }

// runOn runs sc on a fresh server from bin, pinned as sc says.
func runOn(ctx context.Context, db *sql.DB, dbURL, bin string, sc scenario) (result, error) {
	if sc.Pinned {
		if runtime.NumCPU() < 2 {
			return result{}, fmt.Errorf("a pinned scenario needs two CPUs")
		}
		if err := pinLoad(ctx, db, loadCPUs()); err != nil {
			return result{}, err
		}
		defer pinLoad(ctx, db, allCPUs())
	}
	return withServer(ctx, bin, dbURL, sc.Pinned, func(p proc) (result, error) {
		return runScenario(ctx, db, p, sc)
	})
}

// reportRatios prints, for each compared scenario, pgsse's figures over the
// baseline's.
func reportRatios(w io.Writer, pairs [][]result) {
	if len(pairs) == 0 {
		return
	}
	ratio := func(a, b float64) string {
		if b == 0 {
			return "–"
		}
		return fmt.Sprintf("%.2f", a/b)
	}
	fmt.Fprintln(w, "\n| scenario | KiB/stream (RSS) | CPU s / 1000 deliveries | p99 ms | missing / dup |\n|---|---|---|---|---|")
	for _, p := range pairs {
		n, b := p[0], p[1]
		fmt.Fprintf(w, "| %s | %.1f vs %.1f (×%s) | %.4f vs %.4f (×%s) | %.1f vs %.1f (×%s) | %d / %d vs %d / %d |\n", n.Name,
			n.RSSPerStreamKiB, b.RSSPerStreamKiB, ratio(n.RSSPerStreamKiB, b.RSSPerStreamKiB),
			n.CPUPer1000, b.CPUPer1000, ratio(n.CPUPer1000, b.CPUPer1000),
			n.P99ms, b.P99ms, ratio(n.P99ms, b.P99ms),
			n.Missing, n.Duplicated, b.Missing, b.Duplicated)
	}
}

// withServer starts a fresh pgsse (fresh memory figures for each scenario),
// runs fn against it and stops it.
func withServer(ctx context.Context, bin, dbURL string, pinned bool, fn func(p proc) (result, error)) (result, error) {
	addr, err := freeAddr()
	if err != nil {
		return result{}, err
	}
	admin, err := freeAddr()
	if err != nil {
		return result{}, err
	}
	cmd := exec.Command(bin, "serve")
	if pinned {
		cmd = exec.Command("taskset", "-c", serverCPU, bin, "serve") // taskset execs: the same pid
	}
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL, "PGSSE_ADDR="+addr, "PGSSE_ADMIN_ADDR="+admin, "PGSSE_AUTH_MODE=none",
		"PGSSE_CONNECT_RATE=0", "PGSSE_MAX_STREAMS_PER_IP=0", "PGSSE_MAX_STREAMS=0", "PGSSE_LOG_LEVEL=warn", "PGSSE_DRAIN=1s")
	cmd.Stderr, cmd.Stdout = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return result{}, err
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	url := "http://" + addr
	for deadline := time.Now().Add(30 * time.Second); ; {
		if resp, err := http.Get("http://" + admin + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			return result{}, fmt.Errorf("pgsse not ready")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fn(proc{URL: url, Admin: "http://" + admin, PID: cmd.Process.Pid})
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// rawBaseline measures what Postgres alone does: UPDATEs whose trigger calls
// pg_notify with the commit's clock_timestamp(), received by listeners bare
// lib/pq Listeners. With one listener it is the physical limit pgsse works
// within; with many it is the naive design pgsse replaces (one LISTEN
// connection per client, every event to every client).
func rawBaseline(ctx context.Context, db *sql.DB, dbURL string, rate float64, d time.Duration, conns, listeners int) (result, error) {
	name := "baseline: UPDATE + trigger pg_notify, bare listener, max rate"
	if rate > 0 {
		name = fmt.Sprintf("baseline: UPDATE + trigger pg_notify, bare listener, %g ev/s", rate)
	}
	if listeners > 1 {
		name = fmt.Sprintf("baseline: naive, %d LISTEN connections", listeners)
	}
	r := result{scenario: scenario{Name: name, Streams: listeners, Topics: 1, Rate: rate, Mode: "update", Duration: d, Conns: conns}}
	if _, err := db.ExecContext(ctx, `
		CREATE TABLE IF NOT EXISTS bench_raw (id int PRIMARY KEY, v bigint NOT NULL DEFAULT 0);
		INSERT INTO bench_raw (id) SELECT i FROM generate_series(1, 100) i ON CONFLICT DO NOTHING;
		CREATE OR REPLACE FUNCTION bench_raw_notify() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			PERFORM pg_notify('bench_raw', extract(epoch FROM clock_timestamp())::text);
			RETURN NULL;
		END $$;
		DROP TRIGGER IF EXISTS bench_raw_notify ON bench_raw;
		CREATE TRIGGER bench_raw_notify AFTER UPDATE ON bench_raw FOR EACH ROW EXECUTE FUNCTION bench_raw_notify();`); err != nil {
		return r, err
	}
	var (
		hist     = new(latency)
		received atomic.Int64
		wg       sync.WaitGroup
		failed   error
	)
	lctx, stop := context.WithCancel(ctx)
	var ls []*pq.Listener
	for i := range listeners {
		l := pq.NewListener(dbURL, time.Second, time.Second, nil)
		if err := listenWithin(l, "bench_raw", 5*time.Second); err != nil {
			failed = fmt.Errorf("listener %d of %d: %w", i+1, listeners, err)
			l.Close()
			break
		}
		ls = append(ls, l)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-lctx.Done():
					return
				case n, ok := <-l.Notify:
					if !ok {
						return
					}
					if n == nil {
						continue
					}
					if sec, err := strconv.ParseFloat(n.Extra, 64); err == nil {
						hist.add(time.Since(time.Unix(0, int64(sec*1e9))))
						received.Add(1)
					}
				}
			}
		}()
	}
	r.Streams = len(ls)
	var commits, errs atomic.Int64
	wctx, cancel := context.WithTimeout(ctx, d)
	t0 := time.Now()
	pace := newPacer(wctx, rate, conns)
	var ww sync.WaitGroup
	for range conns {
		ww.Add(1)
		go func() {
			defer ww.Done()
			for pace.next() {
				if _, err := db.ExecContext(wctx, `UPDATE bench_raw SET v = v + 1 WHERE id = $1`, 1+rand.N(100)); err == nil {
					commits.Add(1)
				} else if wctx.Err() == nil {
					errs.Add(1)
				}
			}
		}()
	}
	ww.Wait()
	cancel()
	r.Seconds = time.Since(t0).Seconds()
	want := commits.Load() * int64(len(ls))
	for deadline := time.Now().Add(10 * time.Second); received.Load() < want && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	wg.Wait()
	for _, l := range ls {
		l.Close()
	}
	r.Committed, r.WriteErrors = commits.Load(), errs.Load()
	r.Expected, r.Delivered = want, received.Load()
	r.Missing = max(0, want-r.Delivered)
	r.CommitsPerSec = float64(r.Committed) / r.Seconds
	r.DeliveredPerSec = float64(r.Delivered) / r.Seconds
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	r.P50ms, r.P99ms, r.P999ms = ms(hist.quantile(.5)), ms(hist.quantile(.99)), ms(hist.quantile(.999))
	return r, failed
}

func listenWithin(l *pq.Listener, channel string, d time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- l.Listen(channel) }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		return fmt.Errorf("no connection within %v (max_connections?)", d)
	}
}

// pacer hands out permits at rate per second (0: unlimited) until ctx ends.
type pacer struct {
	ctx    context.Context
	tokens chan struct{}
}

func newPacer(ctx context.Context, rate float64, burst int) *pacer {
	p := &pacer{ctx: ctx}
	if rate <= 0 {
		return p
	}
	p.tokens = make(chan struct{}, burst)
	go func() {
		start, sent := time.Now(), 0.0
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				for due := now.Sub(start).Seconds() * rate; sent < due; sent++ {
					select {
					case p.tokens <- struct{}{}:
					case <-ctx.Done():
						return
					}
				}
			}
		}
	}()
	return p
}

func (p *pacer) next() bool {
	if p.ctx.Err() != nil {
		return false
	}
	if p.tokens == nil {
		return true
	}
	select {
	case <-p.tokens:
		return true
	case <-p.ctx.Done():
		return false
	}
}
