package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lib/pq"
)

// The commit path (issue 13): what a writer pays for pgsse, measured with
// pgbench. On each cluster the same single-row status UPDATE runs against
// three databases, in turn within each round: one whose videos table has a
// bare trigger calling pg_notify (a plain LISTEN session attached), one with
// pgsse's triggers and a pgsse serving it (every event sequenced and read),
// and one with pgsse's triggers and no pgsse (a plain LISTEN session on its
// doorbell; sequenced between runs): the writer's transaction alone, the floor
// of this design. Then one UPDATE of every row, with pgsse's triggers and
// without them, in the same database.

// commitRun is how long and how often the comparison runs.
type commitRun struct {
	Writers  []int         // pgbench client counts compared
	Rounds   int           // per writer count; medians are reported
	Duration time.Duration // per pgbench run
	Rows     int           // in each videos table; the big statement updates them all
}

var defaultCommitRun = commitRun{Writers: []int{1, 4, 16}, Rounds: 5, Duration: 4 * time.Second, Rows: 10_000}

// updateScript is pgbench's transaction: one video's status flips.
const updateScript = `\set i random(1, %d)
UPDATE videos SET processing_status = CASE WHEN processing_status = 'a' THEN 'b' ELSE 'a' END, updated_at = now() WHERE id = 'v' || :i;
`

// cluster is a PostgreSQL server to compare on, named by its settings.
type cluster struct{ name, url string }

// The three databases of a cluster, in the order of a round's first run.
const (
	bareDB = iota
	floorDB
	pgsseDB
	databases
)

// runCommitPath measures every cluster and prints the ratios to w.
func runCommitPath(ctx context.Context, bin string, clusters []cluster, run commitRun, w io.Writer) error {
	script := filepath.Join(os.TempDir(), fmt.Sprintf("pgsse-commit-%d.sql", os.Getpid()))
	if err := os.WriteFile(script, []byte(fmt.Sprintf(updateScript, run.Rows)), 0o644); err != nil {
		return err
	}
	defer os.Remove(script)
	fmt.Fprintf(w, "commit path: pgbench -n -M prepared -c N -j min(N,2) -T %s -f <one-row UPDATE>; %d rounds, the three databases in turn; medians.\n", run.Duration, run.Rounds)
	fmt.Fprintln(w, "ratio: pgsse's tps over the bare trigger's in the same round; writer alone: pgsse's triggers, no pgsse (the floor); CPU: the whole machine's, per transaction.")
	fmt.Fprintln(w, "| cluster | writers | bare trigger + pg_notify | writer alone | pgsse | ratio | writer alone ratio | CPU µs/txn bare / pgsse |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|")
	var statements []string
	for _, c := range clusters {
		s, err := commitCluster(ctx, bin, c, script, run, w)
		if err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		statements = append(statements, s)
	}
	fmt.Fprintf(w, "\none UPDATE of all %d rows, in the database pgsse serves, with its triggers and with them disabled, in turn (VACUUM before each); median of %d:\n", run.Rows, run.Rounds)
	fmt.Fprintln(w, "| cluster | without pgsse's triggers | with them | ratio |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, s := range statements {
		fmt.Fprintln(w, s)
	}
	return nil
}

