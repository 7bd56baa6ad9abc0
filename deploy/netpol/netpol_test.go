package netpol_test

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/yaml"

	"pgsse/deploy/netpol"
)

func policy(t *testing.T, namespace, doc string) networkingv1.NetworkPolicy {
	t.Helper()
	var p networkingv1.NetworkPolicy
	if err := yaml.UnmarshalStrict([]byte(doc), &p); err != nil {
		t.Fatal(err)
	}
	p.Namespace = namespace
	return p
}

var (
	web = netpol.Endpoint{Namespace: "app", Labels: map[string]string{"role": "web"}, IP: netip.MustParseAddr("10.1.0.5"),
		Ports: map[string]int32{"http": 8080}}
	sameNS   = netpol.Endpoint{Namespace: "app", Labels: map[string]string{"role": "client"}, IP: netip.MustParseAddr("10.1.0.6")}
	otherNS  = netpol.Endpoint{Namespace: "other", Labels: map[string]string{"role": "client"}, IP: netip.MustParseAddr("10.2.0.6")}
	prodNS   = netpol.Endpoint{Namespace: "prod", NamespaceLabels: map[string]string{"env": "prod"}, Labels: map[string]string{"role": "client"}, IP: netip.MustParseAddr("10.3.0.6")}
	external = netpol.Endpoint{IP: netip.MustParseAddr("203.0.113.9")}
)

