// Package netpol decides whether Kubernetes NetworkPolicies admit a
// connection, following the semantics of networking.k8s.io/v1 as the API
// reference states them, so that rendered manifests can be checked without a
// cluster: which peers may reach a pod's ports, and what the pod may reach.
//
// No maintained policy engine is importable as a library (cyclonus is archived
// and pulls a client-go that no longer builds; its successor, the
// network-policy-api project's policy-assistant, is not published as a
// module), hence this small one.
package netpol

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Endpoint is one side of a connection: a pod (Namespace set) or an address
// outside the cluster (only IP set).
type Endpoint struct {
	Namespace string
	// NamespaceLabels need not repeat kubernetes.io/metadata.name: the API
	// server sets it on every namespace, so it is added here.
	NamespaceLabels map[string]string
	Labels          map[string]string
	IP              netip.Addr
	// Ports are the pod's named container ports, which a policy may name.
	Ports map[string]int32
}

func (e Endpoint) isPod() bool { return e.Namespace != "" }

func (e Endpoint) namespaceLabels() labels.Set {
	set := labels.Set{"kubernetes.io/metadata.name": e.Namespace}
	for k, v := range e.NamespaceLabels {
		set[k] = v
	}
	return set
}

// Allowed reports whether policies admit a connection from one endpoint to
// another's port: the destination's ingress policies and the source's egress
// policies must both allow it. A policy belongs to its metadata.namespace.
func Allowed(policies []networkingv1.NetworkPolicy, from, to Endpoint, port int32, protocol corev1.Protocol) (bool, error) {
	in, err := admits(policies, networkingv1.PolicyTypeIngress, to, from, to, port, protocol)
	if err != nil || !in {
		return false, err
	}
	return admits(policies, networkingv1.PolicyTypeEgress, from, to, to, port, protocol)
}

// admits: is traffic between subject and peer allowed by subject's policies of
// the given direction? dest resolves named ports (always the destination).
func admits(policies []networkingv1.NetworkPolicy, dir networkingv1.PolicyType, subject, peer, dest Endpoint, port int32, protocol corev1.Protocol) (bool, error) {
	if !subject.isPod() {
		return true, nil // policies isolate pods only
	}
	isolated := false
	for i := range policies {
		p := &policies[i]
		if p.Namespace != subject.Namespace || !hasType(p, dir) {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(&p.Spec.PodSelector)
		if err != nil {
			return false, fmt.Errorf("policy %s: pod selector: %w", p.Name, err)
		}
		if !sel.Matches(labels.Set(subject.Labels)) {
			continue
		}
		isolated = true
		for _, r := range rules(p, dir) {
			ok, err := ruleAdmits(p.Namespace, r, peer, dest, port, protocol)
			if err != nil {
				return false, fmt.Errorf("policy %s: %w", p.Name, err)
			}
			if ok {
				return true, nil
			}
		}
	}
	return !isolated, nil
}

// hasType: an empty policyTypes means Ingress, plus Egress when the policy has
// egress rules.
func hasType(p *networkingv1.NetworkPolicy, dir networkingv1.PolicyType) bool {
	if len(p.Spec.PolicyTypes) == 0 {
		return dir == networkingv1.PolicyTypeIngress || len(p.Spec.Egress) > 0
	}
	for _, t := range p.Spec.PolicyTypes {
		if t == dir {
			return true
		}
	}
	return false
}

// rule is an ingress or egress rule: its peers and ports.
type rule struct {
	peers []networkingv1.NetworkPolicyPeer
	ports []networkingv1.NetworkPolicyPort
}

func rules(p *networkingv1.NetworkPolicy, dir networkingv1.PolicyType) []rule {
	var out []rule
	if dir == networkingv1.PolicyTypeIngress {
		for _, r := range p.Spec.Ingress {
			out = append(out, rule{r.From, r.Ports})
		}
		return out
	}
	for _, r := range p.Spec.Egress {
		out = append(out, rule{r.To, r.Ports})
	}
	return out
}

func ruleAdmits(policyNamespace string, r rule, peer, dest Endpoint, port int32, protocol corev1.Protocol) (bool, error) {
	if !portAdmits(r.ports, dest, port, protocol) {
		return false, nil
	}
	if len(r.peers) == 0 {
		return true, nil // no from/to: every peer
	}
	for _, p := range r.peers {
		ok, err := peerMatches(policyNamespace, p, peer)
		if err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

func peerMatches(policyNamespace string, p networkingv1.NetworkPolicyPeer, e Endpoint) (bool, error) {
	if p.IPBlock != nil {
		return inBlock(p.IPBlock, e.IP)
	}
	if !e.isPod() {
		return false, nil // selectors select pods only
	}
	if p.NamespaceSelector == nil {
		if e.Namespace != policyNamespace {
			return false, nil
		}
	} else {
		ns, err := metav1.LabelSelectorAsSelector(p.NamespaceSelector)
		if err != nil {
			return false, fmt.Errorf("namespace selector: %w", err)
		}
		if !ns.Matches(e.namespaceLabels()) {
			return false, nil
		}
	}
	if p.PodSelector == nil {
		return true, nil
	}
	pods, err := metav1.LabelSelectorAsSelector(p.PodSelector)
	if err != nil {
		return false, fmt.Errorf("pod selector: %w", err)
	}
	return pods.Matches(labels.Set(e.Labels)), nil
}

func inBlock(b *networkingv1.IPBlock, ip netip.Addr) (bool, error) {
	if !ip.IsValid() {
		return false, nil
	}
	cidr, err := netip.ParsePrefix(b.CIDR)
	if err != nil {
		return false, fmt.Errorf("ipBlock %q: %w", b.CIDR, err)
	}
	if !cidr.Contains(ip) {
		return false, nil
	}
	for _, ex := range b.Except {
		x, err := netip.ParsePrefix(ex)
		if err != nil {
			return false, fmt.Errorf("ipBlock except %q: %w", ex, err)
		}
		if x.Contains(ip) {
			return false, nil
		}
	}
	return true, nil
}

// portAdmits: no ports means every port; a named port is the destination
// pod's container port of that name; endPort makes a range.
func portAdmits(ports []networkingv1.NetworkPolicyPort, dest Endpoint, port int32, protocol corev1.Protocol) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		proto := corev1.ProtocolTCP
		if p.Protocol != nil {
			proto = *p.Protocol
		}
		if proto != protocol {
			continue
		}
		if p.Port == nil {
			return true
		}
		if p.Port.Type == intstr.String {
			if n, ok := dest.Ports[p.Port.String()]; ok && n == port {
				return true
			}
			continue
		}
		low, high := int32(p.Port.IntValue()), int32(p.Port.IntValue())
		if p.EndPort != nil {
			high = *p.EndPort
		}
		if port >= low && port <= high {
			return true
		}
	}
	return false
}
