package deploy_test

import (
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"pgsse/internal/testbin"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// objects is one rendered kustomization, decoded.
type objects struct {
	deployments []*appsv1.Deployment
	services    []*corev1.Service
	configMaps  []*corev1.ConfigMap
	accounts    []*corev1.ServiceAccount
	pdbs        []*policyv1.PodDisruptionBudget
	hpas        []*autoscalingv2.HorizontalPodAutoscaler
	policies    []*networkingv1.NetworkPolicy
	ingresses   []*networkingv1.Ingress
	routes      []*gatewayv1.HTTPRoute
	jobs        []*batchv1.Job
}

// render builds dir (relative to the repository, or absolute) with the Go kustomize API and, where kubectl is installed,
// with `kubectl kustomize` too; both outputs must decode.
func render(t *testing.T, dir string) *objects {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(root, dir)
	}
	res, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize %s: %v", dir, err)
	}
	out, err := res.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	objs := decodeStrict(t, out)
	if kubectl, err := exec.LookPath("kubectl"); err == nil {
		viaKubectl, err := exec.Command(kubectl, "kustomize", dir).Output()
		if err != nil {
			t.Fatalf("kubectl kustomize %s: %v", dir, err)
		}
		decodeStrict(t, viaKubectl)
	}
	return objs
}

// decodeStrict decodes every document into its official type; unknown kinds
// and unknown fields are errors.
func decodeStrict(t *testing.T, docs []byte) *objects {
	t.Helper()
	o := &objects{}
	for _, doc := range bytes.Split(docs, []byte("\n---\n")) {
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var meta struct{ APIVersion, Kind string }
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatal(err)
		}
		var target any
		switch meta.APIVersion + " " + meta.Kind {
		case "apps/v1 Deployment":
			v := &appsv1.Deployment{}
			o.deployments, target = append(o.deployments, v), v
		case "v1 Service":
			v := &corev1.Service{}
			o.services, target = append(o.services, v), v
		case "v1 ConfigMap":
			v := &corev1.ConfigMap{}
			o.configMaps, target = append(o.configMaps, v), v
		case "v1 ServiceAccount":
			v := &corev1.ServiceAccount{}
			o.accounts, target = append(o.accounts, v), v
		case "policy/v1 PodDisruptionBudget":
			v := &policyv1.PodDisruptionBudget{}
			o.pdbs, target = append(o.pdbs, v), v
		case "autoscaling/v2 HorizontalPodAutoscaler":
			v := &autoscalingv2.HorizontalPodAutoscaler{}
			o.hpas, target = append(o.hpas, v), v
		case "networking.k8s.io/v1 NetworkPolicy":
			v := &networkingv1.NetworkPolicy{}
			o.policies, target = append(o.policies, v), v
		case "networking.k8s.io/v1 Ingress":
			v := &networkingv1.Ingress{}
			o.ingresses, target = append(o.ingresses, v), v
		case "gateway.networking.k8s.io/v1 HTTPRoute":
			v := &gatewayv1.HTTPRoute{}
			o.routes, target = append(o.routes, v), v
		case "batch/v1 Job":
			v := &batchv1.Job{}
			o.jobs, target = append(o.jobs, v), v
		default:
			t.Fatalf("unexpected object %s %s", meta.APIVersion, meta.Kind)
		}
		if err := yaml.UnmarshalStrict(doc, target); err != nil {
			t.Fatalf("%s: %v", meta.Kind, err)
		}
	}
	return o
}

func one[T any](t *testing.T, what string, items []T) T {
	t.Helper()
	if len(items) != 1 {
		t.Fatalf("%d %s, want 1", len(items), what)
	}
	return items[0]
}

func selects(t *testing.T, what string, sel map[string]string, podLabels map[string]string) {
	t.Helper()
	if len(sel) == 0 || !labels.SelectorFromSet(sel).Matches(labels.Set(podLabels)) {
		t.Errorf("%s selector %v does not select the pods %v", what, sel, podLabels)
	}
}

func portOf(t *testing.T, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	n, _ := strconv.Atoi(p)
	return int32(n)
}

