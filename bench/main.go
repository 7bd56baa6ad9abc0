// Command bench is pgsse's load tool. It opens SSE streams against a pgsse,
// commits events into PostgreSQL at a target rate (row updates through the
// trigger, or pgsse.publish), and reports per event the latency from commit to
// receipt (the envelope's time is the writer's clock_timestamp()), deliveries
// per second, missing and duplicated events (both must be zero), and the
// server's memory, goroutines and CPU from /proc and /metrics.
//
//	go run ./bench -url http://127.0.0.1:8080 -pid 1234 -db postgres://… -streams 1000 -rate 100
//	go run ./bench -suite -pgsse ./pgsse -db postgres://…    (make bench)
//	go run ./bench -commit durable=postgres://…,fsync-off=postgres://… -pgsse ./pgsse    (make bench-commit)
//
// Output: one JSON record per scenario on stdout, and a Markdown table row.
package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	_ "github.com/lib/pq"
)

// scenario is one load run.
type scenario struct {
	Name     string        `json:"name"`
	Streams  int           `json:"streams"`
	Topics   int           `json:"topics"`
	Rate     float64       `json:"rate"` // events/s; 0: as fast as the writers go
	Mode     string        `json:"mode"` // update or publish
	Duration time.Duration `json:"-"`
	Conns    int           `json:"writer_conns"`
	Procs    int           `json:"client_procs"` // client processes (each may hold < 20 000 fds)
	Pinned   bool          `json:"pinned"`       // the server alone on CPU 0, the load on the others
}

// result is what a scenario measured.
type result struct {
	scenario
	Server            string  `json:"server"` // pgsse, or baseline: the design the suite compares with
	Seconds           float64 `json:"seconds"`
	Committed         int64   `json:"committed"`
	WriteErrors       int64   `json:"write_errors"`
	Expected          int64   `json:"expected_deliveries"`
	Delivered         int64   `json:"delivered"`
	Missing           int64   `json:"missing"`
	Duplicated        int64   `json:"duplicated"`
	Resumes           int64   `json:"resumes"`
	CommitsPerSec     float64 `json:"commits_per_sec"`
	DeliveredPerSec   float64 `json:"delivered_per_sec"`
	P50ms             float64 `json:"p50_ms"`
	P99ms             float64 `json:"p99_ms"`
	P999ms            float64 `json:"p999_ms"`
	RSSMiB            float64 `json:"server_rss_mib"`
	RSSPerStreamKiB   float64 `json:"server_rss_per_stream_kib"`
	HeapPerStreamKiB  float64 `json:"server_heap_per_stream_kib"`  // Go heap in use
	StackPerStreamKiB float64 `json:"server_stack_per_stream_kib"` // goroutine stacks
	Goroutines        float64 `json:"server_goroutines"`
	CPUCores          float64 `json:"server_cpu_cores"`
	CPUPer1000        float64 `json:"server_cpu_s_per_1000_deliveries"`
}

func (r result) row() string {
	name := r.Name
	if r.Server != "" && r.Server != "pgsse" {
		name += " (" + r.Server + ")"
	}
	return fmt.Sprintf("| %s | %d | %d | %s | %.0f | %.0f | %.0f | %.2f | %.2f | %d | %d | %.1f | %.1f / %.1f / %.1f | %.2f | %.4f |",
		name, r.Streams, r.Topics, r.Mode, r.Rate, r.CommitsPerSec, r.DeliveredPerSec, r.P50ms, r.P99ms,
		r.Missing, r.Duplicated, r.RSSMiB, r.RSSPerStreamKiB, r.HeapPerStreamKiB, r.StackPerStreamKiB, r.CPUCores, r.CPUPer1000)
}

