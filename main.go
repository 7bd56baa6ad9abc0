// Command pgsse streams PostgreSQL changes to browsers and services as
// Server-Sent Events. See README.md.
//
//	pgsse [serve] [flags]   run the service (default)
//	pgsse migrate [flags]   apply the database migrations and exit
//	pgsse demo [flags]      simulate uploads and processing, for the demo page
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"pgsse/db"
	"pgsse/demo"
	"pgsse/listener"
	"pgsse/sse"
)

var _ sse.History = (*db.Store)(nil)
var _ listener.Log = (*db.Store)(nil)
var _ listener.Sink = (*sse.Hub)(nil)
var _ demo.States = (*db.Store)(nil)
var _ demo.Writer = (*db.Store)(nil)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "pgsse:", err)
			os.Exit(1)
		}
	}
}

// config is every setting, from the environment, overridden by flags.
type config struct {
	DatabaseURL  string
	Addr         string
	Heartbeat    time.Duration
	Retention    time.Duration
	Drain        time.Duration
	MaxTopics    int
	Queue        int
	WriteTimeout time.Duration
	PollInterval time.Duration
	LogLevel     string
	LogFormat    string
	CORSOrigins  []string
	Demo         bool
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	cfg, err := parseConfig(cmd, args)
	if err != nil {
		return err
	}
	log, err := newLogger(cfg, stdout)
	if err != nil {
		return err
	}
	switch cmd {
	case "serve":
		return serve(ctx, cfg, log)
	case "migrate":
		return migrate(ctx, cfg, log)
	case "demo":
		return simulate(ctx, cfg, log)
	default:
		return fmt.Errorf("unknown command %q: use serve, migrate or demo", cmd)
	}
}

func parseConfig(cmd string, args []string) (config, error) {
	fs := flag.NewFlagSet("pgsse "+cmd, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: pgsse [serve|migrate|demo] [flags]\n\n"+
			"  serve    stream events (the default)\n"+
			"  migrate  apply the database migrations and exit\n"+
			"  demo     simulate uploads and processing workers, for the demo page\n\n"+
			"Every flag can also be set by the environment variable named after it.\n\n")
		fs.PrintDefaults()
	}
	var cfg config
	var errs []error
	str := func(p *string, name, env, def, usage string) {
		if v, ok := os.LookupEnv(env); ok {
			def = v
		}
		fs.StringVar(p, name, def, usage+" ($"+env+")")
	}
	dur := func(p *time.Duration, name, env string, def time.Duration, usage string) {
		if v, ok := os.LookupEnv(env); ok {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				errs = append(errs, fmt.Errorf("$%s=%q: want a positive duration such as 15s", env, v))
			}
			def = d
		}
		fs.DurationVar(p, name, def, usage+" ($"+env+")")
	}
	num := func(p *int, name, env string, def int, usage string) {
		if v, ok := os.LookupEnv(env); ok {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				errs = append(errs, fmt.Errorf("$%s=%q: want a positive integer", env, v))
			}
			def = n
		}
		fs.IntVar(p, name, def, usage+" ($"+env+")")
	}
	str(&cfg.DatabaseURL, "database-url", "DATABASE_URL", "", "PostgreSQL URL, e.g. postgres://user@host/db?sslmode=disable")
	str(&cfg.Addr, "addr", "PGSSE_ADDR", ":8080", "HTTP listen address")
	dur(&cfg.Heartbeat, "heartbeat", "PGSSE_HEARTBEAT", 15*time.Second, "idle time before a heartbeat comment; keep it under the proxies' 60s")
	dur(&cfg.Retention, "retention", "PGSSE_RETENTION", 24*time.Hour, "how long events stay in the log for resuming clients")
	dur(&cfg.Drain, "drain", "PGSSE_DRAIN", 10*time.Second, "on SIGTERM, window over which open streams are closed")
	num(&cfg.MaxTopics, "max-topics", "PGSSE_MAX_TOPICS", 100, "topics per stream")
	num(&cfg.Queue, "queue", "PGSSE_QUEUE", 1024, "events queued per stream before a slow client is dropped")
	dur(&cfg.WriteTimeout, "write-timeout", "PGSSE_WRITE_TIMEOUT", 10*time.Second, "a write slower than this drops the stream")
	dur(&cfg.PollInterval, "poll-interval", "PGSSE_POLL_INTERVAL", 2*time.Second, "safety poll of the log when no notification arrives")
	str(&cfg.LogLevel, "log-level", "PGSSE_LOG_LEVEL", "info", "debug, info, warn or error")
	str(&cfg.LogFormat, "log-format", "PGSSE_LOG_FORMAT", "", "json or console (default: console on a terminal, json otherwise)")
	var origins string
	str(&origins, "cors-origins", "PGSSE_CORS_ORIGINS", "", "comma-separated origins allowed to stream cross-origin with credentials, e.g. https://app.example.com")
	demoDefault := false
	if v, ok := os.LookupEnv("PGSSE_DEMO"); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("$PGSSE_DEMO=%q: want true or false", v))
		}
		demoDefault = b
	}
	fs.BoolVar(&cfg.Demo, "demo", demoDefault, "serve the live demo page at / ($PGSSE_DEMO)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	cors, err := parseOrigins(origins)
	if err != nil {
		errs = append(errs, err)
	}
	cfg.CORSOrigins = cors
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if cfg.DatabaseURL == "" {
		errs = append(errs, errors.New("no database: set DATABASE_URL or --database-url"))
	}
	return cfg, errors.Join(errs...)
}

