package db

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// LogStats describes the event log and the NOTIFY queue.
type LogStats struct {
	QueueUsage float64       // pg_notification_queue_usage(), 0 to 1
	Rows       float64       // estimated rows in pgsse.events
	OldestAge  time.Duration // age of the oldest event; 0 when empty
	// Unsequenced counts committed events waiting in pgsse.incoming for an id,
	// in its first maxUnsequencedCount rows (a statement's videos share a row).
	Unsequenced float64
}

// maxUnsequencedCount caps the rows of pgsse.incoming counted: a backlog that large
// already says no replica is sequencing, and counting more would scan it.
const maxUnsequencedCount = 100000

// LogStats reads the log's size and age and the notification queue's usage. The
// row count is the planner's estimate: an exact count would scan the table.
func (s *Store) LogStats(ctx context.Context) (LogStats, error) {
	var st LogStats
	var age float64
	err := s.db.QueryRowContext(ctx, `
		SELECT pg_notification_queue_usage(),
		       greatest((SELECT reltuples FROM pg_class WHERE oid = 'pgsse.events'::regclass), 0),
		       coalesce(extract(epoch FROM now() - (SELECT time FROM pgsse.events ORDER BY id LIMIT 1)), 0),
		       (SELECT coalesce(sum(coalesce(cardinality(video_ids), 1)), 0)
		        FROM (SELECT video_ids FROM pgsse.incoming LIMIT $1) AS waiting)`, maxUnsequencedCount).
		Scan(&st.QueueUsage, &st.Rows, &age, &st.Unsequenced)
	if err != nil {
		return LogStats{}, fmt.Errorf("read log stats: %w", err)
	}
	st.OldestAge = time.Duration(age * float64(time.Second))
	return st, nil
}

// Collector exports LogStats at each scrape. A scrape waits at most
// collectWait for the database: a stalled database must not stall /metrics,
// which is how the operator sees it. A query that takes longer keeps running
// (one at a time, ended by the pool's timeout) and serves a later scrape.
type Collector struct {
	store                              *Store
	queue, rows, age, unsequenced, ups *prometheus.Desc

	mu      sync.Mutex
	pending chan struct{} // closed when the query in flight ends; nil: none
	last    LogStats
	lastErr error
}

// collectWait is how long a scrape waits for the log's stats.
const collectWait = 500 * time.Millisecond

// NewCollector returns a collector reading s.
func NewCollector(s *Store) *Collector {
	return &Collector{
		store:       s,
		queue:       prometheus.NewDesc("pgsse_notification_queue_usage_ratio", "pg_notification_queue_usage(): fraction of the NOTIFY queue in use.", nil, nil),
		rows:        prometheus.NewDesc("pgsse_event_log_rows", "Rows in pgsse.events (planner estimate).", nil, nil),
		age:         prometheus.NewDesc("pgsse_event_log_oldest_age_seconds", "Age of the oldest event in pgsse.events.", nil, nil),
		unsequenced: prometheus.NewDesc("pgsse_events_unsequenced", "Committed events waiting in pgsse.incoming for an id (in its first 100 000 rows).", nil, nil),
		ups:         prometheus.NewDesc("pgsse_database_up", "1 if the last scrape could query the database.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.queue
	ch <- c.rows
	ch <- c.age
	ch <- c.unsequenced
	ch <- c.ups
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st, err := c.stats()
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.ups, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.ups, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(c.queue, prometheus.GaugeValue, st.QueueUsage)
	ch <- prometheus.MustNewConstMetric(c.rows, prometheus.GaugeValue, st.Rows)
	ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, st.OldestAge.Seconds())
	ch <- prometheus.MustNewConstMetric(c.unsequenced, prometheus.GaugeValue, st.Unsequenced)
}

// stats starts a query unless one is in flight and returns its result if it
// ends within collectWait, else an error.
func (c *Collector) stats() (LogStats, error) {
	c.mu.Lock()
	if c.pending == nil {
		done := make(chan struct{})
		c.pending = done
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			st, err := c.store.LogStats(ctx)
			c.mu.Lock()
			c.last, c.lastErr, c.pending = st, err, nil
			c.mu.Unlock()
			close(done)
		}()
	}
	pending := c.pending
	c.mu.Unlock()
	select {
	case <-pending:
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.last, c.lastErr
	case <-time.After(collectWait):
		return LogStats{}, errors.New("read log stats: the database did not answer in time")
	}
}