const header = "| scenario | streams | topics | writes | target ev/s | commits/s | delivered/s | p50 ms | p99 ms | missing | dup | RSS MiB | KiB/stream (RSS / heap / stacks) | CPU cores | CPU s / 1000 deliveries |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		url, dbURL, bin, out string
		baseline, only       string
		pid                  int
		sc                   scenario
		suiteMode, worker    bool
		commit               string
	)
	flag.StringVar(&url, "url", "http://127.0.0.1:8080", "pgsse to load")
	flag.IntVar(&pid, "pid", 0, "pgsse's process id, for RSS and CPU (0: not measured)")
	flag.StringVar(&dbURL, "db", os.Getenv("DATABASE_URL"), "the database pgsse serves")
	flag.StringVar(&bin, "pgsse", "", "with -suite: the pgsse binary to start for each scenario")
	flag.StringVar(&baseline, "baseline", "", "with -suite: a second pgsse binary (an earlier design) the compared scenarios also run, alternating")
	flag.StringVar(&only, "only", "", "with -suite: run only the scenarios whose name matches this regular expression (the baselines need \"baseline\")")
	flag.StringVar(&out, "out", "", "with -suite: also write the JSON records and the table here (prefix)")
	flag.BoolVar(&suiteMode, "suite", false, "run the standard suite, baselines included")
	flag.StringVar(&commit, "commit", "", "compare the commit path with pgbench on these clusters, name=url[,name=url…] (with -pgsse)")
	flag.BoolVar(&worker, "worker", false, "internal: be a client process of a multi-process run")
	flag.IntVar(&sc.Streams, "streams", 100, "streams to open")
	flag.IntVar(&sc.Topics, "topics", 1, "topics the streams and the writes spread over")
	flag.Float64Var(&sc.Rate, "rate", 100, "events per second (0: as fast as possible)")
	flag.StringVar(&sc.Mode, "mode", "update", "update (through the videos trigger) or publish (pgsse.publish)")
	flag.DurationVar(&sc.Duration, "duration", 10*time.Second, "how long to write")
	flag.IntVar(&sc.Conns, "conns", 4, "writer connections")
	flag.IntVar(&sc.Procs, "procs", 1, "client processes")
	flag.Parse()
	raiseFileLimit()
	ctx := context.Background()
	if worker {
		return runWorker(ctx, url, sc)
	}
	if commit != "" {
		clusters, err := parseClusters(commit)
		if err != nil {
			return err
		}
		var w io.Writer = os.Stdout
		if out != "" {
			f, err := os.Create(out + ".md")
			if err != nil {
				return err
			}
			defer f.Close()
			w = io.MultiWriter(os.Stdout, f)
		}
		return runCommitPath(ctx, bin, clusters, defaultCommitRun, w)
	}
	if dbURL == "" {
		return errors.New("no database: -db or DATABASE_URL")
	}
	db, err := sql.Open("postgres", dbURL)
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(64)
	if suiteMode {
		filter, err := regexp.Compile(only)
		if err != nil {
			return fmt.Errorf("-only: %w", err)
		}
		return runSuite(ctx, db, dbURL, bin, baseline, filter, out)
	}
	sc.Name = "custom"
	r, err := runScenario(ctx, db, proc{URL: url, PID: pid}, sc)
	if err != nil {
		return err
	}
	return report(os.Stdout, []result{r})
}

