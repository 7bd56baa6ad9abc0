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
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"pgsse/auth"
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
var _ sse.Authorizer = (*auth.Verifier)(nil)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "pgsse:", err)
			os.Exit(1)
		}
	}
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

	authorizer, verifier, err := newAuthorizer(cfg, log)
	if err != nil {
		return err
	}

	hub := sse.NewHub(sse.HubConfig{QueueLen: cfg.Queue, Logger: log})
	lst := listener.New(listener.Config{URL: cfg.DatabaseURL, PollInterval: cfg.PollInterval, Logger: log}, logStore, hub)
	streams := sse.NewHandler(hub, store, sse.HandlerConfig{
		Authorizer: authorizer,
		Limits: sse.Limits{
			MaxStreams:   cfg.MaxStreams,
			PerIP:        cfg.MaxPerIP,
			PerSubject:   cfg.MaxPerSubject,
			ConnectRate:  cfg.ConnectRate,
			ConnectBurst: cfg.ConnectBurst,
		},
		MaxTopics:    cfg.MaxTopics,
		Heartbeat:    cfg.Heartbeat,
		WriteTimeout: cfg.WriteTimeout,
		Logger:       log,
	})

	var migrated, draining atomic.Bool
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = sse.HTTPErrorHandler
	// The client address, for limits and logs: the peer's, or from
	// X-Forwarded-For only when the peer is a trusted proxy.
	e.IPExtractor = echo.ExtractIPDirect()
	if len(cfg.TrustedProxies) > 0 {
		trust := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
		for _, n := range cfg.TrustedProxies {
			trust = append(trust, echo.TrustIPRange(n))
		}
		e.IPExtractor = echo.ExtractIPFromXFFHeader(trust...)
	}
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
		demo.Register(e, store, authorizer)
	}

	srv := &http.Server{
		Handler:           e,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
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
		if verifier != nil {
			g.Go(func() error { return verifier.Run(work) })
		}
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

// newAuthorizer returns the JWT verifier (as the authorizer and, for its key
// reloading, itself), or nothing at all with PGSSE_AUTH_MODE=none.
func newAuthorizer(cfg config, log zerolog.Logger) (sse.Authorizer, *auth.Verifier, error) {
	if cfg.AuthMode == "none" {
		log.Warn().Msg("PGSSE_AUTH_MODE=none: anyone who can reach pgsse can watch every video. Local development only; never in production")
		return nil, nil, nil
	}
	v, err := auth.New(auth.Config{
		Secret:      []byte(cfg.JWTSecret),
		KeyFile:     cfg.JWTKeyFile,
		Issuer:      cfg.JWTIssuer,
		Audience:    cfg.JWTAudience,
		TopicsClaim: cfg.JWTTopicsClaim,
		Cookie:      cfg.JWTCookie,
		AllowQuery:  cfg.AllowQuery,
		Leeway:      cfg.JWTLeeway,
		Logger:      log,
	})
	if err != nil {
		return nil, nil, err
	}
	return v, v, nil
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
