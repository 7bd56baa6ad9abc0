package deploy_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"pgsse/internal/dbtest"
	"pgsse/internal/testbin"
)

// alertRules parses deploy/monitoring's PrometheusRule with Prometheus's own
// rule parser, strictly (an unknown field is an error).
func alertRules(t *testing.T) []rulefmt.Rule {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, "deploy/monitoring/prometheusrule.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var obj struct {
		APIVersion string         `json:"apiVersion"`
		Kind       string         `json:"kind"`
		Metadata   map[string]any `json:"metadata"`
		Spec       any            `json:"spec"`
	}
	if err := yaml.UnmarshalStrict(raw, &obj); err != nil {
		t.Fatal(err)
	}
	if obj.APIVersion != "monitoring.coreos.com/v1" || obj.Kind != "PrometheusRule" {
		t.Fatalf("%s %s, want a monitoring.coreos.com/v1 PrometheusRule", obj.APIVersion, obj.Kind)
	}
	spec, err := yaml.Marshal(obj.Spec)
	if err != nil {
		t.Fatal(err)
	}
	groups, errs := rulefmt.Parse(spec, false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
	if len(errs) > 0 {
		t.Fatalf("the rules do not parse: %v", errs)
	}
	var rules []rulefmt.Rule
	for _, g := range groups.Groups {
		rules = append(rules, g.Rules...)
	}
	return rules
}

// TestMonitoring_Rules: every alert parses, has a severity, a summary, and a
// runbook annotation naming a section that docs/runbook.md has.
func TestMonitoring_Rules(t *testing.T) {
	runbook, err := os.ReadFile(filepath.Join(root, "docs/runbook.md"))
	if err != nil {
		t.Fatal(err)
	}
	rules := alertRules(t)
	if len(rules) == 0 {
		t.Fatal("no rules")
	}
	section := regexp.MustCompile(`^docs/runbook\.md, ([^(]+?)(?: \((.+)\))?$`)
	for _, r := range rules {
		if r.Alert == "" {
			t.Errorf("rule %q is not an alert", r.Record)
			continue
		}
		if !slices.Contains([]string{"critical", "warning", "info"}, r.Labels["severity"]) || r.Annotations["summary"] == "" {
			t.Errorf("%s: severity %q, summary %q", r.Alert, r.Labels["severity"], r.Annotations["summary"])
		}
		m := section.FindStringSubmatch(r.Annotations["runbook"])
		switch {
		case m == nil:
			t.Errorf("%s: runbook %q, want \"docs/runbook.md, <section>\"", r.Alert, r.Annotations["runbook"])
		case m[2] == "" && !bytes.Contains(runbook, []byte("**"+m[1]+"**")):
			t.Errorf("%s: docs/runbook.md has no situation **%s**", r.Alert, m[1])
		case m[2] != "" && (!bytes.Contains(runbook, []byte("## "+m[1])) || !bytes.Contains(runbook, []byte(m[2]))):
			t.Errorf("%s: docs/runbook.md has no %q under %q", r.Alert, m[2], m[1])
		}
	}
}

// dashboard is the part of a Grafana dashboard the test checks.
type dashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []struct{ Name, Type, Query string } `json:"list"`
	} `json:"templating"`
	Panels []struct {
		ID         int    `json:"id"`
		Title      string `json:"title"`
		Datasource struct{ Type, UID string }
		Targets    []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, "deploy/monitoring/dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestMonitoring_Dashboard: the dashboard imports anywhere (its Prometheus is
// a variable, not one cluster's datasource uid), and every query parses.
func TestMonitoring_Dashboard(t *testing.T) {
	d := readDashboard(t)
	if d.UID == "" || d.Title == "" || len(d.Panels) == 0 {
		t.Fatalf("uid %q, title %q, %d panels", d.UID, d.Title, len(d.Panels))
	}
	hasVar := slices.ContainsFunc(d.Templating.List, func(v struct{ Name, Type, Query string }) bool {
		return v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus"
	})
	if !hasVar {
		t.Error("no datasource variable of type prometheus")
	}
	ids := map[int]bool{}
	p := parser.NewParser(parser.Options{})
	for _, panel := range d.Panels {
		if ids[panel.ID] {
			t.Errorf("panel id %d twice", panel.ID)
		}
		ids[panel.ID] = true
		if panel.Datasource.UID != "${datasource}" || len(panel.Targets) == 0 {
			t.Errorf("panel %q: datasource %q, %d queries", panel.Title, panel.Datasource.UID, len(panel.Targets))
		}
		for _, q := range panel.Targets {
			if _, err := p.ParseExpr(q.Expr); err != nil || q.RefID == "" {
				t.Errorf("panel %q: query %s %q: %v", panel.Title, q.RefID, q.Expr, err)
			}
		}
	}
}

// queriedMetrics returns the metric names every alert and dashboard query
// selects.
func queriedMetrics(t *testing.T) map[string][]string {
	t.Helper()
	p := parser.NewParser(parser.Options{})
	used := map[string][]string{} // metric name → where
	add := func(where, expr string) {
		e, err := p.ParseExpr(expr)
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
			if vs, ok := n.(*parser.VectorSelector); ok {
				used[vs.Name] = append(used[vs.Name], where)
			}
			return nil
		})
	}
	for _, r := range alertRules(t) {
		add("alert "+r.Alert, r.Expr)
	}
	for _, panel := range readDashboard(t).Panels {
		for _, q := range panel.Targets {
			add("panel "+panel.Title, q.Expr)
		}
	}
	return used
}