func report(w *os.File, rs []result) error {
	enc := json.NewEncoder(w)
	for _, r := range rs {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	fmt.Fprintln(w, header)
	for _, r := range rs {
		fmt.Fprintln(w, r.row())
	}
	return nil
}

// proc is a pgsse to load: its URL, its admin URL (metrics, profiles; empty:
// on the main one) and its process id (0: not measured).
type proc struct {
	URL, Admin string
	PID        int
}

// runScenario loads p and measures.
func runScenario(ctx context.Context, db *sql.DB, p proc, sc scenario) (result, error) {
	url, pid, metricsURL := p.URL, p.PID, p.URL
	if p.Admin != "" {
		metricsURL = p.Admin
	}
	r := result{scenario: sc}
	topics := topicsN(sc.Topics)
	w := &writer{db: db, mode: sc.Mode, topics: topics, rate: sc.Rate, conns: sc.Conns}
	if err := w.prepare(ctx); err != nil {
		return r, err
	}
	before := procStats(pid)
	memNames := []string{"go_goroutines", "go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes"}
	memBefore := serverMetrics(metricsURL, memNames...)

	clients, err := openClients(ctx, url, sc, topics)
	if err != nil {
		return r, err
	}
	defer clients.stop()
	time.Sleep(time.Second) // let the server settle
	if sc.Duration == 0 && p.Admin != "" {
		settle(p)
	}
	idle := procStats(pid)
	mem := serverMetrics(metricsURL, memNames...)
	r.RSSMiB = idle.rss / (1 << 20)
	r.Goroutines = mem["go_goroutines"]
	if n := float64(sc.Streams); n > 0 {
		r.RSSPerStreamKiB = (idle.rss - before.rss) / n / 1024
		r.HeapPerStreamKiB = (mem["go_memstats_heap_inuse_bytes"] - memBefore["go_memstats_heap_inuse_bytes"]) / n / 1024
		r.StackPerStreamKiB = (mem["go_memstats_stack_inuse_bytes"] - memBefore["go_memstats_stack_inuse_bytes"]) / n / 1024
	}

	start, err := head(ctx, db)
	if err != nil {
		return r, err
	}
	t0, cpu0 := time.Now(), procStats(pid).cpu
	if sc.Duration > 0 {
		wctx, cancel := context.WithTimeout(ctx, sc.Duration)
		w.run(wctx)
		cancel()
	}
	r.Seconds = time.Since(t0).Seconds()
	end, err := head(ctx, db)
	if err != nil {
		return r, err
	}
	want, _, err := expected(ctx, db, start, end)
	if err != nil {
		return r, err
	}
	got := clients.collect(want, 20*time.Second)
	cpu := procStats(pid).cpu - cpu0
	r.CPUCores = cpu / time.Since(t0).Seconds()
	r.Committed, r.WriteErrors = w.commits.Load(), w.errors.Load()
	for i := 0; i < sc.Streams; i++ {
		r.Expected += want[topics[i%len(topics)]]
	}
	r.Delivered, r.Missing, r.Duplicated, r.Resumes = got.delivered, got.missing, got.dups, got.resumes
	r.CommitsPerSec = float64(r.Committed) / r.Seconds
	r.DeliveredPerSec = float64(r.Delivered) / r.Seconds
	if r.Delivered > 0 {
		r.CPUPer1000 = cpu / float64(r.Delivered) * 1000
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	r.P50ms, r.P99ms, r.P999ms = ms(got.hist.quantile(.5)), ms(got.hist.quantile(.99)), ms(got.hist.quantile(.999))
	return r, nil
}

// tally is what the clients of a run saw.
type tally struct {
	delivered, missing, dups, resumes int64
	hist                              *latency
}

// clients are the run's streams, in this process or in worker processes.
type clients struct {
	local   *streams
	cancel  context.CancelFunc
	workers []*exec.Cmd
	stdin   []*bufio.Writer
	stdout  []*bufio.Scanner
	closers []func() error
}

func openClients(ctx context.Context, url string, sc scenario, topics []string) (*clients, error) {
	c := &clients{}
	if sc.Procs <= 1 {
		cctx, cancel := context.WithCancel(ctx)
		c.cancel = cancel
		c.local = newStreams(url, sc.Streams, topics, "")
		c.local.run(cctx, "")
		return c, nil
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	per := sc.Streams / sc.Procs
	for i := range sc.Procs {
		n := per
		if i == sc.Procs-1 {
			n = sc.Streams - per*(sc.Procs-1)
		}
		cmd := exec.Command(self, "-worker", "-url", url, "-streams", strconv.Itoa(n), "-topics", strconv.Itoa(sc.Topics))
		cmd.Stderr = os.Stderr
		in, _ := cmd.StdinPipe()
		outp, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(outp)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		c.workers, c.stdin, c.stdout, c.closers = append(c.workers, cmd), append(c.stdin, bufio.NewWriter(in)), append(c.stdout, sc), append(c.closers, in.Close)
	}
	for i, s := range c.stdout {
		if !s.Scan() || s.Text() != "ready" {
			return nil, fmt.Errorf("client process %d did not get ready: %v", i, s.Err())
		}
	}
	return c, nil
}

// workerReport is a worker's answer: its tally and its histogram, sparse.
type workerReport struct {
	Delivered, Missing, Dups, Resumes int64
	Hist                              map[int]int64
}

// collect waits until the clients received want (or timeout) and tallies.
func (c *clients) collect(want map[string]int64, timeout time.Duration) tally {
	t := tally{hist: new(latency)}
	if c.local != nil {
		total := int64(0)
		for i := range c.local.received {
			total += want[c.local.topics[i%len(c.local.topics)]]
		}
		deadline := time.Now().Add(timeout)
		for c.local.total() < total && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(200 * time.Millisecond) // late duplicates
		c.cancel()
		c.local.wait()
		t.delivered, t.missing, t.dups, t.resumes = c.local.total(), c.local.missing(want), c.local.dups.Load(), c.local.resumes.Load()
		t.hist = c.local.hist
		return t
	}
	b, _ := json.Marshal(want)
	for _, w := range c.stdin {
		fmt.Fprintf(w, "%s\n", b)
		w.Flush()
	}
	for _, s := range c.stdout {
		if !s.Scan() {
			continue
		}
		var wr workerReport
		if json.Unmarshal(s.Bytes(), &wr) != nil {
			continue
		}
		t.delivered += wr.Delivered
		t.missing += wr.Missing
		t.dups += wr.Dups
		t.resumes += wr.Resumes
		for i, n := range wr.Hist {
			t.hist.addN(i, n)
		}
	}
	return t
}

func (c *clients) stop() {
	if c.cancel != nil {
		c.cancel()
	}
	for _, close := range c.closers {
		close()
	}
	for _, w := range c.workers {
		w.Wait()
	}
}

// runWorker holds streams for a parent process: "ready" once connected, then
// the expected counts on stdin, then its report on stdout.
func runWorker(ctx context.Context, url string, sc scenario) error {
	topics := topicsN(sc.Topics)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := newStreams(url, sc.Streams, topics, "")
	s.run(ctx, "")
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	if !in.Scan() {
		return nil
	}
	var want map[string]int64
	if err := json.Unmarshal(in.Bytes(), &want); err != nil {
		return err
	}
	total := int64(0)
	for i := range s.received {
		total += want[topics[i%len(topics)]]
	}
	deadline := time.Now().Add(20 * time.Second)
	for s.total() < total && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	cancel()
	s.wait()
	wr := workerReport{Delivered: s.total(), Missing: s.missing(want), Dups: s.dups.Load(), Resumes: s.resumes.Load(), Hist: map[int]int64{}}
	for i := range s.hist.counts {
		if n := s.hist.counts[i].Load(); n > 0 {
			wr.Hist[i] = n
		}
	}
	return json.NewEncoder(os.Stdout).Encode(wr)
}

// settle waits, for an idle scenario, until the server's memory is what it
// costs to hold the streams rather than to have opened them: a garbage
// collection (forced through the admin port's profile endpoint, as the runtime
// would within two minutes), then until the runtime has returned the freed
// pages (RSS steady for two seconds, at most 30 s).
func settle(p proc) {
	if resp, err := http.Get(p.Admin + "/debug/pprof/heap?gc=1"); err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	last, steady := procStats(p.PID).rss, 0
	for deadline := time.Now().Add(30 * time.Second); steady < 2 && time.Now().Before(deadline); {
		time.Sleep(time.Second)
		rss := procStats(p.PID).rss
		if rss >= last*0.99 {
			steady++
		} else {
			steady = 0
		}
		last = rss
	}
}

// fileLimit is the descriptor limit the load tool asks for itself and the
// servers it starts (they inherit it): 19 000 streams need 19 000 sockets on
// each side, and pgsse keeps a reserve below its limit.
const fileLimit = 1 << 16

// raiseFileLimit raises the descriptor limit to fileLimit where allowed (root,
// or a hard limit that high); else the limit stays as it is.
func raiseFileLimit() {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur >= fileLimit {
		return
	}
	want := syscall.Rlimit{Cur: fileLimit, Max: max(lim.Max, fileLimit)}
	if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want) != nil {
		want.Cur, want.Max = lim.Max, lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want)
	}
}

// stats are a process's resident memory (bytes) and CPU time (seconds).
type stats struct{ rss, cpu float64 }

func procStats(pid int) stats {
	if pid == 0 {
		return stats{}
	}
	var st stats
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
				st.rss = kb * 1024
			}
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// Fields after the command name (which may hold spaces): utime is 14th, stime 15th.
		s := string(b)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(fields) > 12 {
			ut, _ := strconv.ParseFloat(fields[11], 64)
			stime, _ := strconv.ParseFloat(fields[12], 64)
			st.cpu = (ut + stime) / 100 // USER_HZ
		}
	}
	return st
}

// serverMetrics reads the named gauges from the server's /metrics.
func serverMetrics(url string, names ...string) map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		for _, name := range names {
			if rest, ok := strings.CutPrefix(line, name+" "); ok {
				out[name], _ = strconv.ParseFloat(rest, 64)
			}
		}
	}
	return out
}
