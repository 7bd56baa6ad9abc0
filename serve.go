package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/signal"
	"syscall"
	"time"

	"github.com/labstack/echo/v4"
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

// service is pgsse serve: its parts, built once by newService, then run.
type service struct {
	cfg      config
	log      zerolog.Logger
	store    *db.Store      // streams' snapshots and replays, the pruner
	logStore *db.Store      // the listener's reads
	verifier *auth.Verifier // reloads its key file; nil without JWT
	fanOut   *hub.Hub
	listener *listener.Listener
	streams  *stream.Handler
	ready    *readiness
	servers  []*http.Server // the main address's, then the admin one's if any
}

// serve runs the service until SIGTERM or SIGINT, then drains it.
func serve(ctx context.Context, cfg config, log zerolog.Logger) error {
	ctx, stopSignals := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stopSignals()
	s, err := newService(cfg, log)
	if err != nil {
		return err
	}
	defer s.close()
	listeners, err := s.listen()
	if err != nil {
		return err
	}
	return s.run(ctx, stopSignals, listeners)
}

// newService builds every part and wires them; nothing runs yet.
func newService(cfg config, log zerolog.Logger) (_ *service, err error) {
	s := &service{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if s.store, err = db.Open(cfg.DatabaseURL, db.DefaultMaxConns, db.VideosSchema(cfg.VideosSchema), db.Timeout(cfg.DBTimeout)); err != nil {
		return nil, err
	}
	// The listener reads on a pool of its own: clients waiting for snapshots and
	// replays must never delay the live events everyone is waiting for.
	if s.logStore, err = db.Open(cfg.DatabaseURL, 2, db.VideosSchema(cfg.VideosSchema), db.Timeout(cfg.DBTimeout)); err != nil {
		return nil, err
	}
	authorizer, verifier, err := newAuthorizer(cfg, log)
	if err != nil {
		return nil, err
	}
	s.verifier = verifier

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), db.NewCollector(s.store))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "pgsse_build_info", Help: "Always 1; the version label says which build runs.", ConstLabels: prometheus.Labels{"version": version},
	}, func() float64 { return 1 }))
	streamMetrics := stream.NewMetrics(reg)

	s.fanOut = hub.NewHub(hub.HubConfig{QueueLen: cfg.Queue, Logger: log, Evictions: streamMetrics.Evictions})
	s.listener = listener.New(listener.Config{URL: cfg.ListenDatabaseURL, PollInterval: cfg.PollInterval, Timeout: cfg.DBTimeout, Logger: log, Metrics: listener.NewMetrics(reg)}, s.logStore, s.fanOut)
	s.streams = stream.NewHandler(s.fanOut, s.store, stream.HandlerConfig{
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
	s.ready = &readiness{listener: s.listener, streams: s.streams}
	metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})

	e := newRouter(cfg, s.ready)
	s.streams.Register(e)
	registerAliases(e, s.streams)
	if cfg.Demo {
		demo.Register(e, s.store, authorizer)
	}
	s.servers = []*http.Server{newServer(e, cfg)}
	if cfg.AdminAddr == "" {
		e.GET("/metrics", echo.WrapHandler(metrics))
	} else {
		s.servers = append(s.servers, newServer(newAdminMux(metrics, s.ready), cfg))
	}
	s.servers[0].RegisterOnShutdown(s.fanOut.Close) // Shutdown does not end streams by itself
	return s, nil
}

// close releases the pools.
func (s *service) close() {
	for _, st := range []*db.Store{s.store, s.logStore} {
		if st != nil {
			st.Close()
		}
	}
}

// listen opens the servers' sockets, each under its connection cap.
func (s *service) listen() ([]net.Listener, error) {
	var listeners []net.Listener
	mainConns, adminConns := connectionLimits()
	for i, addr := range []string{s.cfg.Addr, s.cfg.AdminAddr}[:len(s.servers)] {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range listeners {
				l.Close()
			}
			return nil, fmt.Errorf("listen on %s: %w", addr, err)
		}
		limit := mainConns
		if i > 0 {
			limit = adminConns
		}
		s.log.Info().Str("addr", ln.Addr().String()).Bool("admin", i > 0).Int("max_connections", limit).Str("version", version).Msg("pgsse serving")
		listeners = append(listeners, limitListener(ln, limit))
	}
	return listeners, nil
}

// run serves on listeners and runs the schema, the pruner, the key reloader
// and the listener until ctx ends (then drains) or one of them fails (then
// stops at once). stopSignals ends ctx's signal handling.
func (s *service) run(ctx context.Context, stopSignals func(), listeners []net.Listener) error {
	work, stopWork := context.WithCancel(context.Background())
	defer stopWork()
	g, work := errgroup.WithContext(work)
	for i, srv := range s.servers {
		g.Go(func() error {
			if err := srv.Serve(listeners[i]); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("serve http: %w", err)
			}
			return nil
		})
	}
	g.Go(func() error {
		if err := prepareSchema(work, s.cfg, s.store, s.log, s.ready); err != nil || work.Err() != nil {
			return err
		}
		s.ready.migrated.Store(true)
		g.Go(func() error { return s.store.RunPruner(work, s.cfg.Retention, time.Minute, s.log) })
		if s.verifier != nil {
			g.Go(func() error { return s.verifier.Run(work) })
		}
		return s.listener.Run(work)
	})

	select {
	case <-ctx.Done():
		return s.shutdown(g, stopSignals, stopWork)
	case <-work.Done(): // a component failed
		for _, srv := range s.servers {
			_ = srv.Close()
		}
		s.fanOut.Close()
		closeCtx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		_ = s.streams.Close(closeCtx)
		return g.Wait()
	}
}

// shutdownGrace is how long, after the drain, requests and database work have
// to end before the process exits anyway.
const shutdownGrace = 5 * time.Second

// shutdown fails readiness, closes streams spread over the drain window (a
// second signal cuts it short), then stops the servers and g's work.
func (s *service) shutdown(g *errgroup.Group, stopSignals, stopWork func()) error {
	// Listening again before the first registration ends: no moment when a
	// second signal would kill the process outright.
	again, stopAgain := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stopAgain()
	stopSignals()
	s.log.Info().Dur("drain_ms", s.cfg.Drain).Int("streams", s.fanOut.Len()).Msg("draining")
	s.ready.draining.Store(true)
	s.fanOut.Drain(again.Done(), s.cfg.Drain)

	// Whatever the database does, the process is gone shutdownGrace after the
	// drain: work stuck on a stalled connection is not waited for past it.
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	for _, srv := range s.servers {
		if err := srv.Shutdown(shutdownCtx); err != nil {
			_ = srv.Close()
		}
	}
	// Shutdown neither ends nor waits for the streams taken over from net/http.
	if err := s.streams.Close(shutdownCtx); err != nil {
		s.log.Warn().Err(err).Msg("stopped without waiting for every stream")
	}
	stopWork()
	stopped := make(chan error, 1)
	go func() { stopped <- g.Wait() }()
	select {
	case err := <-stopped:
		s.log.Info().Msg("stopped")
		return err
	case <-shutdownCtx.Done():
		s.log.Warn().Msg("stopped without waiting for database calls still in flight")
		return nil
	}
}
