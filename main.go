// Command pgsse streams PostgreSQL changes to browsers and services as
// Server-Sent Events. See README.md.
//
//	pgsse [serve] [flags]   run the service (default)
//	pgsse migrate [flags]   apply the database migrations and exit
//	pgsse demo [flags]      simulate uploads and processing, for the demo page
//	pgsse healthcheck       exit 0 if the local pgsse is ready (for images with no shell)
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"

	"pgsse/db"
	"pgsse/demo"
	"pgsse/hub"
	"pgsse/listener"
	"pgsse/stream"
)

// version is stamped at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

var _ stream.History = (*db.Store)(nil)
var _ listener.Log = (*db.Store)(nil)
var _ listener.Sink = (*hub.Hub)(nil)
var _ demo.States = (*db.Store)(nil)
var _ demo.Writer = (*db.Store)(nil)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "pgsse:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch {
	case cmd == "version", cmd == "serve" && len(args) > 0 && (args[0] == "--version" || args[0] == "-version"):
		_, err := fmt.Fprintln(stdout, "pgsse", version)
		return err
	case cmd == "help":
		// pgsse help [command]: that command's help, as --help would print it.
		cmd = "serve"
		if len(args) > 0 {
			cmd = args[0]
		}
		if !knownCommand(cmd) {
			return fmt.Errorf("help: unknown command %q (pgsse help lists them)", cmd)
		}
		args = []string{"--help"}
	case !knownCommand(cmd):
		return fmt.Errorf("unknown command %q (pgsse help lists the commands)", cmd)
	}
	cfg, err := parseConfig(cmd, args)
	if h := (*helpRequested)(nil); errors.As(err, &h) {
		_, err := io.WriteString(stdout, h.text)
		return err
	}
	if err != nil {
		return err
	}
	log, err := newLogger(cfg, stdout)
	if err != nil {
		return err
	}
	for _, name := range cfg.UnknownVariables {
		log.Warn().Str("variable", name).Msg("unknown PGSSE_ variable ignored")
	}
	switch cmd {
	case "serve":
		return serve(ctx, cfg, log)
	case "migrate":
		return migrate(ctx, cfg, log)
	case "demo":
		return simulate(ctx, cfg, log)
	default: // healthcheck; knownCommand let nothing else through
		return healthcheck(cfg)
	}
}

func knownCommand(cmd string) bool {
	switch cmd {
	case "serve", "migrate", "demo", "healthcheck", "version", "help":
		return true
	}
	return false
}

func newLogger(cfg config, stdout io.Writer) (zerolog.Logger, error) {
	level, err := zerolog.ParseLevel(cfg.LogLevel)
	if err != nil || cfg.LogLevel == "" {
		return zerolog.Logger{}, fmt.Errorf("log level %q: use debug, info, warn or error", cfg.LogLevel)
	}
	out := stdout
	format := cfg.LogFormat
	if format == "" {
		format = "json"
		if f, ok := stdout.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			format = "console"
		}
	}
	switch format {
	case "json":
	case "console":
		out = zerolog.ConsoleWriter{Out: stdout, TimeFormat: time.TimeOnly}
	default:
		return zerolog.Logger{}, fmt.Errorf("log format %q: use json or console", format)
	}
	zerolog.TimeFieldFormat = time.RFC3339Nano
	return zerolog.New(out).Level(level).With().Timestamp().Logger(), nil
}

func migrate(ctx context.Context, cfg config, log zerolog.Logger) error {
	store, err := db.Open(cfg.DatabaseURL, 2, db.VideosSchema(cfg.VideosSchema))
	if err != nil {
		return err
	}
	defer store.Close()
	return store.Migrate(ctx, migrationLog{log})
}

// healthcheck asks the pgsse listening on this host's PGSSE_ADDR for /readyz.
func healthcheck(cfg config) error {
	host, port, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return fmt.Errorf("healthcheck: PGSSE_ADDR %q: %w", cfg.Addr, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	client := http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get("http://" + net.JoinHostPort(host, port) + "/readyz")
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: /readyz answered %d", resp.StatusCode)
	}
	return nil
}

// simulate runs the demo's processing simulator until a signal.
func simulate(ctx context.Context, cfg config, log zerolog.Logger) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	store, err := db.Open(cfg.DatabaseURL, 4, db.VideosSchema(cfg.VideosSchema))
	if err != nil {
		return err
	}
	defer store.Close()
	if err := migrateWithRetry(ctx, store, log, nil); err != nil || ctx.Err() != nil {
		return err
	}
	log.Info().Msg("demo simulator running")
	return demo.NewSimulator(store, log).Run(ctx)
}

// migrationLog turns dbmate's progress lines into log lines.
type migrationLog struct{ log zerolog.Logger }

func (m migrationLog) Write(p []byte) (int, error) {
	if line := strings.TrimSpace(string(p)); line != "" {
		m.log.Info().Str("dbmate", line).Msg("migration")
	}
	return len(p), nil
}

// migrateWithRetry applies migrations, waiting for the database if it is not up
// yet: the process stays alive (and not ready) meanwhile.
// migrateWithRetry applies the migrations until it succeeds or ctx ends;
// onFault (if not nil) hears of each failure's classification, and of nil once
// they are applied.
func migrateWithRetry(ctx context.Context, store *db.Store, log zerolog.Logger, onFault func(*db.Fault)) error {
	if onFault == nil {
		onFault = func(*db.Fault) {}
	}
	backoff := 250 * time.Millisecond
	for {
		err := store.Migrate(ctx, migrationLog{log})
		if err == nil {
			onFault(nil)
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		ev := log.Warn()
		f := db.Classify(err)
		if !f.Outage {
			ev = log.Error().Str("sqlstate", f.SQLState).Str("hint", f.Hint)
		}
		onFault(&f)
		ev.Err(err).Dur("retry_in", backoff).Msg("migrations not applied; retrying")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, db.MaxRetryBackoff)
	}
}
