package stream

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics are the hub's and the handler's Prometheus collectors.
type Metrics struct {
	StreamsOpen    prometheus.Gauge
	StreamsOpened  prometheus.Counter
	StreamsClosed  *prometheus.CounterVec // by reason: an EndReason
	StreamsRefused *prometheus.CounterVec // by status: 401, 403, 429, 503
	Delivered      prometheus.Counter     // events written to clients, snapshots and replays included
	Evictions      prometheus.Counter     // subscribers whose queue overflowed
	CatchUps       *prometheus.CounterVec // streams caught up in place after an overflow, by source
	Replays        *prometheus.CounterVec // resumes served by source: memory or database
	Lag            prometheus.Histogram   // event time to the write of a live event
}

// NewMetrics registers pgsse's stream metrics with reg; with a nil reg they are
// kept but not exported (tests, tools).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	m := &Metrics{
		StreamsOpen: f.NewGauge(prometheus.GaugeOpts{
			Name: "pgsse_streams_open", Help: "Streams open now."}),
		StreamsOpened: f.NewCounter(prometheus.CounterOpts{
			Name: "pgsse_streams_opened_total", Help: "Streams opened."}),
		StreamsClosed: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgsse_streams_closed_total", Help: "Streams closed, by reason."}, []string{"reason"}),
		StreamsRefused: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgsse_streams_refused_total", Help: "Stream requests refused for credentials or limits, by HTTP status."}, []string{"status"}),
		Delivered: f.NewCounter(prometheus.CounterOpts{
			Name: "pgsse_events_delivered_total", Help: "Events written to clients (live, replayed and snapshots)."}),
		Evictions: f.NewCounter(prometheus.CounterOpts{
			Name: "pgsse_subscriber_evictions_total", Help: "Subscribers whose queue overflowed (a burst, or a slow client); the stream catches up in place (pgsse_stream_catchups_total)."}),
		CatchUps: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgsse_stream_catchups_total", Help: "Streams caught up in place after their queue overflowed, by source: memory (recent history) or database."}, []string{"source"}),
		Replays: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgsse_replays_total", Help: "Resumes that replayed missed events, by source."}, []string{"source"}),
		Lag: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "pgsse_delivery_lag_seconds",
			Help:    "From an event's time (when its change was made) to its write to a client, for live events.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
	}
	// Every label value is exported from the start, at 0: a series born at its
	// first increment hides that increment from rate() and increase(), and
	// the alerts in deploy/monitoring would miss it.
	for _, r := range []EndReason{EndClientGone, EndOverflow, EndWriteFailed, EndDraining, EndShutdown, EndAuthExpired} {
		m.StreamsClosed.WithLabelValues(string(r))
	}
	for _, status := range []string{"401", "403", "429", "503"} {
		m.StreamsRefused.WithLabelValues(status)
	}
	for _, source := range []string{SourceMemory, SourceDatabase} {
		m.CatchUps.WithLabelValues(source)
		m.Replays.WithLabelValues(source)
	}
	return m
}

// Where a replay or a catch-up read the missed events: the label source.
const (
	SourceMemory   = "memory"   // the hub's recent history
	SourceDatabase = "database" // the log
)
