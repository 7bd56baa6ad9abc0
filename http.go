package main

import (
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"pgsse/stream"
)

// newRouter is the main address's router: health, then what serve registers.
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

// newAdminMux serves the operator's port: metrics, health and profiles.
func newAdminMux(metrics http.Handler, ready *readiness) *http.ServeMux {
	admin := http.NewServeMux()
	admin.Handle("GET /metrics", metrics)
	admin.HandleFunc("GET /healthz", ready.healthz)
	admin.HandleFunc("GET /readyz", ready.readyz)
	// Profiles, for the operator's port only: go tool pprof http://…:9090/debug/pprof/heap
	admin.HandleFunc("GET /debug/pprof/", pprof.Index)
	admin.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	admin.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	admin.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return admin
}