// commitCluster prints c's pgbench rows and returns its statement row.
func commitCluster(ctx context.Context, bin string, c cluster, script string, run commitRun, w io.Writer) (string, error) {
	var urls [databases]string
	var err error
	urls[bareDB], err = videosDatabase(ctx, c.url, "commit_bare", run.Rows, `
		CREATE FUNCTION notify_status() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			PERFORM pg_notify('videos', NEW.id || ',' || NEW.processing_status);
			RETURN NULL;
		END $$;
		CREATE TRIGGER notify_status AFTER UPDATE ON videos FOR EACH ROW
			WHEN (OLD.processing_status IS DISTINCT FROM NEW.processing_status) EXECUTE FUNCTION notify_status();`)
	if err != nil {
		return "", err
	}
	for _, d := range []int{floorDB, pgsseDB} {
		if urls[d], err = videosDatabase(ctx, c.url, []string{floorDB: "commit_floor", pgsseDB: "commit_pgsse"}[d], run.Rows, ""); err != nil {
			return "", err
		}
		migrate := exec.CommandContext(ctx, bin, "migrate")
		migrate.Env = append(os.Environ(), "DATABASE_URL="+urls[d])
		if out, err := migrate.CombinedOutput(); err != nil {
			return "", fmt.Errorf("pgsse migrate: %w\n%s", err, out)
		}
	}
	var pools [databases]*sql.DB
	for d, u := range urls {
		if pools[d], err = sql.Open("postgres", u); err != nil {
			return "", err
		}
		defer pools[d].Close()
	}

	// The bare design's listener, and the floor's: one LISTEN session each, draining.
	for _, l := range []struct{ url, channel string }{{urls[bareDB], "videos"}, {urls[floorDB], "pgsse_incoming"}} {
		stop, err := drainListener(l.url, l.channel)
		if err != nil {
			return "", err
		}
		defer stop()
	}

	var row string
	_, err = withServer(ctx, bin, urls[pgsseDB], false, func(p proc) (result, error) {
		var committed [databases]int
		for _, n := range run.Writers {
			var tps, cpu [databases][]float64
			var ratios, floors []float64
			for round := range run.Rounds {
				var roundTPS [databases]float64
				for i := range databases {
					d := (i + round) % databases // each database first as often as the others
					t, txs, us, err := pgbench(ctx, urls[d], script, n, run.Duration)
					if err != nil {
						return result{}, err
					}
					tps[d], cpu[d], roundTPS[d] = append(tps[d], t), append(cpu[d], us), t
					committed[d] += txs
					if d == floorDB {
						if err := sequenceAll(ctx, pools[floorDB]); err != nil {
							return result{}, err
						}
					}
				}
				ratios = append(ratios, roundTPS[pgsseDB]/roundTPS[bareDB])
				floors = append(floors, roundTPS[floorDB]/roundTPS[bareDB])
			}
			fmt.Fprintf(w, "| %s | %d | %.0f | %.0f | %.0f | **%.2f** | %.2f | %.0f / %.0f |\n", c.name, n,
				median(tps[bareDB]), median(tps[floorDB]), median(tps[pgsseDB]), median(ratios), median(floors),
				median(cpu[bareDB]), median(cpu[pgsseDB]))
		}
		without, with, err := bigStatement(ctx, pools[pgsseDB], p.Admin, run.Rounds)
		if err != nil {
			return result{}, err
		}
		row = fmt.Sprintf("| %s | %s | %s | **%.2f** |", c.name, without.Round(time.Millisecond), with.Round(time.Millisecond), float64(with)/float64(without))
		if err := checkAllSequenced(ctx, pools[floorDB], committed[floorDB]); err != nil {
			return result{}, fmt.Errorf("without pgsse: %w", err)
		}
		return result{}, checkAllSequenced(ctx, pools[pgsseDB], committed[pgsseDB]+run.Rounds*run.Rows)
	})
	return row, err
}

// drainListener attaches a LISTEN session on channel that reads and drops
// every notification, until stop.
func drainListener(dbURL, channel string) (stop func(), err error) {
	l := pq.NewListener(dbURL, time.Second, time.Minute, nil)
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for range l.Notify { // closed by l.Close
		}
	}()
	stop = func() { l.Close(); <-drained }
	if err := l.Listen(channel); err != nil {
		stop()
		return nil, err
	}
	return stop, nil
}

// videosDatabase (re)creates database name on the cluster with a videos table
// of rows rows, runs extra in it, and returns its URL.
func videosDatabase(ctx context.Context, clusterURL, name string, rows int, extra string) (string, error) {
	admin, err := sql.Open("postgres", clusterURL)
	if err != nil {
		return "", err
	}
	defer admin.Close()
	for _, q := range []string{"DROP DATABASE IF EXISTS " + name + " WITH (FORCE)", "CREATE DATABASE " + name} {
		if _, err := admin.ExecContext(ctx, q); err != nil {
			return "", fmt.Errorf("%s: %w", q, err)
		}
	}
	u, err := url.Parse(clusterURL)
	if err != nil {
		return "", err
	}
	u.Path = "/" + name
	db, err := sql.Open("postgres", u.String())
	if err != nil {
		return "", err
	}
	defer db.Close()
	_, err = db.ExecContext(ctx, `
		CREATE TABLE videos (
			id TEXT PRIMARY KEY,
			created_at TIMESTAMP WITH TIME ZONE NOT NULL,
			updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
			raw_file_path TEXT NOT NULL,
			processed_file_path TEXT,
			processing_status TEXT NOT NULL DEFAULT 'pending');
		INSERT INTO videos (id, created_at, updated_at, raw_file_path, processing_status)
			SELECT 'v' || i, now(), now(), '/raw/' || i, 'a' FROM generate_series(1, `+strconv.Itoa(rows)+`) i;`+extra)
	if err != nil {
		return "", err
	}
	_, err = db.ExecContext(ctx, `VACUUM ANALYZE videos`) // not in the statements' implicit transaction
	return u.String(), err
}

var (
	tpsLine = regexp.MustCompile(`tps = ([0-9.]+)`)
	txsLine = regexp.MustCompile(`number of transactions actually processed: (\d+)`)
)

// pgbench runs the script with n clients for d and returns the transactions
// per second, their number, and the CPU time the whole machine spent per
// transaction meanwhile, in microseconds.
func pgbench(ctx context.Context, db, script string, n int, d time.Duration) (tps float64, txs int, cpuPerTx float64, err error) {
	before, err := machineCPU()
	if err != nil {
		return 0, 0, 0, err
	}
	out, err := exec.CommandContext(ctx, "pgbench", "-n", "-M", "prepared", "-c", strconv.Itoa(n), "-j", strconv.Itoa(min(n, 2)),
		"-T", strconv.Itoa(int(d.Seconds())), "-f", script, db).CombinedOutput()
	if err != nil {
		return 0, 0, 0, fmt.Errorf("pgbench: %w\n%s", err, out)
	}
	after, err := machineCPU()
	if err != nil {
		return 0, 0, 0, err
	}
	tpsM, txsM := tpsLine.FindSubmatch(out), txsLine.FindSubmatch(out)
	if tpsM == nil || txsM == nil {
		return 0, 0, 0, fmt.Errorf("pgbench printed no tps:\n%s", out)
	}
	tps, _ = strconv.ParseFloat(string(tpsM[1]), 64)
	txs, _ = strconv.Atoi(string(txsM[1]))
	return tps, txs, float64(after-before) / float64(max(txs, 1)) / float64(time.Microsecond), nil
}

