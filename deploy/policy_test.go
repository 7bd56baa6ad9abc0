package deploy_test

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"pgsse/deploy/netpol"
)

// The namespace the manifests are applied to (`kubectl apply -n pgsse -k …`).
const appNamespace = "pgsse"

// Pods of the software around pgsse, with the labels their own manifests give
// them.
var (
	// kubernetes/ingress-nginx deploy/static/provider/cloud/deploy.yaml: the
	// controller Deployment's pod template.
	ingressNginx = netpol.Endpoint{Namespace: "ingress-nginx", IP: netip.MustParseAddr("10.20.0.7"), Labels: map[string]string{
		"app.kubernetes.io/name":      "ingress-nginx",
		"app.kubernetes.io/instance":  "ingress-nginx",
		"app.kubernetes.io/component": "controller",
		"app.kubernetes.io/part-of":   "ingress-nginx",
	}}
	// envoyproxy/gateway internal/infrastructure/kubernetes/proxy/testdata/
	// deployments/default.yaml: the Envoy proxy pods a Gateway gets.
	envoyGateway = netpol.Endpoint{Namespace: "envoy-gateway-system", IP: netip.MustParseAddr("10.21.0.7"), Labels: map[string]string{
		"app.kubernetes.io/name":                         "envoy",
		"app.kubernetes.io/component":                    "proxy",
		"app.kubernetes.io/managed-by":                   "envoy-gateway",
		"gateway.envoyproxy.io/owning-gateway-name":      "public",
		"gateway.envoyproxy.io/owning-gateway-namespace": "default",
	}}
	// kubernetes/kubernetes cluster/addons/dns/coredns/coredns.yaml.base (and
	// kubeadm's CoreDNS): kube-system, k8s-app: kube-dns.
	coreDNS = netpol.Endpoint{Namespace: "kube-system", IP: netip.MustParseAddr("10.96.0.10"), Labels: map[string]string{
		"k8s-app": "kube-dns",
	}}
	// prometheus-operator/kube-prometheus: namespace monitoring, the pods of
	// the Prometheus custom resource "k8s".
	prometheus = netpol.Endpoint{Namespace: "monitoring", IP: netip.MustParseAddr("10.22.0.7"), Labels: map[string]string{
		"app.kubernetes.io/name":     "prometheus",
		"app.kubernetes.io/instance": "k8s",
		"prometheus":                 "k8s",
	}}
	neighbour = netpol.Endpoint{Namespace: appNamespace, IP: netip.MustParseAddr("10.23.0.8"), Labels: map[string]string{"app": "other"}}
	database  = netpol.Endpoint{IP: netip.MustParseAddr("10.50.0.5")}
	internet  = netpol.Endpoint{IP: netip.MustParseAddr("203.0.113.9")}
)

// reach is one connection and whether the policies must allow it.
type reach struct {
	what     string
	from, to netpol.Endpoint
	port     string // a container port name, or a number
	protocol corev1.Protocol
	want     bool
}

// checkReach evaluates the rendered policies for the pgsse pods of o.
func checkReach(t *testing.T, o *objects, cases func(pgsse netpol.Endpoint) []reach) {
	t.Helper()
	d := one(t, "Deployments", o.deployments)
	pgsse := netpol.Endpoint{Namespace: appNamespace, IP: netip.MustParseAddr("10.23.0.5"), Labels: d.Spec.Template.Labels, Ports: map[string]int32{}}
	for _, p := range one(t, "containers", d.Spec.Template.Spec.Containers).Ports {
		pgsse.Ports[p.Name] = p.ContainerPort
	}
	var policies []networkingv1.NetworkPolicy
	for _, p := range o.policies {
		p := *p
		p.Namespace = appNamespace
		policies = append(policies, p)
	}
	for _, c := range cases(pgsse) {
		port, ok := c.to.Ports[c.port]
		if !ok {
			n, err := netip.ParseAddrPort("0.0.0.0:" + c.port)
			if err != nil {
				t.Fatalf("%s: port %q is neither named nor a number", c.what, c.port)
			}
			port = int32(n.Port())
		}
		got, err := netpol.Allowed(policies, c.from, c.to, port, c.protocol)
		if err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("%s (port %s/%s): allowed %v, want %v", c.what, c.port, c.protocol, got, c.want)
		}
	}
}

// egress is what every variant lets pgsse reach, and nothing else.
func egress(pgsse netpol.Endpoint) []reach {
	return []reach{
		{"pgsse resolves names with CoreDNS over UDP", pgsse, coreDNS, "53", corev1.ProtocolUDP, true},
		{"pgsse resolves names with CoreDNS over TCP", pgsse, coreDNS, "53", corev1.ProtocolTCP, true},
		{"pgsse reaches PostgreSQL", pgsse, database, "5432", corev1.ProtocolTCP, true},
		{"pgsse reaches nothing else on the database's network", pgsse, database, "443", corev1.ProtocolTCP, false},
		{"pgsse reaches nothing on the internet", pgsse, internet, "443", corev1.ProtocolTCP, false},
		{"Prometheus scrapes the admin port", prometheus, pgsse, "admin", corev1.ProtocolTCP, true},
		{"Prometheus does not open streams", prometheus, pgsse, "http", corev1.ProtocolTCP, false},
		{"a neighbouring pod opens no stream", neighbour, pgsse, "http", corev1.ProtocolTCP, false},
		{"a neighbouring pod does not scrape", neighbour, pgsse, "admin", corev1.ProtocolTCP, false},
	}
}

// TestNetworkPolicy_Base: with the base applied, the ingress controller reaches
// streams, Prometheus the metrics, pgsse its database and DNS — and no more.
func TestNetworkPolicy_Base(t *testing.T) {
	checkReach(t, render(t, "deploy/k8s"), func(pgsse netpol.Endpoint) []reach {
		return append(egress(pgsse),
			reach{"ingress-nginx opens streams", ingressNginx, pgsse, "http", corev1.ProtocolTCP, true},
			reach{"ingress-nginx does not reach the admin port", ingressNginx, pgsse, "admin", corev1.ProtocolTCP, false},
			reach{"a Gateway's proxies are not admitted without the overlay", envoyGateway, pgsse, "http", corev1.ProtocolTCP, false},
		)
	})
}

// TestNetworkPolicy_Gateway: the Gateway overlay admits the Gateway's proxies
// instead of ingress-nginx.
func TestNetworkPolicy_Gateway(t *testing.T) {
	checkReach(t, render(t, "deploy/gateway"), func(pgsse netpol.Endpoint) []reach {
		return append(egress(pgsse),
			reach{"the Gateway's Envoy proxies open streams", envoyGateway, pgsse, "http", corev1.ProtocolTCP, true},
			reach{"the Gateway's proxies do not reach the admin port", envoyGateway, pgsse, "admin", corev1.ProtocolTCP, false},
			reach{"ingress-nginx is no longer admitted", ingressNginx, pgsse, "http", corev1.ProtocolTCP, false},
		)
	})
}

// TestNetworkPolicy_MigrateInit: the component keeps the base's policy, whose
// egress lets the init container reach the database.
func TestNetworkPolicy_MigrateInit(t *testing.T) {
	checkReach(t, render(t, overlay(t, variant{"deploy/k8s", []string{"deploy/migrate-init"}}, nil, "")), func(pgsse netpol.Endpoint) []reach {
		return append(egress(pgsse),
			reach{"ingress-nginx opens streams", ingressNginx, pgsse, "http", corev1.ProtocolTCP, true},
		)
	})
}