// parseOrigins validates a comma-separated list of origins. A wildcard is
// refused: streams carry credentials, and "*" with credentials would let any
// site read them.
func parseOrigins(list string) ([]string, error) {
	var out []string
	for _, o := range strings.Split(list, ",") {
		o = strings.TrimSpace(o)
		if o == "" {
			continue
		}
		u, err := url.Parse(o)
		if o == "*" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return nil, fmt.Errorf("$PGSSE_CORS_ORIGINS: %q is not an origin such as https://app.example.com (no wildcard, path or query)", o)
		}
		out = append(out, u.Scheme+"://"+u.Host)
	}
	return out, nil
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
	store, err := db.Open(cfg.DatabaseURL, 2)
	if err != nil {
		return err
	}
	defer store.Close()
	return store.Migrate(ctx, migrationLog{log})
}

// simulate runs the demo's processing simulator until a signal.
func simulate(ctx context.Context, cfg config, log zerolog.Logger) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	store, err := db.Open(cfg.DatabaseURL, 4)
	if err != nil {
		return err
	}
	defer store.Close()
	if err := migrateWithRetry(ctx, store, log); err != nil || ctx.Err() != nil {
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

func serve(ctx context.Context, cfg config, log zerolog.Logger) error {
	ctx, stopSignals := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stopSignals()

	store, err := db.Open(cfg.DatabaseURL, db.DefaultMaxConns)
	if err != nil {
		return err
	}
	defer store.Close()
	// The listener reads on a pool of its own: clients waiting for snapshots and
	// replays must never delay the live events everyone is waiting for.
	logStore, err := db.Open(cfg.DatabaseURL, 2)
	if err != nil {
		return err
	}
	defer logStore.Close()

	hub := sse.NewHub(sse.HubConfig{QueueLen: cfg.Queue, Logger: log})
	lst := listener.New(listener.Config{URL: cfg.DatabaseURL, PollInterval: cfg.PollInterval, Logger: log}, logStore, hub)
	streams := sse.NewHandler(hub, store, sse.HandlerConfig{
		MaxTopics:    cfg.MaxTopics,
		Heartbeat:    cfg.Heartbeat,
		WriteTimeout: cfg.WriteTimeout,
		Logger:       log,
	})

	var migrated, draining atomic.Bool
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = sse.HTTPErrorHandler
	e.Use(middleware.Recover())
	if len(cfg.CORSOrigins) > 0 {
		e.Use(middleware.CORSWithConfig(middleware.CORSConfig{
			AllowOrigins:     cfg.CORSOrigins,
			AllowMethods:     []string{http.MethodGet, http.MethodHead},
			AllowHeaders:     []string{"Last-Event-ID", "Authorization", "Cache-Control"},
			AllowCredentials: true,
			MaxAge:           600,
		}))
	}
	e.GET("/healthz", func(c echo.Context) error {
		return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
	})
	e.GET("/readyz", func(c echo.Context) error {
		var waiting []string
		if !migrated.Load() {
			waiting = append(waiting, "migrations")
		}
		if !lst.Connected() {
			waiting = append(waiting, "listener")
		}
		if draining.Load() {
			waiting = append(waiting, "draining")
		}
		if len(waiting) > 0 {
			return c.JSON(http.StatusServiceUnavailable, map[string]any{"status": "not ready", "waiting_for": waiting})
		}
		return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
	})
	streams.Register(e)
	if cfg.Demo {
		demo.Register(e, store)
	}

	srv := &http.Server{
		Handler:           e,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		// No WriteTimeout: streams set a deadline per write instead.
	}
	srv.RegisterOnShutdown(hub.Close) // Shutdown does not end streams by itself
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	log.Info().Str("addr", ln.Addr().String()).Msg("pgsse serving")

	work, stopWork := context.WithCancel(context.Background())
	defer stopWork()
	g, work := errgroup.WithContext(work)
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve http: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := migrateWithRetry(work, store, log); err != nil {
			return err
		}
		migrated.Store(true)
		g.Go(func() error { return store.RunPruner(work, cfg.Retention, time.Minute, log) })
		return lst.Run(work)
	})

	select {
	case <-ctx.Done():
	case <-work.Done(): // a component failed
		_ = srv.Close()
		hub.Close()
		return g.Wait()
	}

	// SIGTERM: fail readiness, close streams spread over the drain window, then
	// stop. A second signal cuts the drain short.
	log.Info().Dur("drain_ms", cfg.Drain).Int("streams", hub.Len()).Msg("draining")
	draining.Store(true)
	stopSignals()
	again, stopAgain := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stopAgain()
	hub.Drain(again.Done(), cfg.Drain)

	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		_ = srv.Close()
	}
	stopWork()
	err = g.Wait()
	log.Info().Msg("stopped")
	return err
}

// migrateWithRetry applies migrations, waiting for the database if it is not up
// yet: the process stays alive (and not ready) meanwhile.
func migrateWithRetry(ctx context.Context, store *db.Store, log zerolog.Logger) error {
	backoff := 250 * time.Millisecond
	for {
		err := store.Migrate(ctx, migrationLog{log})
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		log.Warn().Err(err).Dur("retry_in", backoff).Msg("migrations not applied; retrying")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}