// TestKustomize_Base: the base decodes strictly and its objects agree with each
// other, with the binary's configuration and with its router.
func TestKustomize_Base(t *testing.T) {
	o := render(t, "deploy/k8s")
	d := one(t, "Deployments", o.deployments)
	cm := one(t, "ConfigMaps", o.configMaps)
	svc := one(t, "Services", o.services)
	pod := d.Spec.Template
	podLabels := pod.Labels

	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Errorf("replicas %v, want at least 2", d.Spec.Replicas)
	}
	if ru := d.Spec.Strategy.RollingUpdate; ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
		t.Errorf("rolling update %+v, want maxUnavailable 0", ru)
	}
	selects(t, "Deployment", d.Spec.Selector.MatchLabels, podLabels)
	// Immutable once applied: a release that changes it cannot be applied over
	// the previous one.
	if got, want := fmt.Sprint(d.Spec.Selector.MatchLabels), "map[app.kubernetes.io/component:server app.kubernetes.io/name:pgsse app.kubernetes.io/part-of:pgsse]"; got != want {
		t.Errorf("Deployment selector %s, want %s as in every earlier release", got, want)
	}
	selects(t, "Service", svc.Spec.Selector, podLabels)
	selects(t, "PodDisruptionBudget", one(t, "PDBs", o.pdbs).Spec.Selector.MatchLabels, podLabels)
	np := one(t, "NetworkPolicies", o.policies)
	selects(t, "NetworkPolicy", np.Spec.PodSelector.MatchLabels, podLabels)
	hpa := one(t, "HPAs", o.hpas)
	if ref := hpa.Spec.ScaleTargetRef; ref.Kind != "Deployment" || ref.Name != d.Name || hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas < 2 {
		t.Errorf("HPA targets %+v (min %v), want the Deployment with at least 2", ref, hpa.Spec.MinReplicas)
	}

	c := one(t, "containers", pod.Spec.Containers)
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if got, want := ports["http"], portOf(t, cm.Data["PGSSE_ADDR"]); got != want {
		t.Errorf("containerPort http %d, PGSSE_ADDR port %d", got, want)
	}
	if got, want := ports["admin"], portOf(t, cm.Data["PGSSE_ADMIN_ADDR"]); got != want {
		t.Errorf("containerPort admin %d, PGSSE_ADMIN_ADDR port %d", got, want)
	}
	if len(c.EnvFrom) != 1 || c.EnvFrom[0].ConfigMapRef == nil || c.EnvFrom[0].ConfigMapRef.Name != cm.Name {
		t.Errorf("envFrom %+v, want the generated ConfigMap %s", c.EnvFrom, cm.Name)
	}
	secrets := map[string]bool{}
	for _, e := range c.Env {
		if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Name != "pgsse" {
			t.Errorf("env %s does not come from the pgsse Secret", e.Name)
			continue
		}
		secrets[e.ValueFrom.SecretKeyRef.Key] = true
	}
	if !secrets["DATABASE_URL"] || !secrets["PGSSE_JWT_SECRET"] {
		t.Errorf("secret keys %v, want DATABASE_URL and PGSSE_JWT_SECRET", secrets)
	}

	// Probes: on declared ports, at paths the binary serves.
	bin := testbin.Build(t)
	var env []string
	for k, v := range cm.Data {
		if k != "PGSSE_ADDR" && k != "PGSSE_ADMIN_ADDR" && k != "PGSSE_AUTH_MODE" && k != "PGSSE_TRUSTED_PROXIES" {
			env = append(env, k+"="+v)
		}
	}
	base := startBinary(t, bin, env)
	for name, p := range map[string]*corev1.Probe{"startup": c.StartupProbe, "readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s probe missing or not HTTP", name)
			continue
		}
		if _, ok := ports[p.HTTPGet.Port.String()]; !ok {
			t.Errorf("%s probe port %s is not a container port", name, p.HTTPGet.Port.String())
		}
		mustGet(t, base+p.HTTPGet.Path, 200)
	}
	if c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("readiness %s, liveness %s: liveness must not depend on the database", c.ReadinessProbe.HTTPGet.Path, c.LivenessProbe.HTTPGet.Path)
	}

	// Shutdown: the grace period covers the preStop sleep, the drain and slack.
	drain, err := time.ParseDuration(cm.Data["PGSSE_DRAIN"])
	if err != nil {
		t.Fatal(err)
	}
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		t.Fatal("no preStop sleep")
	}
	preStop := time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	grace := time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	if preStop < 2*time.Second || grace < preStop+drain+5*time.Second {
		t.Errorf("grace %v, preStop %v, drain %v: want grace ≥ preStop + drain + 5s", grace, preStop, drain)
	}

	// Hardening.
	psc, sc := pod.Spec.SecurityContext, c.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 ||
		psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod security context %+v", psc)
	}
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || fmt.Sprint(sc.Capabilities.Drop) != "[ALL]" {
		t.Errorf("container security context %+v", sc)
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := c.Resources.Requests[r]; !ok {
			t.Errorf("no %s request", r)
		}
		if _, ok := c.Resources.Limits[r]; !ok {
			t.Errorf("no %s limit", r)
		}
	}
	if pod.Spec.AutomountServiceAccountToken == nil || *pod.Spec.AutomountServiceAccountToken {
		t.Error("the service account token is mounted; pgsse does not use the API")
	}
	if pod.Spec.ServiceAccountName != one(t, "ServiceAccounts", o.accounts).Name {
		t.Errorf("service account %q not in the base", pod.Spec.ServiceAccountName)
	}

	// Service, Ingress and NetworkPolicy agree on ports.
	sp := one(t, "service ports", svc.Spec.Ports)
	if _, ok := ports[sp.TargetPort.String()]; !ok {
		t.Errorf("Service targetPort %s is not a container port", sp.TargetPort.String())
	}
	ing := one(t, "Ingresses", o.ingresses)
	backend := ing.Spec.Rules[0].HTTP.Paths[0].Backend.Service
	if backend.Name != svc.Name || backend.Port.Name != sp.Name {
		t.Errorf("Ingress backend %+v, want Service %s port %s", backend, svc.Name, sp.Name)
	}
	heartbeat, _ := time.ParseDuration(cm.Data["PGSSE_HEARTBEAT"])
	for _, a := range []string{"proxy-read-timeout", "proxy-send-timeout"} {
		secs, err := strconv.Atoi(ing.Annotations["nginx.ingress.kubernetes.io/"+a])
		if err != nil || time.Duration(secs)*time.Second <= 2*heartbeat {
			t.Errorf("Ingress %s %q: want well above the %v heartbeat", a, ing.Annotations["nginx.ingress.kubernetes.io/"+a], heartbeat)
		}
	}
	if ing.Annotations["nginx.ingress.kubernetes.io/proxy-buffering"] != "off" {
		t.Error("the Ingress buffers responses: events would be held back")
	}
	for _, r := range np.Spec.Ingress {
		for _, p := range r.Ports {
			if _, ok := ports[p.Port.String()]; !ok {
				t.Errorf("NetworkPolicy allows port %s, not a container port", p.Port.String())
			}
		}
	}
	var egressPorts []string
	for _, r := range np.Spec.Egress {
		for _, p := range r.Ports {
			egressPorts = append(egressPorts, p.Port.String())
		}
	}
	if e := strings.Join(egressPorts, ","); !strings.Contains(e, "5432") || !strings.Contains(e, "53") {
		t.Errorf("NetworkPolicy egress ports %s, want Postgres and DNS", e)
	}
}

