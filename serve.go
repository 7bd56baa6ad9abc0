package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"pgsse/auth"
	"pgsse/db"
	"pgsse/demo"
	"pgsse/hub"
	"pgsse/listener"
	"pgsse/stream"
)

// readiness is what /readyz reports.
type readiness struct {
	migrated, draining atomic.Bool
	migrationFault     atomic.Pointer[db.Fault]
	listener           *listener.Listener
	streams            *stream.Handler
}

// fault is the first fault (not an outage) that keeps this replica from
// serving: the migrations', the log's, or the streams' database reads'.
func (r *readiness) fault() *db.Fault {
	for _, f := range []*db.Fault{r.migrationFault.Load(), r.listener.Failure(), r.streams.Failure()} {
		if f != nil && !f.Outage {
			return f
		}
	}
	return nil
}

func (r *readiness) waitingFor() []string {
	var waiting []string
	if !r.migrated.Load() {
		waiting = append(waiting, "migrations")
	}
	if r.listener.Failure() != nil {
		waiting = append(waiting, "log")
	}
	if r.streams.Failure() != nil {
		waiting = append(waiting, "streams")
	}
	if !r.listener.Connected() {
		waiting = append(waiting, "listener")
	} else if !r.listener.Receiving() {
		waiting = append(waiting, "listener_notifications")
	}
	if r.draining.Load() {
		waiting = append(waiting, "draining")
	}
	return waiting
}

