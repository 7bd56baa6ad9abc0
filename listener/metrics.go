package listener

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics are the listener's Prometheus collectors.
type Metrics struct {
	EventsRead  prometheus.Counter
	Undecodable prometheus.Counter
	Reconnects  prometheus.Counter
	Connected   prometheus.Gauge
	Cursor      prometheus.Gauge
	LogResets   prometheus.Counter
	Receiving   prometheus.Gauge
	ReadErrors  *prometheus.CounterVec // by class: outage or fault
	Fault       *prometheus.GaugeVec   // 1, by SQLSTATE, while reads fail with a fault
}

// NewMetrics registers the listener's metrics with reg (nil: not exported).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	m := &Metrics{
		EventsRead: f.NewCounter(prometheus.CounterOpts{
			Name: "pgsse_events_read_total", Help: "Events read from the log and handed to the hub."}),
		Undecodable: f.NewCounter(prometheus.CounterOpts{
			Name: "pgsse_events_undecodable_total", Help: "Log rows skipped because they could not be decoded."}),
		Reconnects: f.NewCounter(prometheus.CounterOpts{
			Name: "pgsse_listener_reconnects_total", Help: "Times the LISTEN connection was re-established."}),
		Connected: f.NewGauge(prometheus.GaugeOpts{
			Name: "pgsse_listener_connected", Help: "1 while the LISTEN connection is up."}),
		Cursor: f.NewGauge(prometheus.GaugeOpts{
			Name: "pgsse_listener_cursor", Help: "Id of the last event read from the log."}),
		Receiving: f.NewGauge(prometheus.GaugeOpts{
			Name: "pgsse_listener_receiving", Help: "1 while the LISTEN connection's last probe notification came back."}),
		ReadErrors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgsse_log_read_errors_total", Help: "Failed attempts to sequence or read the log, by class: outage (waited out) or fault (the operator must fix it)."}, []string{"class"}),
		Fault: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pgsse_log_fault", Help: "1 while the log cannot be read because of a fault, labelled with its SQLSTATE; absent otherwise."}, []string{"sqlstate"}),
		LogResets: f.NewCounter(prometheus.CounterOpts{
			Name: "pgsse_log_resets_total", Help: "Times the event log was found replaced (restore, failover, recreated database) and every stream reset."}),
	}
	// Both classes from the start, at 0, so that rate() sees the first failure.
	m.ReadErrors.WithLabelValues(classOutage)
	m.ReadErrors.WithLabelValues(classFault)
	return m
}

// The classes of failed log reads: the label class.
const (
	classOutage = "outage" // waited out
	classFault  = "fault"  // the operator must act
)