// clockTicks is the unit of /proc/stat's times (USER_HZ, 100 on Linux).
const clockTicks = 100

// machineCPU returns the CPU time every core has spent busy since boot.
func machineCPU() (time.Duration, error) {
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(stat), "\n")
	fields := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal …
	if len(fields) < 9 || fields[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var busy int64
	for i, f := range fields[1:9] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		busy += v
	}
	return time.Duration(busy) * time.Second / clockTicks, nil
}

// bigStatement times one UPDATE of every row in the database pgsse serves,
// with its triggers and with them disabled, in turn, and returns the medians.
// Each starts on a vacuumed table once pgsse has sequenced and read the
// previous one's events: the statement is timed, not pgsse's work beside it.
func bigStatement(ctx context.Context, db *sql.DB, admin string, rounds int) (without, with time.Duration, err error) {
	times := map[bool][]float64{}
	for range rounds {
		for _, triggers := range []bool{true, false} {
			if err := waitRead(ctx, db, admin); err != nil {
				return 0, 0, err
			}
			toggle := map[bool]string{true: "ENABLE", false: "DISABLE"}[triggers]
			for _, q := range []string{`ALTER TABLE videos ` + toggle + ` TRIGGER USER`, `VACUUM videos`} {
				if _, err := db.ExecContext(ctx, q); err != nil {
					return 0, 0, fmt.Errorf("%s: %w", q, err)
				}
			}
			start := time.Now()
			if _, err := db.ExecContext(ctx, `UPDATE videos SET processing_status = CASE WHEN processing_status = 'a' THEN 'b' ELSE 'a' END`); err != nil {
				return 0, 0, err
			}
			times[triggers] = append(times[triggers], float64(time.Since(start)))
		}
	}
	if _, err := db.ExecContext(ctx, `ALTER TABLE videos ENABLE TRIGGER USER`); err != nil {
		return 0, 0, err
	}
	return time.Duration(median(times[false])), time.Duration(median(times[true])), nil
}

// sequenceAll sequences every event waiting, as pgsse would, and vacuums what
// that leaves.
func sequenceAll(ctx context.Context, db *sql.DB) error {
	for waiting := true; waiting; {
		if _, err := db.ExecContext(ctx, `SELECT pgsse.sequence(10000)`); err != nil {
			return err
		}
		if err := db.QueryRowContext(ctx, `SELECT EXISTS (SELECT FROM pgsse.incoming)`).Scan(&waiting); err != nil {
			return err
		}
	}
	_, err := db.ExecContext(ctx, `VACUUM pgsse.incoming`)
	return err
}

// waitSequenced waits until every event committed so far is sequenced.
func waitSequenced(ctx context.Context, db *sql.DB) error {
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		var pending bool
		if err := db.QueryRowContext(ctx, `SELECT EXISTS (SELECT FROM pgsse.incoming)`).Scan(&pending); err != nil {
			return err
		}
		if !pending {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("events still unsequenced a minute after the writes")
		}
	}
}

// waitRead waits until the pgsse at admin has read every event committed so
// far: its listener's cursor is the log's newest id.
func waitRead(ctx context.Context, db *sql.DB, admin string) error {
	if err := waitSequenced(ctx, db); err != nil {
		return err
	}
	var newest float64
	if err := db.QueryRowContext(ctx, `SELECT coalesce(max(id), 0) FROM pgsse.events`).Scan(&newest); err != nil {
		return err
	}
	for deadline := time.Now().Add(time.Minute); serverMetrics(admin, "pgsse_listener_cursor")["pgsse_listener_cursor"] < newest; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			return errors.New("pgsse has not read the log a minute after the writes")
		}
	}
	return nil
}

// checkAllSequenced waits for every event to be sequenced and checks the log
// holds exactly want of them: none lost, none sequenced twice.
func checkAllSequenced(ctx context.Context, db *sql.DB, want int) error {
	if err := waitSequenced(ctx, db); err != nil {
		return err
	}
	var events int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM pgsse.events`).Scan(&events); err != nil {
		return err
	}
	if events != want {
		return fmt.Errorf("the log holds %d events, want %d", events, want)
	}
	return nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// parseClusters reads -commit's name=url pairs.
func parseClusters(spec string) ([]cluster, error) {
	var cs []cluster
	for _, part := range strings.Split(spec, ",") {
		name, u, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("-commit %q: want name=url[,name=url]", spec)
		}
		cs = append(cs, cluster{name, u})
	}
	return cs, nil
}
