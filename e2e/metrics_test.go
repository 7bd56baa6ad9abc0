package e2e

import (
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"pgsse/internal/dbtest"
	"pgsse/internal/testbin"
)

// scrape reads url's /metrics into "name{label=value,…}" → value; histograms
// give name_count and name_sum.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(labels)
			key := name
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				out[key] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[key] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[name+"_count"] = float64(m.GetHistogram().GetSampleCount())
				out[name+"_sum"] = m.GetHistogram().GetSampleSum()
			}
		}
	}
	return out
}

// waitMetric waits until the scraped metric equals want.
func waitMetric(t *testing.T, url, key string, want float64) map[string]float64 {
	t.Helper()
	var m map[string]float64
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if m = scrape(t, url); m[key] == want {
			return m
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s = %v, want %v", key, m[key], want)
	return m
}

// TestMetrics: the counters and histograms move as events flow, with the
// right values.
func TestMetrics(t *testing.T) {
	url := dbtest.New(t)
	sqlDB := dbtest.Open(t, url)
	dbtest.InsertVideo(t, sqlDB, "a")
	sequence(t, sqlDB) // in the log before pgsse starts: read by no listener
	p := startPgsse(t, url)

	m := scrape(t, p.URL)
	for key, want := range map[string]float64{
		"pgsse_streams_open": 0, "pgsse_listener_connected": 1, "pgsse_database_up": 1,
		"pgsse_build_info{version=" + testbin.Version + "}": 1, "pgsse_events_read_total": 0,
	} {
		if m[key] != want {
			t.Errorf("at start %s = %v, want %v", key, m[key], want)
		}
	}

	one := open(t, p.URL+"/videos/a/events", "")
	all := open(t, p.URL+"/events?topic=videos/*", "")
	snap := one.next(t)
	for i := range 10 {
		dbtest.SetStatus(t, sqlDB, "a", []string{"processing", "pending"}[i%2])
	}
	one.take(t, 10)
	all.take(t, 10)

	m = waitMetric(t, p.URL, "pgsse_events_delivered_total", 21) // 1 snapshot + 2 × 10 live
	for key, want := range map[string]float64{
		"pgsse_streams_open":               2,
		"pgsse_streams_opened_total":       2,
		"pgsse_events_read_total":          10,
		"pgsse_delivery_lag_seconds_count": 20,
		"pgsse_listener_cursor":            11,
	} {
		if m[key] != want {
			t.Errorf("%s = %v, want %v", key, m[key], want)
		}
	}
	if lag := m["pgsse_delivery_lag_seconds_sum"] / 20; lag <= 0 || lag > 5 {
		t.Errorf("mean delivery lag %vs", lag)
	}
	if m["pgsse_event_log_oldest_age_seconds"] <= 0 {
		t.Errorf("oldest event age = %v, want > 0", m["pgsse_event_log_oldest_age_seconds"])
	}

	one.close()
	waitMetric(t, p.URL, "pgsse_streams_closed_total{reason=client_gone}", 1)
	resumed := open(t, p.URL+"/videos/a/events", snap.LastEventID)
	resumed.take(t, 10)
	m = waitMetric(t, p.URL, "pgsse_replays_total{source=memory}", 1)
	if m["pgsse_streams_open"] != 2 || m["pgsse_events_delivered_total"] != 31 {
		t.Errorf("after a resume: open %v, delivered %v; want 2 and 31", m["pgsse_streams_open"], m["pgsse_events_delivered_total"])
	}
}

// TestMetrics_AdminPort: with PGSSE_ADMIN_ADDR the metrics (and pprof) are on
// their own port, and not on the public one.
func TestMetrics_AdminPort(t *testing.T) {
	url := dbtest.New(t)
	adminPort := freePort(t)
	p := startPgsse(t, url, "PGSSE_ADMIN_ADDR=127.0.0.1:"+itoa(adminPort))
	admin := "http://127.0.0.1:" + itoa(adminPort)
	if m := scrape(t, admin); m["pgsse_listener_connected"] != 1 {
		t.Errorf("admin port metrics: %v", m["pgsse_listener_connected"])
	}
	for _, u := range []string{admin + "/readyz", admin + "/healthz", admin + "/debug/pprof/"} {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %d", u, resp.StatusCode)
		}
	}
	for _, path := range []string{"/metrics", "/debug/pprof/"} {
		resp, err := http.Get(p.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("public %s = %d, want 404", path, resp.StatusCode)
		}
	}
}
