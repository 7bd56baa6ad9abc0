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
// pgbench. On each cluster, the same single-row status UPDATE runs against a
// database whose videos table has a bare trigger calling pg_notify (a plain
// LISTEN session attached) and one with pgsse's triggers (a pgsse serving it,
// so every event is sequenced), alternating the two in one run; then one
// UPDATE of every row of a 10 000-row table, with pgsse's triggers and
// without any.

// commitWriters are the pgbench client counts compared.
var commitWriters = []int{1, 4, 16}

const (
	commitRounds   = 3               // per writer count; the median is reported
	commitDuration = 5 * time.Second // per pgbench run
	commitRows     = 10_000          // in each videos table; the big statement updates them all
)

// updateScript is pgbench's transaction: one video's status flips.
const updateScript = `\set i random(1, 10000)
UPDATE videos SET processing_status = CASE WHEN processing_status = 'a' THEN 'b' ELSE 'a' END, updated_at = now() WHERE id = 'v' || :i;
`

// cluster is a PostgreSQL server to compare on, named by its settings.
type cluster struct{ name, url string }

// runCommitPath measures every cluster and prints the ratios to w.
func runCommitPath(ctx context.Context, bin string, clusters []cluster, w io.Writer) error {
	script := filepath.Join(os.TempDir(), fmt.Sprintf("pgsse-commit-%d.sql", os.Getpid()))
	if err := os.WriteFile(script, []byte(updateScript), 0o644); err != nil {
		return err
	}
	defer os.Remove(script)
	fmt.Fprintf(w, "commit path: pgbench -n -M prepared -c N -j min(N,2) -T %s -f <one-row UPDATE>, %d rounds, median tps\n", commitDuration, commitRounds)
	fmt.Fprintln(w, "| cluster | writers | bare trigger + pg_notify | pgsse | ratio |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	var statements []string
	for _, c := range clusters {
		s, err := commitCluster(ctx, bin, c, script, w)
		if err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		statements = append(statements, s)
	}
	fmt.Fprintf(w, "\none UPDATE of all %d rows, median of %d:\n", commitRows, commitRounds)
	fmt.Fprintln(w, "| cluster | without triggers | with pgsse's | ratio |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, s := range statements {
		fmt.Fprintln(w, s)
	}
	return nil
}

// commitCluster prints c's pgbench rows and returns its statement row.
func commitCluster(ctx context.Context, bin string, c cluster, script string, w io.Writer) (string, error) {
	bare, err := videosDatabase(ctx, c.url, "commit_bare", `
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
	plain, err := videosDatabase(ctx, c.url, "commit_plain", "")
	if err != nil {
		return "", err
	}
	withPgsse, err := videosDatabase(ctx, c.url, "commit_pgsse", "")
	if err != nil {
		return "", err
	}
	migrate := exec.CommandContext(ctx, bin, "migrate")
	migrate.Env = append(os.Environ(), "DATABASE_URL="+withPgsse)
	if out, err := migrate.CombinedOutput(); err != nil {
		return "", fmt.Errorf("pgsse migrate: %w\n%s", err, out)
	}

	// The bare design's listener: one LISTEN session, draining.
	l := pq.NewListener(bare, time.Second, time.Minute, nil)
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for range l.Notify { // closed by l.Close
		}
	}()
	defer func() { l.Close(); <-drained }()
	if err := l.Listen("videos"); err != nil {
		return "", err
	}

	plainDB, err := sql.Open("postgres", plain)
	if err != nil {
		return "", err
	}
	defer plainDB.Close()
	pgsseDB, err := sql.Open("postgres", withPgsse)
	if err != nil {
		return "", err
	}
	defer pgsseDB.Close()

	var row string
	_, err = withServer(ctx, bin, withPgsse, false, func(p proc) (result, error) {
		committed := 0
		for _, n := range commitWriters {
			tps := map[string][]float64{}
			for round := range commitRounds {
				order := []string{bare, withPgsse}
				if round%2 == 1 {
					order = []string{withPgsse, bare}
				}
				for _, db := range order {
					t, txs, err := pgbench(ctx, db, script, n)
					if err != nil {
						return result{}, err
					}
					tps[db] = append(tps[db], t)
					if db == withPgsse {
						committed += txs
					}
				}
			}
			b, q := median(tps[bare]), median(tps[withPgsse])
			fmt.Fprintf(w, "| %s | %d | %.0f | %.0f | **%.2f** |\n", c.name, n, b, q, q/b)
		}
		without, with, err := bigStatement(ctx, plainDB, pgsseDB, p.Admin)
		if err != nil {
			return result{}, err
		}
		row = fmt.Sprintf("| %s | %s | %s | **%.2f** |", c.name, without.Round(time.Millisecond), with.Round(time.Millisecond), float64(with)/float64(without))
		return result{}, checkAllSequenced(ctx, pgsseDB, committed+commitRounds*commitRows)
	})
	return row, err
}

// videosDatabase (re)creates database name on the cluster with a videos table
// of commitRows rows, runs extra in it, and returns its URL.
func videosDatabase(ctx context.Context, clusterURL, name, extra string) (string, error) {
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
			SELECT 'v' || i, now(), now(), '/raw/' || i, 'a' FROM generate_series(1, `+strconv.Itoa(commitRows)+`) i;`+extra)
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

// pgbench runs the script with n clients for commitDuration and returns the
// transactions per second and their number.
func pgbench(ctx context.Context, db, script string, n int) (float64, int, error) {
	out, err := exec.CommandContext(ctx, "pgbench", "-n", "-M", "prepared", "-c", strconv.Itoa(n), "-j", strconv.Itoa(min(n, 2)),
		"-T", strconv.Itoa(int(commitDuration.Seconds())), "-f", script, db).CombinedOutput()
	if err != nil {
		return 0, 0, fmt.Errorf("pgbench: %w\n%s", err, out)
	}
	tps, txs := tpsLine.FindSubmatch(out), txsLine.FindSubmatch(out)
	if tps == nil || txs == nil {
		return 0, 0, fmt.Errorf("pgbench printed no tps:\n%s", out)
	}
	t, _ := strconv.ParseFloat(string(tps[1]), 64)
	x, _ := strconv.Atoi(string(txs[1]))
	return t, x, nil
}

// bigStatement times one UPDATE of every row, with and without pgsse's
// triggers, alternating, and returns the medians. Each starts once the
// pgsse at admin has sequenced and read the previous one's events: the
// statement is timed, not pgsse's work beside it.
func bigStatement(ctx context.Context, plain, withPgsse *sql.DB, admin string) (without, with time.Duration, err error) {
	times := map[*sql.DB][]float64{}
	for range commitRounds {
		for _, db := range []*sql.DB{plain, withPgsse} {
			if err := waitRead(ctx, withPgsse, admin); err != nil {
				return 0, 0, err
			}
			start := time.Now()
			if _, err := db.ExecContext(ctx, `UPDATE videos SET processing_status = CASE WHEN processing_status = 'a' THEN 'b' ELSE 'a' END`); err != nil {
				return 0, 0, err
			}
			times[db] = append(times[db], float64(time.Since(start)))
		}
	}
	return time.Duration(median(times[plain])), time.Duration(median(times[withPgsse])), nil
}

// waitSequenced waits until pgsse has sequenced every event committed so far.
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

// checkAllSequenced waits for pgsse to have sequenced every event and checks
// the log holds exactly want of them: none lost, none sequenced twice.
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