func (r *readiness) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"status":"ok","version":%q}`+"\n", version)
}

func (r *readiness) readyz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if waiting := r.waitingFor(); len(waiting) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		answer := map[string]any{"status": "not ready", "waiting_for": waiting}
		if f := r.fault(); f != nil {
			answer["fault"] = map[string]string{"sqlstate": f.SQLState, "hint": f.Hint}
		}
		body, _ := json.Marshal(answer)
		fmt.Fprintf(w, "%s\n", body)
		return
	}
	fmt.Fprintln(w, `{"status":"ready"}`)
}

func serve(ctx context.Context, cfg config, log zerolog.Logger) error {
	ctx, stopSignals := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stopSignals()

	store, err := db.Open(cfg.DatabaseURL, db.DefaultMaxConns, db.VideosSchema(cfg.VideosSchema), db.Timeout(cfg.DBTimeout))
	if err != nil {
		return err
	}
	defer store.Close()
	// The listener reads on a pool of its own: clients waiting for snapshots and
	// replays must never delay the live events everyone is waiting for.
	logStore, err := db.Open(cfg.DatabaseURL, 2, db.VideosSchema(cfg.VideosSchema), db.Timeout(cfg.DBTimeout))
	if err != nil {
		return err
	}
	defer logStore.Close()
	authorizer, verifier, err := newAuthorizer(cfg, log)
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), db.NewCollector(store))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "pgsse_build_info", Help: "Always 1; the version label says which build runs.", ConstLabels: prometheus.Labels{"version": version},
	}, func() float64 { return 1 }))
	streamMetrics := stream.NewMetrics(reg)

	fanOut := hub.NewHub(hub.HubConfig{QueueLen: cfg.Queue, Logger: log, Evictions: streamMetrics.Evictions})
	lst := listener.New(listener.Config{URL: cfg.ListenDatabaseURL, PollInterval: cfg.PollInterval, Timeout: cfg.DBTimeout, Logger: log, Metrics: listener.NewMetrics(reg)}, logStore, fanOut)
	streams := stream.NewHandler(fanOut, store, stream.HandlerConfig{
		Authorizer: authorizer,
		Limits: stream.Limits{
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
		Metrics:      streamMetrics,
	})
	ready := &readiness{listener: lst, streams: streams}
	metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})

	e := newRouter(cfg, ready)
	streams.Register(e)
	registerAliases(e, streams)
	if cfg.Demo {
		demo.Register(e, store, authorizer)
	}
	servers := []*http.Server{newServer(e, cfg)}
	if cfg.AdminAddr == "" {
		e.GET("/metrics", echo.WrapHandler(metrics))
	} else {
		admin := http.NewServeMux()
		admin.Handle("GET /metrics", metrics)
		admin.HandleFunc("GET /healthz", ready.healthz)
		admin.HandleFunc("GET /readyz", ready.readyz)
		// Profiles, for the operator's port only: go tool pprof http://…:9090/debug/pprof/heap
		admin.HandleFunc("GET /debug/pprof/", pprof.Index)
		admin.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		admin.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		admin.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
		servers = append(servers, newServer(admin, cfg))
	}
	servers[0].RegisterOnShutdown(fanOut.Close) // Shutdown does not end streams by itself

	var listeners []net.Listener
	mainConns, adminConns := connectionLimits()
	for i, addr := range []string{cfg.Addr, cfg.AdminAddr}[:len(servers)] {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range listeners {
				l.Close()
			}
			return fmt.Errorf("listen on %s: %w", addr, err)
		}
		limit := mainConns
		if i > 0 {
			limit = adminConns
		}
		log.Info().Str("addr", ln.Addr().String()).Bool("admin", i > 0).Int("max_connections", limit).Str("version", version).Msg("pgsse serving")
		listeners = append(listeners, limitListener(ln, limit))
	}

	work, stopWork := context.WithCancel(context.Background())
	defer stopWork()
	g, work := errgroup.WithContext(work)
	for i, srv := range servers {
		g.Go(func() error {
			if err := srv.Serve(listeners[i]); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("serve http: %w", err)
			}
			return nil
		})
	}
	g.Go(func() error {
		if err := prepareSchema(work, cfg, store, log, ready); err != nil || work.Err() != nil {
			return err
		}
		ready.migrated.Store(true)
		g.Go(func() error { return store.RunPruner(work, cfg.Retention, time.Minute, log) })
		if verifier != nil {
			g.Go(func() error { return verifier.Run(work) })
		}
		return lst.Run(work)
	})

	select {
	case <-ctx.Done():
	case <-work.Done(): // a component failed
		for _, srv := range servers {
			_ = srv.Close()
		}
		fanOut.Close()
		closeCtx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		_ = streams.Close(closeCtx)
		return g.Wait()
	}

	// SIGTERM: fail readiness, close streams spread over the drain window, then
	// stop. A second signal cuts the drain short.
	log.Info().Dur("drain_ms", cfg.Drain).Int("streams", fanOut.Len()).Msg("draining")
	ready.draining.Store(true)
	stopSignals()
	again, stopAgain := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stopAgain()
	fanOut.Drain(again.Done(), cfg.Drain)

	// Whatever the database does, the process is gone shutdownGrace after the
	// drain: work stuck on a stalled connection is not waited for past it.
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	for _, srv := range servers {
		if err := srv.Shutdown(shutdownCtx); err != nil {
			_ = srv.Close()
		}
	}
	// Shutdown neither ends nor waits for the streams taken over from net/http.
	if err := streams.Close(shutdownCtx); err != nil {
		log.Warn().Err(err).Msg("stopped without waiting for every stream")
	}
	stopWork()
	stopped := make(chan error, 1)
	go func() { stopped <- g.Wait() }()
	select {
	case err = <-stopped:
		log.Info().Msg("stopped")
	case <-shutdownCtx.Done():
		log.Warn().Msg("stopped without waiting for database calls still in flight")
	}
	return err
}

// shutdownGrace is how long, after the drain, requests and database work have
// to end before the process exits anyway.
const shutdownGrace = 5 * time.Second

func newRouter(cfg config, ready *readiness) *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = stream.HTTPErrorHandler
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
	e.GET("/healthz", echo.WrapHandler(http.HandlerFunc(ready.healthz)))
	e.GET("/readyz", echo.WrapHandler(http.HandlerFunc(ready.readyz)))
	return e
}

// headerSlack is what net/http reads beyond MaxHeaderBytes before refusing a
// request head (its bufio slop): subtracted, so PGSSE_MAX_HEADER_BYTES is the
// limit itself.
const headerSlack = 4096

func newServer(h http.Handler, cfg config) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    max(cfg.MaxHeaderBytes-headerSlack, 1),
		// No WriteTimeout: streams set a deadline per write instead.
	}
}

// prepareSchema applies the migrations, or with PGSSE_MIGRATE=false waits until
// someone else (the migrate init container, an operator) has.
func prepareSchema(ctx context.Context, cfg config, store *db.Store, log zerolog.Logger, ready *readiness) error {
	// First on the pool with timeouts, retried while the database is away or
	// stalled: a restart, the common case, never waits on a connection without
	// deadlines.
	backoff := 100 * time.Millisecond
	for logged := false; ; {
		ok, err := store.MigrationsApplied(ctx)
		if ok {
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		if cfg.Migrate && (err == nil || !db.Classify(err).Outage) {
			break // behind (or never migrated): migrate
		}
		if !logged {
			if cfg.Migrate {
				log.Warn().Err(err).Msg("migrations not checked: database unavailable; retrying")
			} else {
				log.Info().AnErr("cause", err).Msg("waiting for migrations (PGSSE_MIGRATE=false): run pgsse migrate")
			}
			logged = true
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, db.MaxRetryBackoff)
	}
	// On a pool of its own, without the I/O timeout: a migration may rightly
	// wait long on the application's locks (CREATE TRIGGER on videos).
	migrations, err := db.Open(cfg.DatabaseURL, 2, db.VideosSchema(cfg.VideosSchema))
	if err != nil {
		return err
	}
	defer migrations.Close()
	return migrateWithRetry(ctx, migrations, log, ready.migrationFault.Store)
}

var _ stream.Authorizer = (*auth.Verifier)(nil)

// newAuthorizer returns the JWT verifier (as the authorizer and, for its key
// reloading, itself), or nothing at all with PGSSE_AUTH_MODE=none.
func newAuthorizer(cfg config, log zerolog.Logger) (stream.Authorizer, *auth.Verifier, error) {
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