func TestKustomize_Gateway(t *testing.T) {
	o := render(t, "deploy/gateway")
	if len(o.ingresses) != 0 {
		t.Error("the gateway overlay keeps the Ingress")
	}
	route := one(t, "HTTPRoutes", o.routes)
	svc := one(t, "Services", o.services)
	ref := route.Spec.Rules[0].BackendRefs[0]
	if string(ref.Name) != svc.Name || ref.Port == nil || int32(*ref.Port) != svc.Spec.Ports[0].Port {
		t.Errorf("HTTPRoute backend %s:%v, want Service %s:%d", ref.Name, ref.Port, svc.Name, svc.Spec.Ports[0].Port)
	}
}

// TestKustomize_MigrateInit: the component migrates in an init container of
// the server's own image, as non-root as the server, and serve then waits.
func TestKustomize_MigrateInit(t *testing.T) {
	for _, v := range variants {
		if len(v.components) == 0 {
			continue
		}
		t.Run(v.String(), func(t *testing.T) {
			o := render(t, overlay(t, v, nil, ""))
			pod := one(t, "Deployments", o.deployments).Spec.Template.Spec
			c := one(t, "init containers", pod.InitContainers)
			if fmt.Sprint(c.Args) != "[migrate]" || c.Image != pod.Containers[0].Image {
				t.Errorf("init container runs %s %v, want the server's image %s with migrate", c.Image, c.Args, pod.Containers[0].Image)
			}
			if v := one(t, "ConfigMaps", o.configMaps).Data["PGSSE_MIGRATE"]; v != "false" {
				t.Errorf("PGSSE_MIGRATE = %q, want false after an init container migrated", v)
			}
			if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
				t.Error("the init container may run as root or write its filesystem")
			}
			if len(o.jobs) != 0 {
				t.Error("a Job is back: its template is immutable, the next release could not be applied")
			}
		})
	}
}
