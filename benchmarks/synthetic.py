"""Deterministic synthetic clusters shaped like real ones, for benchmarks.

Namespaces of ~50 pods, deployments of a few replicas sharing labels, named container ports
whose numbers differ between deployments, nodes with pod CIDRs, kube-dns, and policies of the
kinds real clusters have: default-deny, DNS egress, same-namespace and cross-namespace allows
(matchLabels and matchExpressions), named ports, port ranges, ipBlocks with except.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

TIERS = ("web", "api", "db", "cache", "worker")
TEAMS = ("payments", "search", "identity", "catalog", "ads", "infra")


def _pod(ns: str, name: str, node: int, ip: str, labels: dict[str, str], ports: list[dict[str, Any]]) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"nodeName": f"node-{node}", "containers": [{"name": "main", "image": "app:1", "ports": ports}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}


def _policy(ns: str, name: str, spec: dict[str, Any]) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def generate(pods: int, policies: int, seed: int = 1) -> dict[str, list[dict]]:
    """{"namespaces": [...], "nodes": [...], "pods": [...], "policies": [...]} as manifests."""
    rng = random.Random(seed)
    n_ns = max(2, pods // 50)
    n_nodes = max(2, pods // 100)
    namespaces = [f"ns-{i}" for i in range(n_ns)]
    ns_objs = [{"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ns, "labels": {"team": TEAMS[i % len(TEAMS)],
                                                    "env": "prod" if i % 3 else "staging"}}}
               for i, ns in enumerate(namespaces)]
    ns_objs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}})
    nodes = [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": f"node-{n}"},
              "spec": {"podCIDR": f"10.{64 + n // 256}.{n % 256}.0/24"},
              "status": {"addresses": [{"type": "InternalIP", "address": f"172.16.{n // 256}.{n % 256 + 1}"}]}}
             for n in range(n_nodes)]
    next_host = [2] * n_nodes

    def address(node: int) -> str:
        host = next_host[node]
        next_host[node] += 1
        return f"10.{64 + node // 256}.{node % 256}.{host}" if host < 255 else _overflow(node, host)

    def _overflow(node: int, host: int) -> str:
        return f"10.{128 + node // 256}.{node % 256}.{host - 253}"

    pod_objs = [_pod("kube-system", f"coredns-{i}", i % n_nodes, address(i % n_nodes), {"k8s-app": "kube-dns"},
                     [{"name": "dns", "containerPort": 53, "protocol": "UDP"},
                      {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"}]) for i in range(2)]
    deployments: list[tuple[str, dict[str, str]]] = []
    while len(pod_objs) < pods:
        ns = namespaces[len(deployments) % n_ns]
        tier = rng.choice(TIERS)
        app = f"{tier}-{len(deployments)}"
        labels = {"app": app, "tier": tier, "version": rng.choice(("v1", "v2"))}
        deployments.append((ns, labels))
        ports = [{"name": "http", "containerPort": rng.choice((8080, 8000, 80)), "protocol": "TCP"},
                 {"name": "metrics", "containerPort": rng.choice((9090, 9100)), "protocol": "TCP"}]
        if tier == "db":
            ports.append({"name": "sql", "containerPort": 5432, "protocol": "TCP"})
        for r in range(rng.randint(2, 8)):
            if len(pod_objs) >= pods:
                break
            node = rng.randrange(n_nodes)
            pod_objs.append(_pod(ns, f"{app}-{r}", node, address(node), labels, ports))
    return {"namespaces": ns_objs, "nodes": nodes, "pods": pod_objs,
            "policies": _policies(rng, namespaces, deployments, policies)}


def _policies(rng: random.Random, namespaces: list[str], deployments: list[tuple[str, dict[str, str]]],
              count: int) -> list[dict]:
    out: list[dict] = []
    dns = {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                   "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
           "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
    for ns in namespaces[::2]:  # half the namespaces are default-deny with DNS allowed
        if len(out) + 2 > count:
            break
        out.append(_policy(ns, "default-deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}))
        out.append(_policy(ns, "allow-dns", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [dns]}))
    while len(out) < count:
        ns, labels = rng.choice(deployments)
        peer_ns, peer_labels = rng.choice(deployments)
        kind = rng.randrange(6)
        select = {"matchLabels": {"app": labels["app"]}}
        if kind == 0:  # same-namespace tier access on a named port
            rule = {"from": [{"podSelector": {"matchLabels": {"tier": peer_labels["tier"]}}}],
                    "ports": [{"port": "http"}]}
            spec = {"podSelector": select, "ingress": [rule]}
        elif kind == 1:  # cross-namespace by team, matchExpressions
            rule = {"from": [{"namespaceSelector": {"matchExpressions": [
                        {"key": "team", "operator": "In", "values": rng.sample(TEAMS, 2)}]},
                    "podSelector": {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]}}],
                    "ports": [{"port": "http"}, {"port": "metrics"}]}
            spec = {"podSelector": select, "ingress": [rule]}
        elif kind == 2:  # external clients, not the cluster's own ranges
            rule = {"from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "172.16.0.0/12"]}}],
                    "ports": [{"protocol": "TCP", "port": 443}, {"port": "http"}]}
            spec = {"podSelector": {"matchLabels": {"tier": "web"}}, "ingress": [rule]}
        elif kind == 3:  # egress to a specific app elsewhere, with a port range
            rule = {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": peer_ns}},
                            "podSelector": {"matchLabels": {"app": peer_labels["app"]}}}],
                    "ports": [{"protocol": "TCP", "port": 8000, "endPort": 8100}, {"port": "sql"}]}
            spec = {"podSelector": select, "policyTypes": ["Egress"], "egress": [rule, dns]}
        elif kind == 4:  # monitoring scrapes metrics from the prod namespaces
            rule = {"from": [{"namespaceSelector": {"matchLabels": {"env": "prod"}},
                              "podSelector": {"matchLabels": {"tier": "worker"}}}],
                    "ports": [{"port": "metrics"}]}
            spec = {"podSelector": {}, "ingress": [rule]}
        else:  # a whole-namespace allow from one peer app, any port
            rule = {"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": peer_labels["app"]}}}]}
            spec = {"podSelector": {"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, "ingress": [rule]}
        out.append(_policy(ns, f"allow-{len(out)}", spec))
    return out


def write(cluster: dict[str, list[dict]], directory: Path) -> None:
    """One JSON `List` file per kind (as `kubectl get -o json` would write them)."""
    directory.mkdir(parents=True, exist_ok=True)
    for kind, items in cluster.items():
        doc = {"apiVersion": "v1", "kind": "List", "items": items}
        (directory / f"{kind}.json").write_text(json.dumps(doc))