// The cases follow the examples and rules of the Kubernetes NetworkPolicy
// documentation (concepts/services-networking/network-policies).
func TestAllowed(t *testing.T) {
	denyIngress := `spec: {podSelector: {}, policyTypes: [Ingress]}`
	andPeer := `
spec:
  podSelector: {matchLabels: {role: web}}
  ingress:
    - from:
        - namespaceSelector: {matchLabels: {env: prod}}
          podSelector: {matchLabels: {role: client}}`
	orPeers := `
spec:
  podSelector: {matchLabels: {role: web}}
  ingress:
    - from:
        - namespaceSelector: {matchLabels: {env: prod}}
        - podSelector: {matchLabels: {role: client}}`
	ports := `
spec:
  podSelector: {matchLabels: {role: web}}
  ingress:
    - ports:
        - port: http
        - port: 9000
          endPort: 9010
        - port: 53
          protocol: UDP`
	block := `
spec:
  podSelector: {matchLabels: {role: web}}
  ingress:
    - from:
        - ipBlock: {cidr: 203.0.113.0/24, except: [203.0.113.128/25]}`
	egress := `
spec:
  podSelector: {matchLabels: {role: client}}
  egress:
    - to:
        - podSelector: {matchLabels: {role: web}}
      ports:
        - port: http`
	expressions := `
spec:
  podSelector: {matchExpressions: [{key: role, operator: In, values: [web]}]}
  ingress:
    - from:
        - namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [other]}]}`

	tests := []struct {
		name     string
		policies []networkingv1.NetworkPolicy
		from, to netpol.Endpoint
		port     int32
		protocol corev1.Protocol
		want     bool
	}{
		{"no policy: everything", nil, otherNS, web, 8080, corev1.ProtocolTCP, true},
		{"deny all ingress", []networkingv1.NetworkPolicy{policy(t, "app", denyIngress)}, sameNS, web, 8080, corev1.ProtocolTCP, false},
		{"a policy in another namespace does not apply", []networkingv1.NetworkPolicy{policy(t, "other", denyIngress)}, sameNS, web, 8080, corev1.ProtocolTCP, true},
		{"deny ingress leaves egress open", []networkingv1.NetworkPolicy{policy(t, "app", denyIngress)}, web, otherNS, 443, corev1.ProtocolTCP, true},
		{"AND peer: labelled pod in labelled namespace", []networkingv1.NetworkPolicy{policy(t, "app", andPeer)}, prodNS, web, 8080, corev1.ProtocolTCP, true},
		{"AND peer: labelled pod, other namespace", []networkingv1.NetworkPolicy{policy(t, "app", andPeer)}, sameNS, web, 8080, corev1.ProtocolTCP, false},
		{"OR peers: pod selector alone means the policy's namespace", []networkingv1.NetworkPolicy{policy(t, "app", orPeers)}, sameNS, web, 8080, corev1.ProtocolTCP, true},
		{"OR peers: labelled pod elsewhere", []networkingv1.NetworkPolicy{policy(t, "app", orPeers)}, otherNS, web, 8080, corev1.ProtocolTCP, false},
		{"OR peers: any pod of a labelled namespace", []networkingv1.NetworkPolicy{policy(t, "app", orPeers)}, prodNS, web, 8080, corev1.ProtocolTCP, true},
		{"named port resolved on the destination", []networkingv1.NetworkPolicy{policy(t, "app", ports)}, otherNS, web, 8080, corev1.ProtocolTCP, true},
		{"port not listed", []networkingv1.NetworkPolicy{policy(t, "app", ports)}, otherNS, web, 8081, corev1.ProtocolTCP, false},
		{"port range", []networkingv1.NetworkPolicy{policy(t, "app", ports)}, otherNS, web, 9010, corev1.ProtocolTCP, true},
		{"past the range", []networkingv1.NetworkPolicy{policy(t, "app", ports)}, otherNS, web, 9011, corev1.ProtocolTCP, false},
		{"protocol defaults to TCP", []networkingv1.NetworkPolicy{policy(t, "app", ports)}, otherNS, web, 8080, corev1.ProtocolUDP, false},
		{"UDP port", []networkingv1.NetworkPolicy{policy(t, "app", ports)}, otherNS, web, 53, corev1.ProtocolUDP, true},
		{"ipBlock", []networkingv1.NetworkPolicy{policy(t, "app", block)}, external, web, 8080, corev1.ProtocolTCP, true},
		{"ipBlock except", []networkingv1.NetworkPolicy{policy(t, "app", block)}, netpol.Endpoint{IP: netip.MustParseAddr("203.0.113.200")}, web, 8080, corev1.ProtocolTCP, false},
		{"ipBlock is not a pod selector", []networkingv1.NetworkPolicy{policy(t, "app", block)}, sameNS, web, 8080, corev1.ProtocolTCP, false},
		{"egress rules without policyTypes isolate egress", []networkingv1.NetworkPolicy{policy(t, "app", egress)}, sameNS, web, 8080, corev1.ProtocolTCP, true},
		{"egress: not listed", []networkingv1.NetworkPolicy{policy(t, "app", egress)}, sameNS, external, 443, corev1.ProtocolTCP, false},
		{"egress: both ends' policies apply", []networkingv1.NetworkPolicy{policy(t, "app", egress), policy(t, "app", denyIngress)}, sameNS, web, 8080, corev1.ProtocolTCP, false},
		{"matchExpressions and the automatic namespace name label", []networkingv1.NetworkPolicy{policy(t, "app", expressions)}, prodNS, web, 8080, corev1.ProtocolTCP, true},
		{"NotIn the namespace name", []networkingv1.NetworkPolicy{policy(t, "app", expressions)}, otherNS, web, 8080, corev1.ProtocolTCP, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := netpol.Allowed(tc.policies, tc.from, tc.to, tc.port, tc.protocol)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("allowed %v, want %v", got, tc.want)
			}
		})
	}
}

func TestAllowed_BadSelector(t *testing.T) {
	p := policy(t, "app", `spec: {podSelector: {matchExpressions: [{key: role, operator: Bogus}]}, policyTypes: [Ingress]}`)
	if _, err := netpol.Allowed([]networkingv1.NetworkPolicy{p}, sameNS, web, 8080, corev1.ProtocolTCP); err == nil {
		t.Error("an invalid selector was evaluated")
	}
}