// TestMonitoring_MetricsExported: every metric the alerts and the dashboard
// query is one a running pgsse exports, scraped from its /metrics, the
// labelled ones included (pgsse_log_fault only exists during a fault, so the
// test makes one).
func TestMonitoring_MetricsExported(t *testing.T) {
	dbURL := dbtest.New(t)
	base := startBinary(t, testbin.Build(t), []string{"DATABASE_URL=" + dbURL})
	sqlDB := dbtest.Open(t, dbURL)
	dbtest.Exec(t, sqlDB, `ALTER TABLE pgsse.events RENAME COLUMN topic TO topic_gone`)
	dbtest.Exec(t, sqlDB, `SELECT pgsse.publish('video.progress', 'videos/a', '{"video_id": "a", "percent": 1, "stage": "probe"}')`)

	exported := map[string]bool{}
	for deadline := time.Now().Add(30 * time.Second); !exported["pgsse_log_fault"]; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no pgsse_log_fault within 30 s of breaking the log")
		}
		exported = scrape(t, base+"/metrics")
	}
	used := queriedMetrics(t)
	for name, where := range used {
		if !exported[name] {
			t.Errorf("%s (queried by %s) is not exported", name, strings.Join(slices.Compact(where), ", "))
		}
	}
	if len(used) < 10 {
		t.Errorf("only %d metrics queried: the parser found no selectors?", len(used))
	}
}

// scrape returns the names of the series /metrics exposes, histograms'
// _bucket, _sum and _count included.
func scrape(t *testing.T, url string) map[string]bool {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	textParser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := textParser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for name, f := range families {
		if len(f.Metric) == 0 {
			continue
		}
		names[name] = true
		if f.GetType().String() == "HISTOGRAM" {
			names[name+"_bucket"], names[name+"_sum"], names[name+"_count"] = true, true, true
		}
	}
	return names
}

// TestMonitoring_Kustomize: the directory renders; its PodMonitor selects the
// server pods of deploy/k8s and scrapes a port they have; the dashboard's
// ConfigMap is found by Grafana's sidecar.
func TestMonitoring_Kustomize(t *testing.T) {
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), filepath.Join(root, "deploy/monitoring"))
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]bool{}
	for _, r := range res.Resources() {
		kinds[r.GetKind()] = true
		switch r.GetKind() {
		case "PodMonitor":
			raw, _ := r.AsYAML()
			var pm struct {
				Spec struct {
					Selector struct {
						MatchLabels map[string]string `json:"matchLabels"`
					} `json:"selector"`
					Endpoints []struct {
						Port string `json:"port"`
						Path string `json:"path"`
					} `json:"podMetricsEndpoints"`
				} `json:"spec"`
			}
			if err := yaml.Unmarshal(raw, &pm); err != nil {
				t.Fatal(err)
			}
			pod := one(t, "Deployments", render(t, "deploy/k8s").deployments).Spec.Template
			for k, v := range pm.Spec.Selector.MatchLabels {
				if pod.Labels[k] != v {
					t.Errorf("the PodMonitor wants %s=%s; the server pods have %q", k, v, pod.Labels[k])
				}
			}
			for _, ep := range pm.Spec.Endpoints {
				found := slices.ContainsFunc(pod.Spec.Containers[0].Ports, func(p corev1.ContainerPort) bool { return p.Name == ep.Port })
				if !found || ep.Path != "/metrics" {
					t.Errorf("the PodMonitor scrapes %s%s, which the pods do not serve", ep.Port, ep.Path)
				}
			}
		case "ConfigMap":
			if r.GetLabels()["grafana_dashboard"] != "1" || r.GetDataMap()["dashboard.json"] == "" {
				t.Errorf("ConfigMap %s: labels %v, keys %v", r.GetName(), r.GetLabels(), r.GetDataMap())
			}
		}
	}
	for _, k := range []string{"PrometheusRule", "PodMonitor", "ConfigMap"} {
		if !kinds[k] {
			t.Errorf("no %s rendered", k)
		}
	}
}
