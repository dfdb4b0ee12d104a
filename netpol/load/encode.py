"""Model objects → Kubernetes dicts (the inverse of `netpol.load.decode`: decode(encode(x)) == x)."""

from __future__ import annotations

from typing import Any

from netpol.labels import LabelSelector
from netpol.model import (
    ClusterNetworkPolicy,
    ClusterPeer,
    ClusterProtocol,
    ClusterRule,
    ClusterState,
    DestinationNamedPort,
    IPBlock,
    Namespace,
    NamespacedPods,
    NetworkPolicy,
    Node,
    Peer,
    Pod,
    PolicyPort,
    Rule,
)


def encode_selector(selector: LabelSelector) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if selector.match_labels:
        out["matchLabels"] = dict(selector.match_labels)
    if selector.match_expressions:
        out["matchExpressions"] = [
            {"key": r.key, "operator": r.operator, **({"values": list(r.values)} if r.values else {})}
            for r in selector.match_expressions
        ]
    return out


def _ip_block(block: IPBlock) -> dict[str, Any]:
    out: dict[str, Any] = {"cidr": str(block.cidr)}
    if block.except_:
        out["except"] = [str(e) for e in block.except_]
    return out


def _peer(peer: Peer) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if peer.pod_selector is not None:
        out["podSelector"] = encode_selector(peer.pod_selector)
    if peer.namespace_selector is not None:
        out["namespaceSelector"] = encode_selector(peer.namespace_selector)
    if peer.ip_block is not None:
        out["ipBlock"] = _ip_block(peer.ip_block)
    return out


def _port(port: PolicyPort) -> dict[str, Any]:
    out: dict[str, Any] = {"protocol": port.protocol}
    if port.port is not None:
        out["port"] = port.port
    if port.end_port is not None:
        out["endPort"] = port.end_port
    return out


def _rule(rule: Rule, peers_field: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if rule.peers:
        out[peers_field] = [_peer(p) for p in rule.peers]
    if rule.ports:
        out["ports"] = [_port(p) for p in rule.ports]
    return out


def _metadata(name: str, namespace: str | None, labels: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name}
    if namespace is not None:
        out["namespace"] = namespace
    if labels:
        out["labels"] = dict(labels)
    return out


def encode_namespace(ns: Namespace) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": _metadata(ns.name, None, ns.labels)}


def encode_pod(pod: Pod) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "main", "ports": [
        {"containerPort": p.port, "protocol": p.protocol, **({"name": p.name} if p.name else {})}
        for p in pod.ports
    ]}]}
    if pod.node_name:
        spec["nodeName"] = pod.node_name
    if pod.host_network:
        spec["hostNetwork"] = True
    status: dict[str, Any] = {"phase": pod.phase}
    if pod.ips:
        status["podIP"] = str(pod.ips[0])
        status["podIPs"] = [{"ip": str(ip)} for ip in pod.ips]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": _metadata(pod.name, pod.namespace, pod.labels),
            "spec": spec, "status": status}


def encode_node(node: Node) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Node", "metadata": _metadata(node.name, None, node.labels),
        "spec": {"podCIDRs": [str(c) for c in node.pod_cidrs]} if node.pod_cidrs else {},
        "status": {"addresses": [{"type": "InternalIP", "address": str(a)} for a in node.addresses]},
    }


def encode_network_policy(policy: NetworkPolicy) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": encode_selector(policy.pod_selector),
                            "policyTypes": list(policy.policy_types)}
    if policy.ingress:
        spec["ingress"] = [_rule(r, "from") for r in policy.ingress]
    if policy.egress:
        spec["egress"] = [_rule(r, "to") for r in policy.egress]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": _metadata(policy.name, policy.namespace, None), "spec": spec}


def _namespaced_pods(pods: NamespacedPods) -> dict[str, Any]:
    return {"namespaceSelector": encode_selector(pods.namespace_selector),
            "podSelector": encode_selector(pods.pod_selector)}


def _cluster_peer(peer: ClusterPeer) -> dict[str, Any]:
    if peer.namespaces is not None:
        return {"namespaces": encode_selector(peer.namespaces)}
    if peer.pods is not None:
        return {"pods": _namespaced_pods(peer.pods)}
    if peer.networks:
        return {"networks": [str(n) for n in peer.networks]}
    if peer.nodes is not None:
        return {"nodes": encode_selector(peer.nodes)}
    return {}  # no field recognised: what a newer CRD's field looks like to us


def _cluster_protocol(entry: ClusterProtocol) -> dict[str, Any]:
    if isinstance(entry, DestinationNamedPort):
        return {"destinationNamedPort": entry.name}
    port: dict[str, Any] = ({"number": entry.first} if entry.first == entry.last
                            else {"range": {"start": entry.first, "end": entry.last}})
    return {entry.protocol.lower(): {"destinationPort": port}}


def _cluster_rule(rule: ClusterRule, peers_field: str) -> dict[str, Any]:
    out: dict[str, Any] = {"name": rule.name} if rule.name else {}
    out |= {"action": rule.action, peers_field: [_cluster_peer(p) for p in rule.peers]}
    if rule.protocols:
        out["protocols"] = [_cluster_protocol(p) for p in rule.protocols]
    return out


def encode_cluster_network_policy(policy: ClusterNetworkPolicy) -> dict[str, Any]:
    """As a v1beta1 ClusterNetworkPolicy (a converted v1alpha1 policy too: that is what it is now)."""
    subject = policy.subject
    spec: dict[str, Any] = {
        "tier": policy.tier, "priority": policy.priority,
        "subject": ({"namespaces": encode_selector(subject.namespaces)} if subject.namespaces is not None
                    else {"pods": _namespaced_pods(subject.pods)} if subject.pods is not None else {}),
    }
    if policy.ingress:
        spec["ingress"] = [_cluster_rule(r, "from") for r in policy.ingress]
    if policy.egress:
        spec["egress"] = [_cluster_rule(r, "to") for r in policy.egress]
    return {"apiVersion": "policy.networking.k8s.io/v1beta1", "kind": "ClusterNetworkPolicy",
            "metadata": _metadata(policy.name, None, None), "spec": spec}


def encode_state(state: ClusterState) -> dict[str, Any]:
    """The whole state as one `v1/List`."""
    items = [encode_namespace(n) for n in state.namespaces]
    items += [encode_node(n) for n in state.nodes]
    items += [encode_pod(p) for p in state.pods]
    items += [encode_network_policy(p) for p in state.policies]
    items += [encode_cluster_network_policy(p) for p in state.cluster_policies]
    return {"apiVersion": "v1", "kind": "List", "items": items}
